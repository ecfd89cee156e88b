-- Marks a key revoked (the first time only), records when, and announces it to every node.
-- KEYS: key record, revoked zset. ARGV: id, revokedAt (ISO), channel. Returns 0 if there is no such key.
--! include lib/redis-now.lua
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HSETNX', KEYS[1], 'revokedAt', ARGV[2]) == 1 then redis.call('ZADD', KEYS[2], now, ARGV[1]) end
redis.call('PUBLISH', ARGV[3], ARGV[1])
return 1
