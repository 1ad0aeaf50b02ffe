#!lua flags=allow-oom
-- delete: removes an entry and reports where its generation is registered.
-- Allowed under maxmemory: it frees memory.
-- KEYS[1] entry hash
-- Returns {existed} or {existed, member, index...}: the client unregisters
-- member from these indexes. A key of another type is removed as well.
local e = redis.pcall('HMGET', KEYS[1], 'g', 'd')
local existed = redis.call('DEL', KEYS[1])
if e.err or not e[1] or not e[2] then
  return {existed}
end
local okd, deps = pcall(cmsgpack.unpack, e[2])
if not okd or type(deps) ~= 'table' then
  return {existed}
end
local reply = {existed, e[1] .. KEYS[1]}
for _, dep in ipairs(deps) do
  reply[#reply + 1] = dep
end
return reply
