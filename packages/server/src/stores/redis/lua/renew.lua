-- Renews this node's lease; with `rewrite`, first replaces its hash with the counts given.
-- KEYS: nodes zset, this node's hash. ARGV: node, lease ms, rewrite (1/0), then subject, count pairs.
-- Returns 0 when the hash is gone (it lapsed, or Redis lost it), else 1.
--! include lib/redis-now.lua
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[2])
  for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
end
return redis.call('PEXPIRE', KEYS[2], ARGV[2])
