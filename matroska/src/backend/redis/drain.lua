-- drain: drops one chunk of the dependents held by a drain key.
-- KEYS[1] drain key   ARGV[1] chunk size   ARGV[2] the reverse index it came
-- from (skipped when unregistering the dropped entries)
-- Returns {dropped, members left}.
local chunk = tonumber(ARGV[1])
local members = redis.call('ZRANGE', KEYS[1], 0, chunk - 1)
if #members == 0 then
  return {0, 0}
end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, chunk - 1)
local only = cmsgpack.pack({ARGV[2]})
local b = new_batch()
for _, m in ipairs(members) do
  drop_member(b, m, ARGV[2], only)
end
flush(b)
return {b.dropped, redis.call('ZCARD', KEYS[1])}
