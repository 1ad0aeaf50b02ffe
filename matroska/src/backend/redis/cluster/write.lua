#!lua
-- cluster put, step 2 (the entry's slot): writes the entry unless this
-- generation was marked dead by an invalidation that found its registration
-- before the entry existed, the slot was cleared after the ticket, or the
-- step comes too late. Declared without allow-oom: under maxmemory with
-- noeviction Redis refuses the call (OOM) before it runs.
-- KEYS[1] entry hash   KEYS[2] the entry's dead-generation markers (sorted
-- set)   KEYS[3] the clear marker of the slot
-- ARGV[1] value   ARGV[2] generation   ARGV[3] the entry's index keys (MessagePack)
-- ARGV[4] deadline (ms, this node's clock)   ARGV[5] expiry (ms, this node's clock)
-- ARGV[6] a lower bound of this node's clock at the ticket (us), or ''
-- Returns {0} refused; {-1, i} KEYS[i] holds foreign data (nothing written);
-- {1} stored; {1, old_member, index...} stored, and the previous generation
-- is still registered under these indexes: the client unregisters it.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now_ms > tonumber(ARGV[4]) then
  return {0}
end
local dead = redis.pcall('ZSCORE', KEYS[2], ARGV[2])
if type(dead) == 'table' then
  return {-1, 2}
end
if dead then
  return {0}
end
if ARGV[6] ~= '' then
  local cleared = redis.pcall('GET', KEYS[3])
  if type(cleared) == 'table' then
    return {-1, 3}
  end
  -- a clear that may have come after the ticket refuses
  if cleared and (tonumber(cleared) == nil or tonumber(cleared) > tonumber(ARGV[6])) then
    return {0}
  end
end
local old = redis.pcall('HMGET', KEYS[1], 'g', 'd')
if old.err then
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
