-- drain: drops one chunk of the dependents held by a drain key.
-- KEYS[1] drain key   ARGV[1] chunk size   ARGV[2] the reverse index it came
-- from (skipped when unregistering the dropped entries)
-- Returns {dropped, members left}.
local popped = redis.call('ZPOPMIN', KEYS[1], ARGV[1])
if #popped == 0 then
  return {0, 0}
end
local only = cmsgpack.pack({ARGV[2]})
local dropped = 0
for i = 1, #popped, 2 do
  dropped = dropped + drop_member(popped[i], ARGV[2], only)
end
return {dropped, redis.call('ZCARD', KEYS[1])}
