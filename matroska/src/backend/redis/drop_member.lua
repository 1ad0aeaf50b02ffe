-- Shared by invalidate.lua and drain.lua (prepended by the client).
-- Drops the entry a reverse-index member names if it is still the generation
-- the member was registered for, and removes that generation from the
-- entry's other reverse indexes (all except `skip`; `skip_only` is
-- cmsgpack.pack({skip}), the dependency list of an entry with no other
-- index, which needs no unpacking). Returns 1 if dropped.
local function drop_member(member, skip, skip_only)
  local gen = string.sub(member, 1, 16)
  local key = string.sub(member, 17)
  local ok, e = pcall(redis.call, 'HMGET', key, 'g', 'd')
  if not ok or e[1] ~= gen then
    return 0
  end
  redis.call('UNLINK', key)
  if e[2] and e[2] ~= skip_only then
    local okd, deps = pcall(cmsgpack.unpack, e[2])
    if okd and type(deps) == 'table' then
      for _, dep in ipairs(deps) do
        if dep ~= skip then
          pcall(redis.call, 'ZREM', dep, member)
        end
      end
    end
  end
  return 1
end
