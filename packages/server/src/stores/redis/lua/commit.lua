-- Commits what JavaScript computed from version `ver` of the job, if the job is still at that
-- version and in the current generation; else returns 0 and the caller reloads (which moves the
-- job to the new epoch if the generation changed) and recomputes. On success the job's version
-- becomes the one the caller chose, a random integer below 2^52, so that it can keep the state
-- with it and commit its next write without reloading: a version is never reached twice (after
-- Redis rolls a job back to an older dump, writes through other nodes cannot count their way back
-- to a version a node still holds, as they could with a counter).
-- KEYS: 1 job, 2 log, 3 old status index, 4 new status index, 5 queue, 6 delayed, 7 leases, 8 expiry, 9 generation,
--       10 deadlines, 11 text.
-- ARGV: 1 ver, 2 the job's generation as loaded, 3 state JSON, 4 seq, 5 status, 6 lease JSON ('' none), 7 lease
--       expiry ('' when it cannot lapse), 8 availableAt, 9 queued after (1/0), 10 queued before,
--       11 ordinal, 12 id, 13 expiresAt ('' never), 14 keep log entries from this seq, 15 job
--       channel, 16 queue channel, 17 events JSON array, 18 event count, 19 the new version,
--       20 timers JSON ('' none), 21 earliest deadline ('' none), 22 text change ('' none, 'a' append
--       ARGV[23], 's' set to ARGV[23]: a rewind, or text moved out of a state written before it had
--       a key of its own), 23 that text, then seq, JSON per event. The state JSON carries no text.
local current = redis.call('HMGET', KEYS[1], 'ver', 'inc')
if current[1] ~= ARGV[1] or current[2] ~= ARGV[2] or redis.call('GET', KEYS[9]) ~= ARGV[2] then return 0 end
local n = tonumber(ARGV[18])
if n > 0 then
  -- A log that runs past the job's head (it outlived a rollback of the hash) cannot be continued.
  local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  if newest[1] and tonumber(string.match(newest[1][1], '^(%d+)')) >= tonumber(ARGV[24]) then redis.call('DEL', KEYS[2]) end
  for i = 0, n - 1 do
    redis.call('XADD', KEYS[2], ARGV[24 + 2 * i] .. '-0', 'e', ARGV[25 + 2 * i])
  end
  if tonumber(ARGV[14]) > 1 then redis.call('XTRIM', KEYS[2], 'MINID', ARGV[14]) end
end
redis.call('HSET', KEYS[1], 'state', ARGV[3], 'seq', ARGV[4], 'status', ARGV[5], 'avail', ARGV[8])
if ARGV[22] == 'a' then
  redis.call('APPEND', KEYS[11], ARGV[23])
elseif ARGV[22] == 's' then
  if ARGV[23] == '' then redis.call('DEL', KEYS[11]) else redis.call('SET', KEYS[11], ARGV[23]) end
end
redis.call('HSET', KEYS[1], 'ver', ARGV[19])
if ARGV[6] == '' then redis.call('HDEL', KEYS[1], 'lease') else redis.call('HSET', KEYS[1], 'lease', ARGV[6]) end
if ARGV[7] == '' then redis.call('ZREM', KEYS[7], ARGV[12]) else redis.call('ZADD', KEYS[7], ARGV[7], ARGV[12]) end
if KEYS[3] ~= KEYS[4] then
  redis.call('ZREM', KEYS[3], ARGV[12])
  redis.call('ZADD', KEYS[4], ARGV[11], ARGV[12])
end
if ARGV[9] == '1' then
  redis.call('ZADD', KEYS[5], ARGV[11], ARGV[12])
  if tonumber(ARGV[8]) > 0 then redis.call('ZADD', KEYS[6], ARGV[8], ARGV[12]) else redis.call('ZREM', KEYS[6], ARGV[12]) end
elseif ARGV[10] == '1' then
  redis.call('ZREM', KEYS[5], ARGV[12])
  redis.call('ZREM', KEYS[6], ARGV[12])
end
if ARGV[13] == '' then
  redis.call('ZREM', KEYS[8], ARGV[12])
  redis.call('HDEL', KEYS[1], 'exp')
else
  redis.call('ZADD', KEYS[8], ARGV[13], ARGV[12])
  redis.call('HSET', KEYS[1], 'exp', ARGV[13])
end
if ARGV[20] == '' then redis.call('HDEL', KEYS[1], 'timers') else redis.call('HSET', KEYS[1], 'timers', ARGV[20]) end
if ARGV[21] == '' then redis.call('ZREM', KEYS[10], ARGV[12]) else redis.call('ZADD', KEYS[10], ARGV[21], ARGV[12]) end
if n > 0 then redis.call('PUBLISH', ARGV[15], ARGV[17]) end
if ARGV[9] ~= ARGV[10] then redis.call('PUBLISH', ARGV[16], '') end
return 1
