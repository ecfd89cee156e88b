-- Commits what JavaScript computed from version `ver` of the job, if the job is still at that
-- version and in the current generation (`generation`, read once per script call); else returns 0
-- and the caller reloads (which moves the job to the new epoch if the generation changed) and
-- recomputes. On success the job's version
-- becomes the one the caller chose, a random integer below 2^52, so that it can keep the state
-- with it and commit its next write without reloading: a version is never reached twice (after
-- Redis rolls a job back to an older dump, writes through other nodes cannot count their way back
-- to a version a node still holds, as they could with a counter).
--
-- A commit arrives as two arguments (commits.ts: #commit): its fields in one string, separated by
-- the byte 0x1F, and the text it appends or sets. One argument per field cost the node more than
-- the commit itself: ioredis frames each argument as strings of its own (a 64-commit call had
-- 2,200), and building them was a quarter of what a busy node allocated. The fields never hold
-- 0x1F: they are ids, job types, statuses and numbers, whose characters are checked where they
-- enter, and JSON, which escapes every control character. The text, which may hold any character,
-- is the second argument.
--
-- The job's keys are built here from the prefix `p` and its id and type, as keys.ts names them
-- (on Redis Cluster they would be undeclared and cross-slot: docs/scaling-redis.md).
-- KEYS 1 leases, 2 expiry, 3 generation, 4 deadlines (shared by every job of a call).
-- Fields (A): 1 id, 2 type, 3 status before, 4 status after, 5 ver, 6 the job's generation as
--   loaded, 7 state JSON, 8 seq, 9 lease JSON ('' none, '=' unchanged), 10 lease expiry ('' when it
--   cannot lapse, '=' unchanged), 11 availableAt, 12 queued after (1/0), 13 queued before (0 no,
--   1 yes, 2 yes and in a retry backoff: only then has it an entry in the delayed set to remove),
--   14 ordinal, 15 expiresAt ('' never, '=' unchanged), 16 keep log entries from this seq, 17 the
--   new version, 18 timers JSON ('' none, '=' unchanged), 19 earliest deadline ('' none), 20 text
--   change ('' none, 'a' append `text`, 's' set to `text`: a rewind, or text moved out of a state
--   written before it had a key of its own), 21 the text's length (the hash's `tlen`: what a list
--   shows without reading the text), 22 event count n, then seq and JSON per event, then the
--   number of items changed and place and JSON per item (HSET into the items hash). The state JSON
--   carries no text and no items. The job's channel gets the events as one JSON array,
--   `[e1,e2,…]`, built here from their JSON (the caller knows it by that exact text:
--   notifications.ts).
-- A job's queue channel is not published here but added to `queues` (a list, and a set of the
-- same names), which the caller publishes once each.

-- A commit's fields (split at each 0x1F). The table starts with room for 32 (a commit of a few
-- events has fewer): filled one by one from empty, it was reallocated at 1, 2, 4, 8, 16 and 32
-- fields (bench/redis-instructions.mjs: 1 % of Redis's instructions per claimed and completed job,
-- 2 % per write). Slots past the last field hold `false`; no caller reads past it.
local function fieldsOf(packed)
  local fields = { false, false, false, false, false, false, false, false, false, false, false, false, false, false, false, false,
    false, false, false, false, false, false, false, false, false, false, false, false, false, false, false, false }
  local from, i = 1, 1
  while true do
    local at = string.find(packed, '\031', from, true)
    if at == nil then
      fields[i] = string.sub(packed, from)
      return fields
    end
    fields[i] = string.sub(packed, from, at - 1)
    i = i + 1
    from = at + 1
  end
end

local function commitJob(A, text, p, queues, generation)
  local id, type = A[1], A[2]
  local job = p .. ':job:{' .. id .. '}'
  local current = redis.call('HMGET', job, 'ver', 'inc')
  if current[1] ~= A[5] or current[2] ~= A[6] or generation ~= A[6] then return 0 end
  local n = tonumber(A[22])
  local bodies = {}
  if n > 0 then
    local log = job .. ':log'
    bodies[1] = A[24]
    -- XADD refuses an id at or below the log's newest: a log that runs past the job's head (it
    -- outlived a rollback of the hash) cannot be continued, and starts over. (Asking the log for its
    -- newest entry first cost a call on every commit.)
    if redis.pcall('XADD', log, A[23] .. '-0', 'e', bodies[1]).err then
      redis.call('DEL', log)
      redis.call('XADD', log, A[23] .. '-0', 'e', bodies[1])
    end
    for i = 1, n - 1 do
      bodies[i + 1] = A[24 + 2 * i]
      redis.call('XADD', log, A[23 + 2 * i] .. '-0', 'e', bodies[i + 1])
    end
    if tonumber(A[16]) > 1 then redis.call('XTRIM', log, 'MINID', A[16]) end
  end
  -- Items in HSETs of at most 500 (a state written before items had a key of its own moves all of them).
  local from, m = 24 + 2 * n, tonumber(A[23 + 2 * n])
  for first = 0, m - 1, 500 do
    local fields = {}
    for i = first, math.min(m, first + 500) - 1 do
      fields[#fields + 1] = A[from + 2 * i]
      fields[#fields + 1] = A[from + 2 * i + 1]
    end
    redis.call('HSET', job .. ':items', unpack(fields))
  end
  -- The hash's fields in one HSET and at most one HDEL (each call from a script has its cost).
  local set = { 'state', A[7], 'seq', A[8], 'status', A[4], 'avail', A[11], 'ver', A[17], 'tlen', A[21] }
  local unset = {}
  -- '=' (lease, expiry, timers): the same as the version compared above holds, index entries too.
  if A[9] == '' then unset[#unset + 1] = 'lease' elseif A[9] ~= '=' then set[#set + 1] = 'lease'; set[#set + 1] = A[9] end
  if A[15] == '' then unset[#unset + 1] = 'exp' elseif A[15] ~= '=' then set[#set + 1] = 'exp'; set[#set + 1] = A[15] end
  if A[18] == '' then unset[#unset + 1] = 'timers' elseif A[18] ~= '=' then set[#set + 1] = 'timers'; set[#set + 1] = A[18] end
  redis.call('HSET', job, unpack(set))
  if #unset > 0 then redis.call('HDEL', job, unpack(unset)) end
  if A[20] == 'a' then
    redis.call('APPEND', job .. ':text', text)
  elseif A[20] == 's' then
    if text == '' then redis.call('DEL', job .. ':text') else redis.call('SET', job .. ':text', text) end
  end
  if A[10] == '' then redis.call('ZREM', KEYS[1], id) elseif A[10] ~= '=' then redis.call('ZADD', KEYS[1], A[10], id) end
  if A[3] ~= A[4] then
    redis.call('ZREM', p .. ':idx:status:' .. A[3], id)
    redis.call('ZADD', p .. ':idx:status:' .. A[4], A[14], id)
  end
  if A[12] == '1' then
    redis.call('ZADD', p .. ':queue:' .. type, A[14], id)
    if tonumber(A[11]) > 0 then redis.call('ZADD', p .. ':delayed:' .. type, A[11], id) else redis.call('ZREM', p .. ':delayed:' .. type, id) end
  elseif A[13] ~= '0' then
    redis.call('ZREM', p .. ':queue:' .. type, id)
    if A[13] == '2' then redis.call('ZREM', p .. ':delayed:' .. type, id) end
  end
  if A[15] == '' then redis.call('ZREM', KEYS[2], id) elseif A[15] ~= '=' then redis.call('ZADD', KEYS[2], A[15], id) end
  if A[18] ~= '=' then
    if A[19] == '' then redis.call('ZREM', KEYS[4], id) else redis.call('ZADD', KEYS[4], A[19], id) end
  end
  if n > 0 then redis.call('PUBLISH', p .. ':ch:job:' .. id, '[' .. table.concat(bodies, ',') .. ']') end
  if (A[12] == '1') ~= (A[13] ~= '0') then
    local channel = p .. ':ch:queue:' .. type
    if not queues[channel] then
      queues[channel] = true
      queues[#queues + 1] = channel
    end
  end
  return 1
end
