-- cluster invalidate, drain step (a dependency's slot): removes the members
-- of the previous chunk (their entries are dropped), then reads the next
-- chunk. Repeating a call is harmless.
-- KEYS[1] drain key   ARGV[1] chunk size   ARGV[2..] members to remove
-- Returns {{live member...}, members left}.
local t = redis.call('TIME')
local now_ms = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
for i = 2, #ARGV do
  redis.call('ZREM', KEYS[1], ARGV[i])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
local live = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
return {live, redis.call('ZCARD', KEYS[1])}
