-- Creates jobs, or answers the live job an idempotency key already names: the creates a node
-- issued in one pass of its event loop, in one call (commits.ts: #sendCreates), each done or
-- answered on its own, in order (a later create with the key of an earlier one gets that job).
-- One call per create cost Redis about a sixth of a create's instructions in the call itself and a
-- read of the generation (bench/redis-instructions.mjs), and the node a write to its socket.
-- KEYS: 1 ordinal, 2 all jobs, 3 status index (queued), 4 generation, 5 deadlines.
-- ARGV: 1 candidate generation, 2 epoch gap, 3 job key start, 4 the number of jobs n, then per job
--   `perJob` arguments, from b + 1: 1 job key, 2 log key, 3 its idempotency key's own key ('' when
--   it has none), 4 type index, 5 tenant index, 6 user index, 7 queue, 8 input key, 9 id, 10 state
--   JSON, 11 created event JSON, 12 the idempotency key as given ('' none), 13 type, 14 tenant,
--   15 user, 16 dispatch (1/0), 17 job channel, 18 queue channel, 19 owner channel, 20 has an owner
--   (1/0), 21 timers JSON ('' none), 22 earliest deadline ('' none), 23 input JSON kept apart ('':
--   the state holds it).
-- Returns per job {1} when created, {0, record fields...} of the existing job its idempotency key
-- names, or {2} when a job has its id already.
-- Every argument of a call from the script is a string, written here as one: Redis turns a Lua
-- number into one with snprintf's %.17g each time it is passed (nine times a create, a tenth of
-- Redis's work on it).
--! include lib/load.lua
local candidate, gap, jobKeyStart, n = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local perJob = 23
local inc = generation(KEYS[4], candidate)
local out = {}
for j = 1, n do
  local b = 4 + perJob * (j - 1)
  local id, idem = ARGV[b + 9], ARGV[b + 3]
  local existing = idem ~= '' and redis.call('GET', idem)
  local f = existing and load(jobKeyStart .. existing .. '}', KEYS[4], candidate, gap, true)
  if f then
    out[j] = {0, f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12]}
  elseif redis.call('EXISTS', ARGV[b + 1]) == 1 then
    out[j] = {2}
  else
    local ord = string.format('%d', redis.call('INCR', KEYS[1]))
    local owned = ARGV[b + 20]
    redis.call('HSET', ARGV[b + 1], 'state', ARGV[b + 10], 'seq', '1', 'ver', '1', 'inc', inc, 'ord', ord, 'status', 'queued',
      'type', ARGV[b + 13], 'avail', '0', 'owned', owned, 'tenant', ARGV[b + 14], 'user', ARGV[b + 15], 'idem', ARGV[b + 12], 'tlen', '0',
      'inp', ARGV[b + 23] == '' and '0' or '1')
    redis.call('XADD', ARGV[b + 2], '1-0', 'e', ARGV[b + 11])
    redis.call('ZADD', KEYS[2], ord, id)
    redis.call('ZADD', KEYS[3], ord, id)
    redis.call('ZADD', ARGV[b + 4], ord, id)
    if owned == '1' then
      redis.call('ZADD', ARGV[b + 5], ord, id)
      redis.call('ZADD', ARGV[b + 6], ord, id)
    end
    if idem ~= '' then redis.call('SET', idem, id) end
    if ARGV[b + 21] ~= '' then redis.call('HSET', ARGV[b + 1], 'timers', ARGV[b + 21]) end
    if ARGV[b + 23] ~= '' then redis.call('SET', ARGV[b + 8], ARGV[b + 23]) end
    if ARGV[b + 22] ~= '' then redis.call('ZADD', KEYS[5], ARGV[b + 22], id) end
    redis.call('PUBLISH', ARGV[b + 17], '[' .. ARGV[b + 11] .. ']')
    if owned == '1' then redis.call('PUBLISH', ARGV[b + 19], ARGV[b + 11]) end
    if ARGV[b + 16] == '1' then
      redis.call('ZADD', ARGV[b + 7], ord, id)
      redis.call('PUBLISH', ARGV[b + 18], '')
    end
    out[j] = {1}
  end
end
return out
