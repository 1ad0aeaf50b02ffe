#!lua flags=allow-oom
-- drain: drops up to a budget of the dependents held by drain keys, across
-- as many drain keys as the budget reaches, in order. Allowed under
-- maxmemory: it frees memory.
-- KEYS[j] drain key j   ARGV[1] budget   ARGV[j+1] the reverse index drain
-- key j came from (skipped when unregistering the dropped entries)
-- Returns {dropped, done, j...}: the entries dropped; the number of leading
-- drain keys now empty (the others were not reached or not finished); the
-- drain keys j among those that hold foreign data (left alone).
local t = redis.call('TIME')
local cutoff = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local budget = tonumber(ARGV[1])
local b = new_batch()
local done = 0
local foreign = {}
for j = 1, #KEYS do
  if budget <= 0 then
    break
  end
  local drain = KEYS[j]
  -- members that expired name expired entries: prune them first
  if type(redis.pcall('ZREMRANGEBYSCORE', drain, '-inf', cutoff)) == 'table' then
    foreign[#foreign + 1] = j
    done = j
  else
    local members = redis.call('ZRANGE', drain, 0, budget - 1)
    if #members > 0 then
      redis.call('ZREMRANGEBYRANK', drain, 0, #members - 1)
      local only = cmsgpack.pack({ARGV[j + 1]})
      for _, m in ipairs(members) do
        drop_member(b, m, ARGV[j + 1], only)
      end
      budget = budget - #members
    end
    if redis.call('EXISTS', drain) == 1 then
      break
    end
    done = j
  end
end
flush(b)
local reply = {b.dropped, done}
for _, j in ipairs(foreign) do
  reply[#reply + 1] = j
end
return reply
