-- invalidate: writes tombstones, then drops the dependents of every
-- dependency, up to a budget of members; larger indexes are moved to their
-- drain key and emptied by drain.lua in chunks.
-- KEYS[3j-2] tombstone, KEYS[3j-1] reverse index, KEYS[3j] drain key of
-- dependency j.
-- ARGV[1] tombstone window (ms)   ARGV[2] budget (members dropped inline)
-- Returns {-1, i} KEYS[i] holds foreign data (nothing written), or
-- {dropped, j...}: the dependencies j whose drain key must still be drained.
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
for j = 1, n do
  redis.call('SET', KEYS[3 * j - 2], now, 'PX', ARGV[1])
end

local budget = tonumber(ARGV[2])
local b = new_batch()
local reply = {0}
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
    local members = redis.call('ZRANGE', index, 0, -1)
    redis.call('UNLINK', index)
    local only = cmsgpack.pack({index})
    for _, m in ipairs(members) do
      drop_member(b, m, index, only)
    end
    budget = budget - card
  end
  if draining then
    reply[#reply + 1] = j
  end
end
flush(b)
reply[1] = b.dropped
return reply
