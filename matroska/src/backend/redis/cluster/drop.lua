#!lua flags=allow-cross-slot-keys,allow-oom
-- cluster invalidate, step 2 (items, one call per node): drops every entry
-- that still has the generation its member named; where the entry does not
-- (yet) have it, marks that generation dead so that a put between its steps
-- cannot write it afterwards. Allowed under maxmemory: it frees memory.
-- common: marker lifetime (ms)
-- item: entry hash, its dead-generation markers, generation (one slot)
-- item reply: {1, dropped (0/1), index...}: for a dropped entry, the
-- indexes still naming it
local common, items = parse_items()
local now = server_time()
local now_ms = math.floor(now / 1000)
local until_ms = string.format('%.0f', now_ms + tonumber(common[1]))
local cutoff = string.format('%.0f', now_ms)
local reply = {now}
for k, item in ipairs(items) do
  local key, marks, gen = item[1], item[2], item[3]
  local e = redis.pcall('HMGET', key, 'g', 'd')
  if is_error(e) then
    local f = failed(e, 1)
    -- an entry key of another type is not readable as an entry: nothing to
    -- drop
    reply[k + 1] = f[1] == -1 and {1, 0} or f
  elseif e[1] == gen then
    redis.call('UNLINK', key)
    local r = {1, 1}
    if e[2] then
      local okd, deps = pcall(cmsgpack.unpack, e[2])
      if okd and type(deps) == 'table' then
        for _, dep in ipairs(deps) do
          r[#r + 1] = dep
        end
      end
    end
    reply[k + 1] = r
  else
    local m = redis.pcall('ZCARD', marks)
    if is_error(m) then
      -- a marker set of another type cannot keep the put out: report it
      reply[k + 1] = failed(m, 2)
    else
      redis.call('ZADD', marks, until_ms, gen)
      -- no expiry (eviction must never drop it): expired marks are pruned
      -- here and by the sweep
      redis.call('ZREMRANGEBYSCORE', marks, '-inf', cutoff)
      reply[k + 1] = {1, 0}
    end
  end
end
return reply
