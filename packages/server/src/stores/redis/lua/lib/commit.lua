-- Commits what JavaScript computed from version `ver` of the job, if the job is still at that
-- version and in the current generation (`generation`, read once per script call); else returns 0
-- and the caller reloads (which moves the job to the new epoch if the generation changed) and
-- recomputes. On success the job's version
-- becomes the one the caller chose, a random integer below 2^52, so that it can keep the state
-- with it and commit its next write without reloading: a version is never reached twice (after
-- Redis rolls a job back to an older dump, writes through other nodes cannot count their way back
-- to a version a node still holds, as they could with a counter).
-- KEYS 1 leases, 2 expiry, 3 generation, 4 deadlines (shared by every job of a call), then from
--       k + 1: 1 job, 2 log, 3 old status index, 4 new status index, 5 queue, 6 delayed, 7 text, 8 items.
-- ARGV (from a + 1): 1 ver, 2 the job's generation as loaded, 3 state JSON, 4 seq, 5 status, 6 lease JSON ('' none, '='
--       unchanged), 7 lease expiry ('' when it cannot lapse, '=' unchanged), 8 availableAt, 9 queued after (1/0),
--       10 queued before, 11 ordinal, 12 id, 13 expiresAt ('' never, '=' unchanged), 14 keep log
--       entries from this seq, 15 job channel, 16 queue channel, 17 event count, 18 the new version,
--       19 timers JSON ('' none, '=' unchanged), 20 earliest deadline ('' none), 21 text change ('' none, 'a' append ARGV[22], 's' set to
--       ARGV[22]: a rewind, or text moved out of a state written before it had a key of its own),
--       22 that text, then seq, JSON per event, then the number of items changed and place, JSON
--       per item (HSET into the items hash), then the text's length (the hash's `tlen`: what a list
--       shows without reading the text). The state JSON carries no text and no items. The job's channel
--       gets the events as one JSON array, `[e1,e2,…]`, built here from their JSON (the caller
--       knows it by that exact text: notifications.ts).
-- A job's queue channel is not published here but added to `queues` (a list, and a set of the
-- same names), which the caller publishes once each.
local function commitJob(k, a, queues, generation)
  local current = redis.call('HMGET', KEYS[k + 1], 'ver', 'inc')
  if current[1] ~= ARGV[a + 1] or current[2] ~= ARGV[a + 2] or generation ~= ARGV[a + 2] then return 0 end
  local n = tonumber(ARGV[a + 17])
  local bodies = {}
  if n > 0 then
    local log, firstId = KEYS[k + 2], ARGV[a + 23] .. '-0'
    bodies[1] = ARGV[a + 24]
    -- XADD refuses an id at or below the log's newest: a log that runs past the job's head (it
    -- outlived a rollback of the hash) cannot be continued, and starts over. (Asking the log for its
    -- newest entry first cost a call on every commit.)
    if redis.pcall('XADD', log, firstId, 'e', bodies[1]).err then
      redis.call('DEL', log)
      redis.call('XADD', log, firstId, 'e', bodies[1])
    end
    for i = 1, n - 1 do
      bodies[i + 1] = ARGV[a + 24 + 2 * i]
      redis.call('XADD', KEYS[k + 2], ARGV[a + 23 + 2 * i] .. '-0', 'e', bodies[i + 1])
    end
    if tonumber(ARGV[a + 14]) > 1 then redis.call('XTRIM', KEYS[k + 2], 'MINID', ARGV[a + 14]) end
  end
  -- Items in HSETs of at most 500 (a state written before items had a key of its own moves all of them).
  local from, m = a + 24 + 2 * n, tonumber(ARGV[a + 23 + 2 * n])
  for first = 0, m - 1, 500 do
    local fields = {}
    for i = first, math.min(m, first + 500) - 1 do
      fields[#fields + 1] = ARGV[from + 2 * i]
      fields[#fields + 1] = ARGV[from + 2 * i + 1]
    end
    redis.call('HSET', KEYS[k + 8], unpack(fields))
  end
  -- The hash's fields in one HSET and at most one HDEL (each call from a script has its cost).
  local set = { 'state', ARGV[a + 3], 'seq', ARGV[a + 4], 'status', ARGV[a + 5], 'avail', ARGV[a + 8], 'ver', ARGV[a + 18], 'tlen', ARGV[from + 2 * m] }
  local unset = {}
  -- '=' (lease, expiry, timers): the same as the version compared above holds, index entries too.
  if ARGV[a + 6] == '' then unset[#unset + 1] = 'lease' elseif ARGV[a + 6] ~= '=' then set[#set + 1] = 'lease'; set[#set + 1] = ARGV[a + 6] end
  if ARGV[a + 13] == '' then unset[#unset + 1] = 'exp' elseif ARGV[a + 13] ~= '=' then set[#set + 1] = 'exp'; set[#set + 1] = ARGV[a + 13] end
  if ARGV[a + 19] == '' then unset[#unset + 1] = 'timers' elseif ARGV[a + 19] ~= '=' then set[#set + 1] = 'timers'; set[#set + 1] = ARGV[a + 19] end
  redis.call('HSET', KEYS[k + 1], unpack(set))
  if #unset > 0 then redis.call('HDEL', KEYS[k + 1], unpack(unset)) end
  if ARGV[a + 21] == 'a' then
    redis.call('APPEND', KEYS[k + 7], ARGV[a + 22])
  elseif ARGV[a + 21] == 's' then
    if ARGV[a + 22] == '' then redis.call('DEL', KEYS[k + 7]) else redis.call('SET', KEYS[k + 7], ARGV[a + 22]) end
  end
  if ARGV[a + 7] == '' then redis.call('ZREM', KEYS[1], ARGV[a + 12]) elseif ARGV[a + 7] ~= '=' then redis.call('ZADD', KEYS[1], ARGV[a + 7], ARGV[a + 12]) end
  if KEYS[k + 3] ~= KEYS[k + 4] then
    redis.call('ZREM', KEYS[k + 3], ARGV[a + 12])
    redis.call('ZADD', KEYS[k + 4], ARGV[a + 11], ARGV[a + 12])
  end
  if ARGV[a + 9] == '1' then
    redis.call('ZADD', KEYS[k + 5], ARGV[a + 11], ARGV[a + 12])
    if tonumber(ARGV[a + 8]) > 0 then redis.call('ZADD', KEYS[k + 6], ARGV[a + 8], ARGV[a + 12]) else redis.call('ZREM', KEYS[k + 6], ARGV[a + 12]) end
  elseif ARGV[a + 10] == '1' then
    redis.call('ZREM', KEYS[k + 5], ARGV[a + 12])
    redis.call('ZREM', KEYS[k + 6], ARGV[a + 12])
  end
  if ARGV[a + 13] == '' then redis.call('ZREM', KEYS[2], ARGV[a + 12]) elseif ARGV[a + 13] ~= '=' then redis.call('ZADD', KEYS[2], ARGV[a + 13], ARGV[a + 12]) end
  if ARGV[a + 19] ~= '=' then
    if ARGV[a + 20] == '' then redis.call('ZREM', KEYS[4], ARGV[a + 12]) else redis.call('ZADD', KEYS[4], ARGV[a + 20], ARGV[a + 12]) end
  end
  if n > 0 then redis.call('PUBLISH', ARGV[a + 15], '[' .. table.concat(bodies, ',') .. ']') end
  if ARGV[a + 9] ~= ARGV[a + 10] and not queues[ARGV[a + 16]] then
    queues[ARGV[a + 16]] = true
    queues[#queues + 1] = ARGV[a + 16]
  end
  return 1
end
