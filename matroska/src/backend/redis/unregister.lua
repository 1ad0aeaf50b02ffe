#!lua flags=allow-oom
-- unregister: removes one generation of an entry from reverse indexes (the
-- second step of a delete, or of a put that changed the dependencies).
-- KEYS[1..] reverse indexes   ARGV[1] member (generation .. entry key)
-- Only that exact generation is removed, so a newer registration of the same
-- key is never touched. An index left empty is deleted by Redis. Keys of
-- another type are left alone.
for i = 1, #KEYS do
  redis.pcall('ZREM', KEYS[i], ARGV[1])
end
return 1
