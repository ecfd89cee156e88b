-- The deployment's generation, `<redis run_id>/<token>`: what a job's `inc` field is compared
-- with. Kept in Redis so every node sees the same one at the same instant. When the key is gone
-- (Redis lost it: a flush, a restart without persistence) the caller's candidate takes its place.
local function generation(genKey, candidate)
  local g = redis.call('GET', genKey)
  if not g then
    redis.call('SET', genKey, candidate)
    g = candidate
  end
  return g
end
