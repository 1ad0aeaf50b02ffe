#!lua flags=allow-cross-slot-keys
-- cluster put, step 1 (items, one call per node): registers the entry's
-- next generation under its dependencies and reports their tombstones.
-- Nothing is decided here: the client refuses the put if one of them may be
-- younger than its ticket. Declared without allow-oom: under maxmemory with
-- noeviction Redis refuses the call (OOM) before it runs.
-- common: member (generation .. entry key), ttl (ms)
-- item: reverse index, tombstone (of one dependency; one slot)
-- item reply: {1, tombstone (us) or -1}
local common, items = parse_items()
local now_us = server_time()
local now_ms = math.floor(now_us / 1000)
local cutoff = string.format('%.0f', now_ms)
local expires = string.format('%.0f', now_ms + tonumber(common[2]))
local reply = {now_us}
for k, item in ipairs(items) do
  local index, tomb = item[1], item[2]
  local stone = redis.pcall('GET', tomb)
  if is_error(stone) then
    reply[k + 1] = failed(stone, 2)
  else
    local c = redis.pcall('ZCARD', index)
    if is_error(c) then
      reply[k + 1] = failed(c, 1)
    else
      if c > 0 then
        redis.call('ZREMRANGEBYSCORE', index, '-inf', cutoff)
      end
      redis.call('ZADD', index, expires, common[1])
      -- an unreadable tombstone counts as written now, to be safe
      reply[k + 1] = {1, stone and (tonumber(stone) or now_us) or -1}
    end
  end
end
return reply
