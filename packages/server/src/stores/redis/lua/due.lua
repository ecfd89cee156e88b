-- Ids of jobs whose earliest deadline is at or before `now`, earliest first. An entry whose job is
-- gone (deleted by hand, evicted) is dropped from the index instead of being handed out again on
-- every sweep. KEYS: deadlines. ARGV: 1 now, 2 limit, 3 job key start.
local out = {}
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  if redis.call('EXISTS', ARGV[3] .. id .. '}') == 1 then out[#out + 1] = id else redis.call('ZREM', KEYS[1], id) end
end
return out
