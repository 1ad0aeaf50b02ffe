#!lua flags=allow-cross-slot-keys,allow-oom
-- cluster invalidate, drain step (items, one call per node): removes the
-- members of each drain key's previous chunk (their entries are dropped),
-- then reads the next live members, up to a budget across the call's drain
-- keys. Repeating a call is harmless. Allowed under maxmemory.
-- common: budget
-- item: drain key, members of the previous chunk...
-- item reply: {1, members left, live member...}
local common, items = parse_items()
local now = server_time()
local cutoff = string.format('%.0f', math.floor(now / 1000))
local budget = tonumber(common[1])
local reply = {now}
for k, item in ipairs(items) do
  local drain = item[1]
  local c = redis.pcall('ZCARD', drain)
  if is_error(c) then
    reply[k + 1] = failed(c, 1)
  else
    if c > 0 and #item > 1 then
      zrem_sliced(drain, item, 2, #item)
    end
    redis.call('ZREMRANGEBYSCORE', drain, '-inf', cutoff)
    local r = {1, 0}
    if budget > 0 then
      local live = redis.call('ZRANGE', drain, 0, budget - 1)
      for _, m in ipairs(live) do
        r[#r + 1] = m
      end
      budget = budget - #live
    end
    r[2] = redis.call('ZCARD', drain)
    reply[k + 1] = r
  end
end
return reply
