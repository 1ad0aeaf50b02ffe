-- get: a hit, or a miss together with the server time that becomes its ticket.
-- KEYS[1] entry hash
-- Returns the value (bulk string) or the reply of TIME ({seconds, microseconds}).
-- A key of another type fails with WRONGTYPE, which the client reports as
-- foreign data.
local v = redis.call('HGET', KEYS[1], 'v')
if v then
  return v
end
return redis.call('TIME')
