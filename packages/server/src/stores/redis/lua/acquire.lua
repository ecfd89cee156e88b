-- Takes a stream slot of a subject if the live nodes hold fewer than `max` together. This node's
-- own count is the caller's (`want`, including this slot): it keeps the truth locally.
-- KEYS: nodes zset, this node's hash. ARGV: node, subject, want, max, lease ms, node hash start.
-- Returns 0 (full), 1 (taken), or 2 (taken, but this node's hash had lapsed: rewrite it).
--! include lib/redis-now.lua
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local others = 0
for _, node in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if node ~= ARGV[1] then others = others + tonumber(redis.call('HGET', ARGV[6] .. node, ARGV[2]) or '0') end
end
if others + tonumber(ARGV[3]) > tonumber(ARGV[4]) then return 0 end
local existed = redis.call('EXISTS', KEYS[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[5]), ARGV[1])
if existed == 0 then return 2 end
return 1
