#!lua
-- put: stores an entry and registers it under its dependencies, unless its
-- ticket is refused. Atomic: either nothing is written, or the entry and all
-- its registrations are. Declared without allow-oom: under maxmemory with
-- noeviction Redis refuses the call (OOM) before it runs.
-- KEYS[1]                 entry hash
-- KEYS[2 .. n+1]          reverse indexes of the dependencies
-- with a ticket only:
-- KEYS[n+2 .. 2n+1]       tombstones of the dependencies
-- KEYS[2n+2]              the clear marker
-- ARGV[1] value   ARGV[2] ttl (ms)   ARGV[3] ticket (us) or ''
-- ARGV[4] tombstone window (us)      ARGV[5] generation (16 hex digits)
-- ARGV[6] n
-- Returns {0} refused; {-1, i} KEYS[i] holds foreign data (nothing written);
-- {1} stored; {1, old_member, index...} stored, and the previous generation
-- of the entry is still registered under these indexes (not among KEYS):
-- the client unregisters old_member from them.
local n = tonumber(ARGV[6])
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now_us / 1000)

if ARGV[3] ~= '' then
  local ticket = tonumber(ARGV[3])
  -- a ticket is a lower bound of this server's clock at a miss: one from
  -- the future is not ours (or the clock stepped back), one older than the
  -- window may have missed a tombstone that is gone
  if ticket == nil or ticket > now_us or now_us - ticket > tonumber(ARGV[4]) then
    return {0}
  end
  local cleared = redis.pcall('GET', KEYS[2 * n + 2])
  if type(cleared) == 'table' then
    return {-1, 2 * n + 2}
  end
  if cleared and (tonumber(cleared) == nil or tonumber(cleared) >= ticket) then
    return {0}
  end
  -- MGET reads every tombstone in a few calls but answers nil for a key of
  -- another type; EXISTS counts those too, so a mismatch means foreign data
  -- (then one GET per key finds which). Fewer than 3: one GET each.
  local stones, foreign = nil, false
  if n >= 3 then
    stones = mget_sliced(KEYS, n + 2, 2 * n + 1)
    local found = 0
    for i = 1, n do
      if stones[i] then
        found = found + 1
      end
    end
    foreign = sum_sliced('EXISTS', nil, KEYS, n + 2, 2 * n + 1) ~= found
  end
  if stones == nil or foreign then
    stones = {}
    for i = n + 2, 2 * n + 1 do
      local stone = redis.pcall('GET', KEYS[i])
      if type(stone) == 'table' then
        return {-1, i}
      end
      stones[i - n - 1] = stone
    end
  end
  for i = 1, n do
    local stone = stones[i]
    if stone then
      local at = tonumber(stone)
      -- an unreadable tombstone refuses, to be safe
      if at == nil or at >= ticket then
        return {0}
      end
    end
  end
end

-- Reads and type checks come before the first write.
-- (redis.pcall answers a wrong-type error as a table with `err`)
local old = redis.pcall('HMGET', KEYS[1], 'g', 'd')
if old.err then
  return {-1, 1}
end
local cutoff = string.format('%.0f', now_ms)
for i = 2, n + 1 do
  -- pruning expired members doubles as the type check of the index
  if type(redis.pcall('ZREMRANGEBYSCORE', KEYS[i], '-inf', cutoff)) == 'table' then
    return {-1, i}
  end
end

local deps = {}
local covered = {}
for i = 2, n + 1 do
  deps[#deps + 1] = KEYS[i]
  covered[KEYS[i]] = true
end

local reply = {1}
if old[1] then
  local old_member = old[1] .. KEYS[1]
  local okd, old_deps = false, nil
  if old[2] then
    okd, old_deps = pcall(cmsgpack.unpack, old[2])
  end
  if okd and type(old_deps) == 'table' then
    for _, dep in ipairs(old_deps) do
      if covered[dep] then
        redis.call('ZREM', dep, old_member)
      else
        reply[#reply + 1] = dep
      end
    end
  end
  if #reply > 1 then
    table.insert(reply, 2, old_member)
  end
end

redis.call('HSET', KEYS[1], 'v', ARGV[1], 'g', ARGV[5], 'd', cmsgpack.pack(deps))
redis.call('PEXPIRE', KEYS[1], ARGV[2])

-- indexes have no expiry (eviction must never drop one): expired members
-- are pruned on the next touch or by the sweep
local expires = string.format('%.0f', now_ms + tonumber(ARGV[2]))
local member = ARGV[5] .. KEYS[1]
for i = 2, n + 1 do
  redis.call('ZADD', KEYS[i], expires, member)
end
return reply
