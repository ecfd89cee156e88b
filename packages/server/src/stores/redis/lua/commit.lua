-- Commits the writes of several jobs in one call (the commits of a claim, or of the writes this
-- node issued in one turn): each is committed or refused (0) on its own exactly as lib/commit.lua
-- says, and a queue that any of them entered or left is published once.
-- KEYS: the 4 shared ones, then 8 per job, in lib/commit.lua's order. ARGV: 1 the number of jobs,
-- then per job the number of its arguments and those arguments (lib/commit.lua's ARGV). Returns
-- {1 or 0, ...}.
--! include lib/commit.lua
local n = tonumber(ARGV[1])
local out, queues = {}, {}
local a = 1
-- Read once: nothing in this call changes it.
local generation = redis.call('GET', KEYS[3])
for j = 0, n - 1 do
  local count = tonumber(ARGV[a + 1])
  out[j + 1] = commitJob(4 + 8 * j, a + 1, queues, generation)
  a = a + 1 + count
end
for _, channel in ipairs(queues) do redis.call('PUBLISH', channel, '') end
return out
