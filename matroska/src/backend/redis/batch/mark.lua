#!lua flags=allow-cross-slot-keys,allow-oom
-- mark (items): writes the server time (us) into clear markers; puts with a
-- ticket from before it are refused.
-- item: marker key
-- item reply: {1}
local _, items = parse_items()
local now = server_time()
local text = string.format('%.0f', now)
local reply = {now}
for k, item in ipairs(items) do
  local r = redis.pcall('SET', item[1], text)
  if is_error(r) then
    reply[k + 1] = failed(r, 1)
  else
    reply[k + 1] = {1}
  end
end
return reply
