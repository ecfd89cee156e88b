--! include lib/generation.lua
-- Reads a job's record, first moving it to a new epoch when it was last written in another
-- generation (Redis restarted, failed over, or lost our keys and got some back): that history
-- may have lost its newest events, so its log is dropped and its seq jumps `gap` ahead. Every
-- position handed out before is then behind the log's first seq, so resuming from it yields an
-- explicit reset snapshot, and no new event can reuse a seq a client already saw.
-- Fields: 1 state, 2 seq, 3 ver, 4 lease, 5 avail, 6 inc, 7 ord, 8 status, 9 timers, and with
-- `withText` 10 the streamed text (kept apart from the state: commit.lua appends to it), 11 a
-- large input (kept apart from the state, written once by create.lua) and 12 the items (kept apart
-- from the state, by their place in the job's list: HGETALL's field, value pairs).
-- The text and the input are read only when the hash says they may exist: `tlen` '0' (the text's
-- length, set by every commit) has no text, `inp` '0' (set by create.lua) no input apart. A record
-- without those fields (written by an older version) has both read. Each call from a script has
-- its cost, and most jobs have neither. The items are read always: a node of an older version on
-- the same Redis (a rolling upgrade) writes items without marking the hash.
local function load(jobKey, genKey, candidate, gap, withText)
  local f = redis.call('HMGET', jobKey, 'state', 'seq', 'ver', 'lease', 'avail', 'inc', 'ord', 'status', 'timers', 'tlen', 'inp')
  if not f[1] then return nil end
  if withText then
    f[10] = f[10] ~= '0' and redis.call('GET', jobKey .. ':text')
    f[11] = f[11] ~= '0' and redis.call('GET', jobKey .. ':input')
    f[12] = redis.call('HGETALL', jobKey .. ':items')
  end
  local inc = generation(genKey, candidate)
  if f[6] ~= inc then
    redis.call('DEL', jobKey .. ':log')
    f[2] = tostring(redis.call('HINCRBY', jobKey, 'seq', gap))
    f[3] = tostring(redis.call('HINCRBY', jobKey, 'ver', 1))
    redis.call('HSET', jobKey, 'inc', inc)
    f[6] = inc
  end
  return f
end
