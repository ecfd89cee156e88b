-- Finds the oldest claimable job among the given types: the lowest ordinal in their queues that
-- is not waiting out a backoff at `now`. Returns nil, or {id, record fields...}.
-- KEYS: queue, delayed, for each type. ARGV: 1 now, 2 job key start, 3 candidate generation, 4 epoch gap, 5 generation key.
--! include lib/load.lua
local now = tonumber(ARGV[1])
for round = 1, 10 do
  local bestId, bestOrd, bestQueue
  for i = 1, #KEYS, 2 do
    local start = 0
    local done = false
    while not done do
      local batch = redis.call('ZRANGE', KEYS[i], start, start + 49, 'WITHSCORES')
      if #batch == 0 then break end
      for j = 1, #batch, 2 do
        local ord = tonumber(batch[j + 1])
        if bestOrd and ord >= bestOrd then done = true break end
        local avail = redis.call('ZSCORE', KEYS[i + 1], batch[j])
        if not avail or tonumber(avail) <= now then
          bestId, bestOrd, bestQueue = batch[j], ord, i
          done = true
          break
        end
      end
      start = start + 50
    end
  end
  if not bestId then return nil end
  local f = load(ARGV[2] .. bestId .. '}', ARGV[5], ARGV[3], tonumber(ARGV[4]))
  if f then return {bestId, f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9]} end
  -- The job is gone (deleted by hand, or evicted): drop the stale entry and look again.
  redis.call('ZREM', KEYS[bestQueue], bestId)
  redis.call('ZREM', KEYS[bestQueue + 1], bestId)
end
return nil
