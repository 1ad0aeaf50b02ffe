#!lua flags=allow-oom
-- invalidate: writes tombstones, then drops the dependents of every
-- dependency, up to a budget of members; larger indexes are moved to their
-- drain key and emptied by drain.lua in chunks. Allowed under maxmemory: it
-- frees memory (a tombstone is a few bytes).
-- KEYS[3j-2] tombstone, KEYS[3j-1] reverse index, KEYS[3j] drain key of
-- dependency j.
-- ARGV[1] budget (members dropped inline)
-- Returns {dropped, {j...}, {j, i, ...}}: the entries dropped, the
-- dependencies j whose drain key must still be drained, and the
-- dependencies j skipped because KEYS[i] holds foreign data (nothing is
-- written for them; the others take full effect).
local n = #KEYS / 3
local cards = {}
local failed = {}
for j = 1, n do
  local c = redis.pcall('ZCARD', KEYS[3 * j - 1])
  local cx = 0
  if type(c) == 'table' then
    failed[#failed + 1] = j
    failed[#failed + 1] = 3 * j - 1
  else
    cx = redis.pcall('ZCARD', KEYS[3 * j])
    if type(cx) == 'table' then
      failed[#failed + 1] = j
      failed[#failed + 1] = 3 * j
    else
      cards[j] = {c, cx}
    end
  end
end

-- tombstones first, before anything is dropped; they have no expiry (the
-- sweep deletes them once older than the window)
local t = redis.call('TIME')
local now = t[1] .. string.format('%06d', tonumber(t[2]))
for j = 1, n do
  if cards[j] then
    redis.call('SET', KEYS[3 * j - 2], now)
  end
end

local budget = tonumber(ARGV[1])
local b = new_batch()
local drains = {}
for j = 1, n do
  if cards[j] then
    local index, drain = KEYS[3 * j - 1], KEYS[3 * j]
    local card, draining = cards[j][1], cards[j][2] > 0
    if card > budget then
      if draining then
        redis.call('ZUNIONSTORE', drain, 2, drain, index, 'AGGREGATE', 'MAX')
        redis.call('DEL', index)
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
      drains[#drains + 1] = j
    end
  end
end
flush(b)
return {b.dropped, drains, failed}
