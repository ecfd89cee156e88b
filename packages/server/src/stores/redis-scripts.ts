/**
 * The Redis store's Lua scripts. Each runs atomically on the server. They never parse JSON: the
 * job's state is computed in JavaScript (the same reducer as everywhere) and stored as a string,
 * and a commit only lands if the job's version is still the one that state was computed from.
 *
 * Key layout: see redis-keys.ts. The scripts address a job's keys (declared) and the global
 * indexes (declared in the hot paths, built from the prefix in the rare ones), so they run on a
 * single Redis primary; on Redis Cluster they would be cross-slot (see docs/scaling-redis.md).
 */

/**
 * The deployment's generation, `<redis run_id>/<token>`: what a job's `inc` field is compared
 * with. Kept in Redis so every node sees the same one at the same instant. When the key is gone
 * (Redis lost it: a flush, a restart without persistence) the caller's candidate takes its place.
 */
const generationFunction = `
local function generation(genKey, candidate)
  local g = redis.call('GET', genKey)
  if not g then
    redis.call('SET', genKey, candidate)
    g = candidate
  end
  return g
end
`

/**
 * Reads a job's record, first moving it to a new epoch when it was last written in another
 * generation (Redis restarted, failed over, or lost our keys and got some back): that history
 * may have lost its newest events, so its log is dropped and its seq jumps `gap` ahead. Every
 * position handed out before is then behind the log's first seq, so resuming from it yields an
 * explicit reset snapshot, and no new event can reuse a seq a client already saw.
 * Fields: 1 state, 2 seq, 3 ver, 4 lease, 5 avail, 6 inc, 7 ord, 8 status, 9 timers.
 */
const loadFunction = `${generationFunction}
local function load(jobKey, genKey, candidate, gap)
  local f = redis.call('HMGET', jobKey, 'state', 'seq', 'ver', 'lease', 'avail', 'inc', 'ord', 'status', 'timers')
  if not f[1] then return nil end
  local inc = generation(genKey, candidate)
  if f[6] ~= inc then
    redis.call('DEL', jobKey .. ':log')
    f[2] = tostring(redis.call('HINCRBY', jobKey, 'seq', gap))
    f[3] = tostring(redis.call('HINCRBY', jobKey, 'ver', 1))
    redis.call('HSET', jobKey, 'inc', inc)
    f[6] = inc
  end
  return f
end
`

/** KEYS: job, generation. ARGV: candidate generation, epoch gap. Returns the record fields, or nil. */
export const loadScript = `${loadFunction}
return load(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]))
`

/**
 * KEYS: job, log, generation. ARGV: candidate generation, epoch gap, first seq wanted (after + 1), limit.
 * Returns nil, or {head, status, firstSeq, {event JSON…}}. firstSeq is the log's oldest entry,
 * or head + 1 when it holds nothing (trimmed away, or lost).
 */
export const readLogScript = `${loadFunction}
local f = load(KEYS[1], KEYS[3], ARGV[1], tonumber(ARGV[2]))
if not f then return nil end
local firstSeq = tonumber(f[2]) + 1
local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if oldest[1] then firstSeq = tonumber(string.match(oldest[1][1], '^(%d+)')) end
local events = {}
if tonumber(ARGV[4]) > 0 then
  local entries = redis.call('XRANGE', KEYS[2], ARGV[3] .. '-0', '+', 'COUNT', ARGV[4])
  for i, entry in ipairs(entries) do events[i] = entry[2][2] end
end
return {f[2], f[8], firstSeq, events}
`

/**
 * Creates a job, or answers the live job its idempotency key already names.
 * KEYS: 1 job, 2 log, 3 idempotency key (unused without one), 4 ordinal, 5 all jobs, 6 status
 *       index (queued), 7 type index, 8 tenant index, 9 user index, 10 queue, 11 generation.
 * ARGV: 1 id, 2 state JSON, 3 created event JSON, 4 candidate generation, 5 epoch gap, 6 has key (1/0),
 *       7 idempotency key, 8 type, 9 tenant, 10 user, 11 dispatch (1/0), 12 job key start,
 *       13 job channel, 14 queue channel, 15 owner channel, 16 has an owner (1/0), 17 timers JSON
 *       ('' none), 18 earliest deadline ('' none). KEYS 12: deadlines.
 * Returns {1, ordinal} when created, or {0, record fields…} of the existing job.
 */
export const createScript = `${loadFunction}
if ARGV[6] == '1' then
  local existing = redis.call('GET', KEYS[3])
  if existing then
    local f = load(ARGV[12] .. existing .. '}', KEYS[11], ARGV[4], tonumber(ARGV[5]))
    if f then return {0, f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9]} end
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.error_reply('ERR jobwire: job id ' .. ARGV[1] .. ' exists') end
local ord = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'seq', 1, 'ver', 1, 'inc', generation(KEYS[11], ARGV[4]), 'ord', ord, 'status', 'queued',
  'type', ARGV[8], 'avail', 0, 'owned', ARGV[16], 'tenant', ARGV[9], 'user', ARGV[10], 'idem', ARGV[7])
redis.call('XADD', KEYS[2], '1-0', 'e', ARGV[3])
redis.call('ZADD', KEYS[5], ord, ARGV[1])
redis.call('ZADD', KEYS[6], ord, ARGV[1])
redis.call('ZADD', KEYS[7], ord, ARGV[1])
if ARGV[16] == '1' then
  redis.call('ZADD', KEYS[8], ord, ARGV[1])
  redis.call('ZADD', KEYS[9], ord, ARGV[1])
end
if ARGV[6] == '1' then redis.call('SET', KEYS[3], ARGV[1]) end
if ARGV[17] ~= '' then redis.call('HSET', KEYS[1], 'timers', ARGV[17]) end
if ARGV[18] ~= '' then redis.call('ZADD', KEYS[12], ARGV[18], ARGV[1]) end
redis.call('PUBLISH', ARGV[13], '[' .. ARGV[3] .. ']')
if ARGV[16] == '1' then redis.call('PUBLISH', ARGV[15], ARGV[3]) end
if ARGV[11] == '1' then
  redis.call('ZADD', KEYS[10], ord, ARGV[1])
  redis.call('PUBLISH', ARGV[14], '')
end
return {1, ord}
`

/**
 * Commits what JavaScript computed from version `ver` of the job, if the job is still at that
 * version and in the current generation; else returns 0 and the caller reloads (which moves the
 * job to the new epoch if the generation changed) and recomputes. On success the job's version
 * becomes the one the caller chose, a random integer below 2^52, so that it can keep the state
 * with it and commit its next write without reloading: a version is never reached twice (after
 * Redis rolls a job back to an older dump, writes through other nodes cannot count their way back
 * to a version a node still holds, as they could with a counter).
 * KEYS: 1 job, 2 log, 3 old status index, 4 new status index, 5 queue, 6 delayed, 7 leases, 8 expiry, 9 generation,
 *       10 deadlines.
 * ARGV: 1 ver, 2 the job's generation as loaded, 3 state JSON, 4 seq, 5 status, 6 lease JSON ('' none), 7 lease
 *       expiry ('' when it cannot lapse), 8 availableAt, 9 queued after (1/0), 10 queued before,
 *       11 ordinal, 12 id, 13 expiresAt ('' never), 14 keep log entries from this seq, 15 job
 *       channel, 16 queue channel, 17 events JSON array, 18 event count, 19 the new version,
 *       20 timers JSON ('' none), 21 earliest deadline ('' none), then seq, JSON per event.
 */
export const commitScript = `
local current = redis.call('HMGET', KEYS[1], 'ver', 'inc')
if current[1] ~= ARGV[1] or current[2] ~= ARGV[2] or redis.call('GET', KEYS[9]) ~= ARGV[2] then return 0 end
local n = tonumber(ARGV[18])
if n > 0 then
  -- A log that runs past the job's head (it outlived a rollback of the hash) cannot be continued.
  local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  if newest[1] and tonumber(string.match(newest[1][1], '^(%d+)')) >= tonumber(ARGV[22]) then redis.call('DEL', KEYS[2]) end
  for i = 0, n - 1 do
    redis.call('XADD', KEYS[2], ARGV[22 + 2 * i] .. '-0', 'e', ARGV[23 + 2 * i])
  end
  if tonumber(ARGV[14]) > 1 then redis.call('XTRIM', KEYS[2], 'MINID', ARGV[14]) end
end
redis.call('HSET', KEYS[1], 'state', ARGV[3], 'seq', ARGV[4], 'status', ARGV[5], 'avail', ARGV[8])
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
`

/**
 * Finds the oldest claimable job among the given types: the lowest ordinal in their queues that
 * is not waiting out a backoff at `now`. Returns nil, or {id, record fields…}.
 * KEYS: queue, delayed, for each type. ARGV: 1 now, 2 job key start, 3 candidate generation, 4 epoch gap, 5 generation key.
 */
export const pickScript = `${loadFunction}
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
`

/**
 * Ids of jobs whose earliest deadline is at or before `now`, earliest first. An entry whose job is
 * gone (deleted by hand, evicted) is dropped from the index instead of being handed out again on
 * every sweep. KEYS: deadlines. ARGV: 1 now, 2 limit, 3 job key start.
 */
export const dueScript = `
local out = {}
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  if redis.call('EXISTS', ARGV[3] .. id .. '}') == 1 then out[#out + 1] = id else redis.call('ZREM', KEYS[1], id) end
end
return out
`

/** KEYS: job. ARGV: 1 prefix, 2 id. The job's 1-based place in its type's queue, or nil. */
export const positionScript = `
local jobType = redis.call('HGET', KEYS[1], 'type')
if not jobType then return nil end
local queue = ARGV[1] .. ':queue:' .. jobType
local ord = redis.call('ZSCORE', queue, ARGV[2])
if not ord then return nil end
return redis.call('ZCOUNT', queue, '-inf', '(' .. ord) + 1
`

/**
 * Deletes a finished job whose expiry has passed, with its log, index entries and idempotency
 * key and large values. KEYS: 1 job, 2 log, 3 expiry, 4 all jobs, 5 leases, 6 deadlines, 7 values. ARGV: 1 id, 2 now, 3 prefix.
 * Returns 1 when deleted.
 */
export const sweepScript = `
local f = redis.call('HMGET', KEYS[1], 'exp', 'status', 'type', 'tenant', 'user', 'idem', 'owned')
if not f[1] then
  -- Not finished (resumed since), or already gone: it no longer belongs in the expiry index.
  redis.call('ZREM', KEYS[3], ARGV[1])
  return 0
end
if tonumber(f[1]) > tonumber(ARGV[2]) then return 0 end
local p = ARGV[3]
redis.call('DEL', KEYS[1], KEYS[2], KEYS[7])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1])
redis.call('ZREM', p .. ':idx:status:' .. f[2], ARGV[1])
redis.call('ZREM', p .. ':idx:type:' .. f[3], ARGV[1])
redis.call('ZREM', p .. ':queue:' .. f[3], ARGV[1])
redis.call('ZREM', p .. ':delayed:' .. f[3], ARGV[1])
if f[7] == '1' then
  redis.call('ZREM', p .. ':idx:tenant:' .. f[4], ARGV[1])
  redis.call('ZREM', p .. ':idx:user:' .. f[5], ARGV[1])
end
if f[6] and f[6] ~= '' then
  local key = p .. ':idem:' .. f[6]
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
return 1
`

/**
 * KEYS: generation. ARGV: Redis's run_id, a fresh token. Returns the deployment's generation,
 * starting a new one when it is missing or was made by another run of Redis (a restart or a
 * failover may have lost writes, even with persistence).
 */
export const generationScript = `
local g = redis.call('GET', KEYS[1])
if not g or string.sub(g, 1, #ARGV[1] + 1) ~= ARGV[1] .. '/' then
  g = ARGV[1] .. '/' .. ARGV[2]
  redis.call('SET', KEYS[1], g)
end
return g
`
