#!lua flags=allow-cross-slot-keys,allow-oom
-- clear (items): removes entries (found by the client's SCAN) and reports
-- where their generations are registered. A key of another type under an
-- entry's name is removed as well.
-- item: entry key
-- item reply: {1, existed} or {1, existed, member, index...}: the client
-- unregisters member from these indexes
local _, items = parse_items()
local reply = {server_time()}
for k, item in ipairs(items) do
  local key = item[1]
  local e = redis.pcall('HMGET', key, 'g', 'd')
  if is_error(e) and failed(e, 1)[1] ~= -1 then
    reply[k + 1] = failed(e, 1)
  else
    local r = {1, redis.call('UNLINK', key)}
    if not is_error(e) and e[1] and e[2] then
      local okd, deps = pcall(cmsgpack.unpack, e[2])
      if okd and type(deps) == 'table' then
        r[3] = e[1] .. key
        for _, dep in ipairs(deps) do
          r[#r + 1] = dep
        end
      end
    end
    reply[k + 1] = r
  end
end
return reply
