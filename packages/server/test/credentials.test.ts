import { join } from 'node:path'
import { afterAll, describe, expect, it, vi } from 'vitest'
import { RedisCredentials } from '@jobwire/server'
import { MemoryKeyStore, MemoryRateCounter, MemoryStreamCounter } from '../src/stores/memory-keys.js'
import { SqliteKeyStore } from '../src/stores/sqlite-keys.js'
import { describeCredentialsConformance, type CredentialsNode } from './credentials-conformance.js'
import { makeTempDir } from './fixtures.js'
import { adminClient, deleteKeys, redisReachable, redisUrl, testPrefix } from './redis-fixtures/redis.js'
import { startTcpProxy, type TcpProxy } from '../../../test/support/tcp-proxy.js'

/**
 * The key store and limit counters of each backend, as `startServer` puts them together: memory
 * (a MemoryKeyStore and in-process counters), SQLite (keys in a real file beside the jobs, counters
 * in the process: one node per file) and Redis (RedisCredentials: keys and counters shared by the
 * nodes of one prefix).
 */

/** The counters of one server process (what a memory or SQLite server counts with). */
const processCounters = (): Pick<CredentialsNode, 'rate' | 'streams'> => ({ rate: new MemoryRateCounter(), streams: new MemoryStreamCounter() })

describeCredentialsConformance('memory', {
  durable: false,
  shared: false,
  async deployment() {
    return {
      node: async () => ({ keys: new MemoryKeyStore(), ...processCounters() }),
      crash: async () => undefined,
      close: async () => undefined,
    }
  },
})

describeCredentialsConformance('sqlite (a real file)', {
  durable: true,
  shared: false,
  async deployment() {
    const dir = await makeTempDir('jobwire-credentials-')
    const stores: SqliteKeyStore[] = []
    return {
      async node() {
        const keys = new SqliteKeyStore(join(dir.path, 'jobwire.db'))
        stores.push(keys)
        return { keys, ...processCounters() }
      },
      // A killed process leaves its file behind (WAL and all) and takes its counters with it.
      crash: async () => undefined,
      async close() {
        for (const store of stores) await store.close()
        await dir.remove()
      },
    }
  },
})

if (redisReachable('Credentials conformance: redis')) {
  const base = testPrefix('credentials-conformance')
  const admin = adminClient()
  let deployments = 0
  afterAll(async () => {
    await deleteKeys(admin, base)
    await admin.quit()
  })
  describeCredentialsConformance('redis', {
    durable: true,
    shared: true,
    async deployment() {
      const prefix = `${base}:${++deployments}`
      // Each node reaches Redis through a proxy of its own, so a crash cuts that node alone.
      const nodes = new Map<CredentialsNode, { credentials: RedisCredentials; proxy: TcpProxy }>()
      return {
        async node() {
          const proxy = await startTcpProxy(redisUrl)
          // A lease of 3 s (renewed every second) outlasts any stall of a busy machine, and a crashed node's slots lapse within it.
          const credentials = new RedisCredentials({ url: proxy.url, prefix, streamLeaseMs: 3_000, revocationCheckMs: 200 })
          if (!(await credentials.waitUntilReady(5_000))) throw new Error(`RedisCredentials could not connect to ${redisUrl}`)
          const node = { keys: credentials, rate: credentials, streams: credentials }
          nodes.set(node, { credentials, proxy })
          return node
        },
        // Gone without a word: no release, no lease renewal.
        async crash(node) {
          await nodes.get(node)?.proxy.down()
        },
        async close() {
          for (const { credentials, proxy } of nodes.values()) {
            await credentials.close()
            await proxy.close()
          }
          await deleteKeys(admin, prefix)
        },
      }
    },
  })
}

describe('MemoryRateCounter', () => {
  it('with more than 100,000 live windows, a new key does not scan them all: one sweep per doubling, and ended windows are still swept', async () => {
    let now = 0
    const rate = new MemoryRateCounter(() => now)
    // Counts full scans of a large map (the sweep of ended windows is one).
    const iterate = Map.prototype[Symbol.iterator]
    let scans = 0
    const spy = vi.spyOn(Map.prototype, Symbol.iterator).mockImplementation(function (this: Map<unknown, unknown>) {
      if (this.size > 100_000) scans++
      return iterate.call(this)
    })
    try {
      for (let i = 0; i < 150_000; i++) expect((await rate.hit(`create:person-${i}`, 5, 60_000)).ok).toBe(true)
      expect(scans).toBe(1)
      // The window of the first keys ends: their counts start over (as before), and a sweep drops them.
      now = 60_000
      for (let i = 0; i < 150_000; i++) await rate.hit(`create:later-${i}`, 5, 60_000)
      expect(scans).toBeLessThanOrEqual(3)
      for (let i = 0; i < 5; i++) expect((await rate.hit('create:person-0', 5, 60_000)).ok).toBe(true)
      expect(await rate.hit('create:person-0', 5, 60_000)).toEqual({ ok: false, retryAfterMs: 60_000 })
    } finally {
      spy.mockRestore()
    }
  })
})

