-- Deletes a finished job whose expiry has passed, with its log, index entries and idempotency
-- key, large values, text, input and items. KEYS: 1 job, 2 log, 3 expiry, 4 all jobs, 5 leases, 6 deadlines,
-- 7 values, 8 text, 9 input, 10 items.
-- ARGV: 1 id, 2 now, 3 prefix. Returns 1 when deleted.
local f = redis.call('HMGET', KEYS[1], 'exp', 'status', 'type', 'tenant', 'user', 'idem', 'owned')
if not f[1] then
  -- Not finished (resumed since), or already gone: it no longer belongs in the expiry index.
  redis.call('ZREM', KEYS[3], ARGV[1])
  return 0
end
if tonumber(f[1]) > tonumber(ARGV[2]) then return 0 end
local p = ARGV[3]
redis.call('DEL', KEYS[1], KEYS[2], KEYS[7], KEYS[8], KEYS[9], KEYS[10])
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
