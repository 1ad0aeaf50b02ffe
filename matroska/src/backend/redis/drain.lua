-- drain: drops one chunk of the dependents held by a drain key.
-- KEYS[1] drain key   ARGV[1] chunk size   ARGV[2] the reverse index it came
-- from (skipped when unregistering the dropped entries)
-- Returns {dropped, members left}.
local members = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #members == 0 then
  return {0, 0}
end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, #members - 1)
local dropped = 0
for _, m in ipairs(members) do
  dropped = dropped + drop_member(m, ARGV[2])
end
return {dropped, redis.call('ZCARD', KEYS[1])}
