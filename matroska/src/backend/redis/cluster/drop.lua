-- cluster invalidate, step 2 (one call per entry slot): drops every entry
-- that still has the generation its member named; where the entry does not
-- (yet) have it, marks that generation dead so that a put between its steps
-- cannot write it afterwards.
-- KEYS[2j-1] entry hash, KEYS[2j] its dead-generation markers (one slot)
-- ARGV[1] marker lifetime (ms)   ARGV[j+1] generation of member j
-- Returns {dropped, member, count, index..., member, count, index...}: for
-- each dropped entry with indexes, the indexes still naming it.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ms = string.format('%.0f', now_ms + tonumber(ARGV[1]))
local reply = {0}
for j = 1, #KEYS / 2 do
  local key, marks, gen = KEYS[2 * j - 1], KEYS[2 * j], ARGV[j + 1]
  local ok, e = pcall(redis.call, 'HMGET', key, 'g', 'd')
  if ok and e[1] == gen then
    redis.call('UNLINK', key)
    reply[1] = reply[1] + 1
    if e[2] then
      local okd, deps = pcall(cmsgpack.unpack, e[2])
      if okd and type(deps) == 'table' and #deps > 0 then
        reply[#reply + 1] = gen .. key
        reply[#reply + 1] = #deps
        for _, dep in ipairs(deps) do
          reply[#reply + 1] = dep
        end
      end
    end
  elseif ok then
    if pcall(redis.call, 'ZADD', marks, until_ms, gen) then
      redis.call('ZREMRANGEBYSCORE', marks, '-inf', string.format('%.0f', now_ms))
      local last = redis.call('ZRANGE', marks, -1, -1, 'WITHSCORES')
      redis.call('PEXPIREAT', marks, last[2])
    end
  end
end
return reply
