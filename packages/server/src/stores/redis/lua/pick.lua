-- Finds the oldest claimable jobs among the given types, at most `max`: the lowest ordinals in
-- their queues that are not waiting out a backoff at `now` (a merge of the queues, each read from
-- its head in slices). Returns {{id, record fields...}, ...}, oldest first, possibly empty.
-- KEYS: queue, delayed, for each type. ARGV: 1 now, 2 job key start, 3 candidate generation,
-- 4 epoch gap, 5 generation key, 6 max.
--! include lib/load.lua
local now = tonumber(ARGV[1])
local max = tonumber(ARGV[6])
local slices, at, from, delays = {}, {}, {}, {}
-- The next available entry of queue i (KEYS[i]), or nil when it has none. Its backoff (KEYS[i + 1])
-- is looked up only when some job of the type waits one: most picks find none waiting.
local function nextOf(i)
  if delays[i] == nil then delays[i] = redis.call('ZCARD', KEYS[i + 1]) > 0 end
  while true do
    local slice = slices[i]
    if slice == nil or at[i] > #slice then
      slice = redis.call('ZRANGE', KEYS[i], from[i] or 0, (from[i] or 0) + 49, 'WITHSCORES')
      from[i] = (from[i] or 0) + 50
      slices[i], at[i] = slice, 1
      if #slice == 0 then return nil end
    end
    local j = at[i]
    at[i] = j + 2
    local avail = delays[i] and redis.call('ZSCORE', KEYS[i + 1], slice[j])
    if not avail or tonumber(avail) <= now then return {slice[j], tonumber(slice[j + 1])} end
  end
end
local heads = {}
for i = 1, #KEYS, 2 do heads[i] = nextOf(i) or false end
local out = {}
local looked = 0
while #out < max and looked < max + 100 do
  local best
  for i = 1, #KEYS, 2 do
    if heads[i] and (not best or heads[i][2] < heads[best][2]) then best = i end
  end
  if not best then break end
  local id = heads[best][1]
  heads[best] = nextOf(best) or false
  looked = looked + 1
  local f = load(ARGV[2] .. id .. '}', ARGV[5], ARGV[3], tonumber(ARGV[4]), true)
  if f then
    out[#out + 1] = {id, f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12]}
  else
    -- The job is gone (deleted by hand, or evicted): drop the stale entry.
    redis.call('ZREM', KEYS[best], id)
    redis.call('ZREM', KEYS[best + 1], id)
  end
end
return out
