-- cluster put, step 1 (one call per dependency slot): registers the entry's
-- next generation under the dependencies of one slot and reports their
-- tombstones. Nothing is decided here: the client refuses the put if one of
-- them may be younger than its ticket.
-- KEYS[2j-1] reverse index of dependency j, KEYS[2j] its tombstone
-- ARGV[1] member (generation .. entry key)   ARGV[2] ttl (ms)
-- Returns {-1, i} KEYS[i] holds foreign data (nothing written by this call),
-- or {now (us), tombstone of dependency j (us) or -1...}.
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now_us / 1000)
local n = #KEYS / 2
local reply = {now_us}
for j = 1, n do
  local ok, stone = pcall(redis.call, 'GET', KEYS[2 * j])
  if not ok then
    return {-1, 2 * j}
  end
  -- an unreadable tombstone counts as written now, to be safe
  reply[j + 1] = stone and (tonumber(stone) or now_us) or -1
  local okz = pcall(redis.call, 'ZCARD', KEYS[2 * j - 1])
  if not okz then
    return {-1, 2 * j - 1}
  end
end
local now = string.format('%.0f', now_ms)
local expires = string.format('%.0f', now_ms + tonumber(ARGV[2]))
for j = 1, n do
  local index = KEYS[2 * j - 1]
  redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
  redis.call('ZADD', index, expires, ARGV[1])
  local last = redis.call('ZRANGE', index, -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', index, last[2])
end
return reply
