-- KEYS: job, log, generation. ARGV: candidate generation, epoch gap, first seq wanted (after + 1), limit.
-- Returns nil, or {head, status, firstSeq, {event JSON...}}. firstSeq is the log's oldest entry,
-- or head + 1 when it holds nothing (trimmed away, or lost).
--! include lib/load.lua
local f = load(KEYS[1], KEYS[3], ARGV[1], tonumber(ARGV[2]), false)
if not f then return nil end
local firstSeq = tonumber(f[2]) + 1
local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if oldest[1] then firstSeq = tonumber(string.match(oldest[1][1], '^(%d+)')) end
local events = {}
if tonumber(ARGV[4]) > 0 then
  local entries = redis.call('XRANGE', KEYS[2], ARGV[3] .. '-0', '+', 'COUNT', ARGV[4])
  for i, entry in ipairs(entries) do events[i] = entry[2][2] end
end
return {f[2], f[8], firstSeq, events}
