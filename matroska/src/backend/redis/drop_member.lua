-- Shared by invalidate.lua and drain.lua (prepended by the client).
-- Drops the entries that reverse-index members name, when they still have
-- the generation the member was registered for, and removes that generation
-- from the entries' other reverse indexes. The writes are batched: one
-- UNLINK per 256 entries and one ZREM per other index (and per 256
-- members: Lua's unpack() cannot take more than about 8,000 values), sent
-- by flush() at the end of the script. An entry reached through several
-- indexes is handled once. An index whose last member is removed is
-- deleted by Redis.
local BATCH = 256

local function new_batch()
  return {dropped = 0, unlink = {}, others = {}, seen = {}}
end

-- `skip` is the index the member comes from (not unregistered from);
-- `skip_only` is cmsgpack.pack({skip}), the dependency list of an entry with
-- no other index, which needs no unpacking.
local function drop_member(b, member, skip, skip_only)
  -- an entry reached through several of the invalidated indexes is handled
  -- once (its other indexes can be many: handling it per index would cost
  -- their product)
  if b.seen[member] then
    return
  end
  b.seen[member] = true
  local key = string.sub(member, 17)
  -- redis.pcall: a key of another type gives an error table, skipped
  local e = redis.pcall('HMGET', key, 'g', 'd')
  if e.err or e[1] ~= string.sub(member, 1, 16) then
    return
  end
  b.unlink[#b.unlink + 1] = key
  if e[2] and e[2] ~= skip_only then
    local okd, deps = pcall(cmsgpack.unpack, e[2])
    if okd and type(deps) == 'table' then
      for _, dep in ipairs(deps) do
        if dep ~= skip then
          local list = b.others[dep]
          if not list then
            list = {}
            b.others[dep] = list
          end
          list[#list + 1] = member
        end
      end
    end
  end
end

local function flush(b)
  local keys = b.unlink
  for i = 1, #keys, BATCH do
    b.dropped = b.dropped + redis.call('UNLINK', unpack(keys, i, math.min(i + BATCH - 1, #keys)))
  end
  for dep, members in pairs(b.others) do
    for i = 1, #members, BATCH do
      -- an index of another type is left alone
      pcall(redis.call, 'ZREM', dep, unpack(members, i, math.min(i + BATCH - 1, #members)))
    end
  end
  b.unlink = {}
  b.others = {}
end
