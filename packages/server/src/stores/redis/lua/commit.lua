-- Commits the writes of several jobs in one call (the commits of a claim, or of the writes this
-- node issued in one turn): each is committed or refused (0) on its own exactly as lib/commit.lua
-- says, and a queue that any of them entered or left is published once.
-- KEYS: the 4 shared ones (lib/commit.lua). ARGV: 1 the key prefix, 2 the number of jobs, then
-- per job its fields (one string) and its text (lib/commit.lua). Returns {1 or 0, ...}.
--! include lib/commit.lua
local p, n = ARGV[1], tonumber(ARGV[2])
local out, queues = {}, {}
-- Read once: nothing in this call changes it.
local generation = redis.call('GET', KEYS[3])
for j = 1, n do
  out[j] = commitJob(fieldsOf(ARGV[1 + 2 * j]), ARGV[2 + 2 * j], p, queues, generation)
end
for _, channel in ipairs(queues) do redis.call('PUBLISH', channel, '') end
return out
