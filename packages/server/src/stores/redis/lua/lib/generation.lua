-- The deployment's generation, `<redis run_id>/<token>`: what a job's `inc` field is compared
-- with. Kept in Redis so every node sees the same one at the same instant. When the key is gone
-- (Redis lost it: a flush, a restart without persistence) the caller's candidate takes its place.
-- Read once per script run (a pick loads many jobs): no script that includes this changes the key
-- but through this function.
local knownGeneration
local function generation(genKey, candidate)
  if knownGeneration then return knownGeneration end
  local g = redis.call('GET', genKey)
  if not g then
    redis.call('SET', genKey, candidate)
    g = candidate
  end
  knownGeneration = g
  return g
end
