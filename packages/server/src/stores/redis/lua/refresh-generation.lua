-- KEYS: generation. ARGV: Redis's run_id, a fresh token. Returns the deployment's generation,
-- starting a new one when it is missing or was made by another run of Redis (a restart or a
-- failover may have lost writes, even with persistence).
local g = redis.call('GET', KEYS[1])
if not g or string.sub(g, 1, #ARGV[1] + 1) ~= ARGV[1] .. '/' then
  g = ARGV[1] .. '/' .. ARGV[2]
  redis.call('SET', KEYS[1], g)
end
return g
