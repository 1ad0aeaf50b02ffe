-- Shared by the batched scripts (prepended by the client). Their work comes
-- as items, all in ARGV:
--   ARGV = c, common[1..c], then per item: a, arg[1..a]
-- and their reply is {now (us), reply of item 1, reply of item 2, ...},
-- where an item's reply is
--   {1, ...}       done (what follows is the script's own)
--   {-1, k}        arg[k] of the item holds foreign data; nothing written
--   {-2}           a key of the item is not served by this node (a Redis
--                  Cluster slot that moved): nothing written, the client
--                  sends the item again through its slot
--   {-3, message}  another error; nothing written for the item
-- On a Redis Cluster the client sends one call per node holding items of
-- many slots (the flag allow-cross-slot-keys; KEYS is empty), or, for an
-- item answered {-2}, one call per slot with KEYS[1] a key of that slot.
-- Every item reads (and so checks) its keys before writing any of them, so
-- that an item answered {-1}, {-2} or {-3} wrote nothing.

local function parse_items()
  local c = tonumber(ARGV[1])
  local common = {}
  for i = 1, c do
    common[i] = ARGV[1 + i]
  end
  local items = {}
  local p = c + 2
  while p <= #ARGV do
    local a = tonumber(ARGV[p])
    local item = {}
    for i = 1, a do
      item[i] = ARGV[p + i]
    end
    items[#items + 1] = item
    p = p + a + 1
  end
  return common, items
end

-- The reply of an item whose arg[k] answered the error reply `e`.
local function failed(e, k)
  local m = e.err or ''
  if string.find(m, 'WRONGTYPE', 1, true) then
    return {-1, k}
  end
  if string.find(m, 'non local', 1, true) or string.find(m, 'MOVED', 1, true) or string.find(m, 'ASK', 1, true) then
    return {-2}
  end
  return {-3, m}
end

local function is_error(r)
  return type(r) == 'table' and r.err ~= nil
end

local function server_time()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- Removes list[i..j] from a sorted set, at most 1000 at a time (Lua's
-- unpack() cannot take more than about 8,000 values).
local function zrem_sliced(key, list, i, j)
  for a = i, j, 1000 do
    redis.call('ZREM', key, unpack(list, a, math.min(a + 999, j)))
  end
end
