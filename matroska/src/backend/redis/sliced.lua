-- Shared by the scripts that send long key lists in one Redis call
-- (prepended by the client). Lua's unpack() fails past about 8,000 values
-- (its C stack), so no call gets more than SLICE of them at once.
local SLICE = 1000

-- MGET of list[i..j], slice by slice; absent keys read as false.
local function mget_sliced(list, i, j)
  local out = {}
  for a = i, j, SLICE do
    local part = redis.call('MGET', unpack(list, a, math.min(a + SLICE - 1, j)))
    for k = 1, #part do
      out[#out + 1] = part[k]
    end
  end
  return out
end

-- The sum of the integer replies of `cmd first list[i..j]` (first may be
-- nil: then the command takes only the list), slice by slice.
local function sum_sliced(cmd, first, list, i, j)
  local n = 0
  for a = i, j, SLICE do
    local b = math.min(a + SLICE - 1, j)
    if first then
      n = n + redis.call(cmd, first, unpack(list, a, b))
    else
      n = n + redis.call(cmd, unpack(list, a, b))
    end
  end
  return n
end
