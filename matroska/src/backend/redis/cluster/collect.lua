#!lua flags=allow-cross-slot-keys,allow-oom
-- cluster invalidate, step 1 (items, one call per node): writes the
-- tombstones, then reads the live members of every index, up to a budget;
-- larger indexes are moved to their drain key and read by pop.lua in
-- chunks. Reads only: the members are removed once their entries are
-- dropped, so a call repeated by the client's retry after a lost reply (a
-- failover) returns them again. Allowed under maxmemory: it frees memory.
-- common: budget (members read inline by this call)
-- item: tombstone, reverse index, drain key (of one dependency; one slot)
-- item reply: {1, draining (0/1), member...}
-- The reply's first element (now) is also the time written into the
-- tombstones.
local common, items = parse_items()
local now = server_time()
local text = string.format('%.0f', now)
local cutoff = string.format('%.0f', math.floor(now / 1000))
local budget = tonumber(common[1])
local reply = {now}
for k, item in ipairs(items) do
  local tomb, index, drain = item[1], item[2], item[3]
  local c = redis.pcall('ZCARD', index)
  local cx, e
  if not is_error(c) then
    cx = redis.pcall('ZCARD', drain)
    if not is_error(cx) then
      -- (a tombstone of another type is overwritten)
      e = redis.pcall('EXISTS', tomb)
    end
  end
  if is_error(c) then
    reply[k + 1] = failed(c, 2)
  elseif is_error(cx) then
    reply[k + 1] = failed(cx, 3)
  elseif is_error(e) then
    reply[k + 1] = failed(e, 1)
  else
    redis.call('SET', tomb, text)
    local r = {1, cx > 0 and 1 or 0}
    if c > budget then
      if cx > 0 then
        redis.call('ZUNIONSTORE', drain, 2, drain, index, 'AGGREGATE', 'MAX')
        redis.call('DEL', index)
      else
        redis.call('RENAME', index, drain)
      end
      r[2] = 1
    elseif c > 0 then
      -- expired members name expired entries: prune them
      redis.call('ZREMRANGEBYSCORE', index, '-inf', cutoff)
      local members = redis.call('ZRANGE', index, 0, -1)
      for _, m in ipairs(members) do
        r[#r + 1] = m
      end
      budget = budget - c
    end
    reply[k + 1] = r
  end
end
return reply
