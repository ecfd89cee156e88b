-- Creates a job, or answers the live job its idempotency key already names.
-- KEYS: 1 job, 2 log, 3 idempotency key (unused without one), 4 ordinal, 5 all jobs, 6 status
--       index (queued), 7 type index, 8 tenant index, 9 user index, 10 queue, 11 generation, 12 deadlines,
--       13 input (kept apart from the state; unused when ARGV[19] is '').
-- ARGV: 1 id, 2 state JSON, 3 created event JSON, 4 candidate generation, 5 epoch gap, 6 has key (1/0),
--       7 idempotency key, 8 type, 9 tenant, 10 user, 11 dispatch (1/0), 12 job key start,
--       13 job channel, 14 queue channel, 15 owner channel, 16 has an owner (1/0), 17 timers JSON
--       ('' none), 18 earliest deadline ('' none), 19 input JSON kept apart ('': the state holds it).
-- Returns {1, ordinal (a string)} when created, or {0, record fields...} of the existing job.
--! include lib/load.lua
if ARGV[6] == '1' then
  local existing = redis.call('GET', KEYS[3])
  if existing then
    local f = load(ARGV[12] .. existing .. '}', KEYS[11], ARGV[4], tonumber(ARGV[5]), true)
    if f then return {0, f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12]} end
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.error_reply('ERR jobwire: job id ' .. ARGV[1] .. ' exists') end
-- Every argument of a call from the script is a string, written here as one: Redis turns a Lua
-- number into one with snprintf's %.17g each time it is passed (nine times a create, a tenth of
-- Redis's work on it).
local ord = string.format('%d', redis.call('INCR', KEYS[4]))
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'seq', '1', 'ver', '1', 'inc', generation(KEYS[11], ARGV[4]), 'ord', ord, 'status', 'queued',
  'type', ARGV[8], 'avail', '0', 'owned', ARGV[16], 'tenant', ARGV[9], 'user', ARGV[10], 'idem', ARGV[7], 'tlen', '0',
  'inp', ARGV[19] == '' and '0' or '1')
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
if ARGV[19] ~= '' then redis.call('SET', KEYS[13], ARGV[19]) end
if ARGV[18] ~= '' then redis.call('ZADD', KEYS[12], ARGV[18], ARGV[1]) end
redis.call('PUBLISH', ARGV[13], '[' .. ARGV[3] .. ']')
if ARGV[16] == '1' then redis.call('PUBLISH', ARGV[15], ARGV[3]) end
if ARGV[11] == '1' then
  redis.call('ZADD', KEYS[10], ord, ARGV[1])
  redis.call('PUBLISH', ARGV[14], '')
end
return {1, ord}
