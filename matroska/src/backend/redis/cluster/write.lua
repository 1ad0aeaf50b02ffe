-- cluster put, step 2 (the entry's slot): writes the entry unless this
-- generation was marked dead by an invalidation that found its registration
-- before the entry existed, or the step comes too late.
-- KEYS[1] entry hash   KEYS[2] the entry's dead-generation markers (sorted set)
-- ARGV[1] value   ARGV[2] generation   ARGV[3] the entry's index keys (MessagePack)
-- ARGV[4] deadline (ms, this node's clock)   ARGV[5] expiry (ms, this node's clock)
-- Returns {0} refused; {-1, i} KEYS[i] holds foreign data (nothing written);
-- {1} stored; {1, old_member, index...} stored, and the previous generation
-- is still registered under these indexes: the client unregisters it.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now_ms > tonumber(ARGV[4]) then
  return {0}
end
local okm, dead = pcall(redis.call, 'ZSCORE', KEYS[2], ARGV[2])
if not okm then
  return {-1, 2}
end
if dead then
  return {0}
end
local ok, old = pcall(redis.call, 'HMGET', KEYS[1], 'g', 'd')
if not ok then
  return {-1, 1}
end
local reply = {1}
if old[1] and old[1] ~= ARGV[2] and old[2] then
  local okd, old_deps = pcall(cmsgpack.unpack, old[2])
  if okd and type(old_deps) == 'table' and #old_deps > 0 then
    reply[2] = old[1] .. KEYS[1]
    for _, dep in ipairs(old_deps) do
      reply[#reply + 1] = dep
    end
  end
end
if tonumber(ARGV[5]) <= now_ms then
  -- the TTL ran out during the put: the new value is already expired
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'v', ARGV[1], 'g', ARGV[2], 'd', ARGV[3])
  redis.call('PEXPIREAT', KEYS[1], ARGV[5])
end
return reply
