-- Open streams of a subject on every live node. KEYS: nodes zset. ARGV: subject, node hash start.
--! include lib/redis-now.lua
local total = 0
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')) do
  total = total + tonumber(redis.call('HGET', ARGV[2] .. node, ARGV[1]) or '0')
end
return total
