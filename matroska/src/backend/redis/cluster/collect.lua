-- cluster invalidate, step 1 (one call per dependency slot): writes the
-- tombstones, then reads the live members of every index, up to a budget;
-- larger indexes are moved to their drain key and read by pop.lua in chunks.
-- Reads only: the members are removed once their entries are dropped, so a
-- call repeated by the client's retry after a lost reply (a failover)
-- returns them again.
-- KEYS[3j-2] tombstone, KEYS[3j-1] reverse index, KEYS[3j] drain key of
-- dependency j (one slot)
-- ARGV[1] tombstone window (ms)   ARGV[2] budget (members read inline)
-- Returns {-1, i} KEYS[i] holds foreign data (nothing written), or
-- {{{j, member...}...}, {j...}, now}: the live members read per dependency
-- j, the dependencies whose drain key must still be emptied, and the time
-- written into the tombstones (us).
local n = #KEYS / 3
local cards = {}
for j = 1, n do
  local ok, c = pcall(redis.call, 'ZCARD', KEYS[3 * j - 1])
  if not ok then
    return {-1, 3 * j - 1}
  end
  local okx, cx = pcall(redis.call, 'ZCARD', KEYS[3 * j])
  if not okx then
    return {-1, 3 * j}
  end
  cards[j] = {c, cx}
end

local t = redis.call('TIME')
local now = t[1] .. string.format('%06d', tonumber(t[2]))
local now_ms = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
for j = 1, n do
  redis.call('SET', KEYS[3 * j - 2], now, 'PX', ARGV[1])
end

local budget = tonumber(ARGV[2])
local taken = {}
local drains = {}
for j = 1, n do
  local index, drain = KEYS[3 * j - 1], KEYS[3 * j]
  local card, draining = cards[j][1], cards[j][2] > 0
  if card > budget then
    if draining then
      redis.call('ZUNIONSTORE', drain, 2, drain, index, 'AGGREGATE', 'MAX')
      redis.call('DEL', index)
      local last = redis.call('ZRANGE', drain, -1, -1, 'WITHSCORES')
      redis.call('PEXPIREAT', drain, last[2])
    else
      redis.call('RENAME', index, drain)
    end
    draining = true
  elseif card > 0 then
    -- expired members name expired entries: prune them
    redis.call('ZREMRANGEBYSCORE', index, '-inf', now_ms)
    local members = redis.call('ZRANGE', index, 0, -1)
    if #members > 0 then
      table.insert(members, 1, j)
      taken[#taken + 1] = members
    end
    budget = budget - card
  end
  if draining then
    drains[#drains + 1] = j
  end
end
return {taken, drains, tonumber(now)}
