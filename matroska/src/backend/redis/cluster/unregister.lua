-- cluster unregister (one call per index slot): removes generations from
-- reverse indexes. Only those exact generations are removed, so a newer
-- registration of the same key is never touched.
-- KEYS[i] reverse index   ARGV[i] member (generation .. entry key) to remove
-- from it. Keys of another type are left alone.
for i = 1, #KEYS do
  pcall(redis.call, 'ZREM', KEYS[i], ARGV[i])
end
return 1
