#!lua flags=allow-cross-slot-keys,allow-oom
-- sweep (items): bounds the bookkeeping that has no expiry. For each key
-- (found by the client's SCAN; its kind is the letter after the hash tag):
--   i (reverse index), m (dead generations), x (drain key): removes the
--     members whose score (an expiry, ms) has passed; Redis deletes a sorted
--     set left empty. A drain key still holding live members is reported:
--     the client finishes that drain.
--   t (tombstone), c (clear marker): deleted once older than keep.
-- A sorted set left with an expiry by an earlier version of this backend
-- (which gave indexes one) loses it: eviction must not drop it.
-- common: keep (us)
-- item: key
-- item reply: {1, members removed, keys deleted, drain to finish (0/1)}
local common, items = parse_items()
local now = server_time()
local cutoff = string.format('%.0f', math.floor(now / 1000))
local oldest = now - tonumber(common[1])
local reply = {now}
for k, item in ipairs(items) do
  local key = item[1]
  local p = string.find(key, '}:', 1, true)
  local kind = p and string.sub(key, p + 2, p + 2)
  local r = {1, 0, 0, 0}
  if kind == 'i' or kind == 'm' or kind == 'x' then
    local n = redis.pcall('ZREMRANGEBYSCORE', key, '-inf', cutoff)
    if is_error(n) then
      if failed(n, 1)[1] ~= -1 then
        r = failed(n, 1)
      end
    else
      r[2] = n
      if redis.call('EXISTS', key) == 1 then
        redis.call('PERSIST', key)
        if kind == 'x' then
          r[4] = 1
        end
      end
    end
  elseif kind == 't' or kind == 'c' then
    local v = redis.pcall('GET', key)
    if is_error(v) then
      if failed(v, 1)[1] ~= -1 then
        r = failed(v, 1)
      end
    elseif v and tonumber(v) and tonumber(v) < oldest then
      r[3] = redis.call('DEL', key)
    end
  end
  reply[k + 1] = r
end
return reply
