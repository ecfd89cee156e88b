-- KEYS: job. ARGV: 1 prefix, 2 id. The job's 1-based place in its type's queue, or nil.
local jobType = redis.call('HGET', KEYS[1], 'type')
if not jobType then return nil end
local queue = ARGV[1] .. ':queue:' .. jobType
local ord = redis.call('ZSCORE', queue, ARGV[2])
if not ord then return nil end
return redis.call('ZCOUNT', queue, '-inf', '(' .. ord) + 1
