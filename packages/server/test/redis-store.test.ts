import { afterAll } from 'vitest'
import { describeStoreConformance } from './store-conformance.js'
import { adminClient, deleteKeys, openRedisStore, redisReachable, testPrefix } from './redis-fixtures/redis.js'

// The same contract as memory and SQLite, on a real Redis: each store gets a prefix of its own.
if (redisReachable('Store conformance: redis')) {
  const base = testPrefix('conformance')
  const admin = adminClient()
  let stores = 0
  afterAll(() => admin.quit())
  describeStoreConformance(
    'redis',
    ({ retention }) => openRedisStore({ prefix: `${base}:${++stores}`, ...(retention === undefined ? {} : { retention }) }),
    async () => {
      await deleteKeys(admin, base)
    },
  )
}
