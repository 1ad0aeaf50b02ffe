#!lua flags=allow-cross-slot-keys,allow-oom
-- unregister (items): removes generations from reverse indexes. Only those
-- exact generations are removed, so a newer registration of the same key is
-- never touched; an index left empty is deleted by Redis.
-- item: index, member... (generation .. entry key)
-- item reply: {1}
local _, items = parse_items()
local reply = {server_time()}
for k, item in ipairs(items) do
  local c = redis.pcall('ZCARD', item[1])
  if is_error(c) then
    reply[k + 1] = failed(c, 1)
  else
    if c > 0 and #item > 1 then
      zrem_sliced(item[1], item, 2, #item)
    end
    reply[k + 1] = {1}
  end
end
return reply
