import { describe, expect, it } from 'vitest'
import { RedisCredentials, type RedisCredentialsOptions } from '@jobwire/server'
import { deleteKeys, redisReachable, redisTestRun, redisUrl } from './redis-fixtures/redis.js'
import { startTcpProxy } from '../../../test/support/tcp-proxy.js'
import { sleep } from './fixtures.js'

/**
 * API keys, rate limits and stream limits shared through Redis by several nodes in one process
 * (one RedisCredentials each, as each `jobwire serve --redis` has). The process tests check the
 * same through real servers; here the faults are finer: a node that stops renewing, a hash Redis
 * lost, a revocation message that never arrives.
 */
if (redisReachable('Redis credentials and limits')) {
  const { admin, cleanups, nextPrefix } = redisTestRun('credentials')

  async function nodes(count: number, options: Partial<RedisCredentialsOptions> = {}): Promise<RedisCredentials[]> {
    const prefix = options.prefix ?? nextPrefix()
    const out: RedisCredentials[] = []
    for (let i = 0; i < count; i++) {
      const node = new RedisCredentials({ url: redisUrl, ...options, prefix })
      cleanups.push(() => node.close())
      expect(await node.waitUntilReady(5000)).toBe(true)
      out.push(node)
    }
    return out
  }

  const record = (id: string) => ({
    id,
    name: `key ${id}`,
    role: 'backend' as const,
    tenant: 'acme',
    types: ['export'],
    hash: 'ab'.repeat(32),
    createdAt: new Date().toISOString(),
    revokedAt: null,
  })

  async function until(condition: () => boolean | Promise<boolean>, what: string): Promise<void> {
    for (let i = 0; i < 500; i++) {
      if (await condition()) return
      await sleep(20)
    }
    throw new Error(`never happened: ${what}`)
  }

  describe('Redis credentials and limits shared by several nodes', () => {
    it('a key created through node A is found and listed on node B; revoked through B, A reads it revoked and hears of it once', async () => {
      const [a, b] = (await nodes(2)) as [RedisCredentials, RedisCredentials]
      const heardOnA: string[] = []
      const heardOnB: string[] = []
      a.watchRevocations((id) => heardOnA.push(id))
      b.watchRevocations((id) => heardOnB.push(id))
      const one = record('key-one')
      await a.create(one)
      await a.create(record('key-two'))
      expect(await b.get('key-one')).toEqual(one)
      expect((await b.list()).map((k) => k.id)).toEqual(['key-one', 'key-two'])
      expect(await b.get('nope')).toBeNull()

      expect(await b.revoke('key-one', '2026-01-01T00:00:00.000Z')).toBe(true)
      expect(await b.revoke('key-one', '2026-02-02T00:00:00.000Z')).toBe(true) // kept: the first revocation time
      expect(await b.revoke('missing', '2026-01-01T00:00:00.000Z')).toBe(false)
      expect((await a.get('key-one'))?.revokedAt).toBe('2026-01-01T00:00:00.000Z')
      expect((await a.get('key-two'))?.revokedAt).toBeNull()
      await until(() => heardOnA.length > 0, 'A hears of the revocation')
      await sleep(100)
      expect(heardOnA).toEqual(['key-one'])
      // B revoked it itself (its Authenticator announces that): the echo is not announced again.
      expect(heardOnB).toEqual([])
    })

    it('a revocation whose pub/sub message is lost (a silently dead connection) is still heard, by the periodic check', async () => {
      const prefix = nextPrefix()
      const proxy = await startTcpProxy(redisUrl)
      cleanups.push(() => proxy.close())
      const [a] = (await nodes(1, { prefix, url: proxy.url, revocationCheckMs: 200 })) as [RedisCredentials]
      const [b] = (await nodes(1, { prefix })) as [RedisCredentials]
      const heard: string[] = []
      a.watchRevocations((id) => heard.push(id))
      await b.create(record('quiet'))
      expect(proxy.blackhole(':revocations')).toBe(1)
      await b.revoke('quiet', new Date().toISOString())
      await until(() => heard.includes('quiet'), 'A hears of the revocation without its pub/sub connection')
    })

    it('a fixed-window rate limit is counted once across three nodes: max hits in total, then retry-after', async () => {
      const all = await nodes(3)
      const answers = await Promise.all(Array.from({ length: 30 }, (_, i) => (all[i % 3] as RedisCredentials).hit('create:acme:ann', 7, 60_000)))
      expect(answers.filter((a) => a.ok)).toHaveLength(7)
      const refused = answers.filter((a) => !a.ok)
      expect(refused).toHaveLength(23)
      for (const answer of refused) expect(answer.retryAfterMs).toBeGreaterThan(0)
      expect(answers.filter((a) => a.ok).every((a) => a.retryAfterMs === 0)).toBe(true)
      // Another subject has its own window.
      expect((await (all[1] as RedisCredentials).hit('create:acme:bob', 7, 60_000)).ok).toBe(true)
    })

    it('stream slots are counted across nodes: max in total, a release on one node frees a slot for another', async () => {
      const [a, b] = (await nodes(2)) as [RedisCredentials, RedisCredentials]
      const grants = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? a : b).acquire('streams:ann', 3)))
      const held = grants.filter((g): g is () => void => g !== null)
      expect(held).toHaveLength(3)
      expect(await a.count('streams:ann')).toBe(3)
      expect(await b.count('streams:ann')).toBe(3)
      expect(await a.acquire('streams:ann', 3)).toBeNull()
      ;(held[0] as () => void)()
      ;(held[0] as () => void)() // idempotent
      await until(async () => (await b.count('streams:ann')) === 2, 'the release reaches Redis')
      const again = await b.acquire('streams:ann', 3)
      expect(again).not.toBeNull()
      expect(await a.count('streams:ann')).toBe(3)
      for (const release of [...held.slice(1), again as () => void]) release()
      await until(async () => (await a.count('streams:ann')) === 0, 'every slot given back')
    })

    it('a node that stops renewing (as one killed -9 would) loses its slots after its lease; the others can open streams again', async () => {
      const prefix = nextPrefix()
      const proxy = await startTcpProxy(redisUrl)
      cleanups.push(() => proxy.close())
      const [doomed] = (await nodes(1, { prefix, url: proxy.url, streamLeaseMs: 600 })) as [RedisCredentials]
      const [survivor] = (await nodes(1, { prefix, streamLeaseMs: 600 })) as [RedisCredentials]
      expect(await doomed.acquire('streams-ip:10.0.0.1', 2)).not.toBeNull()
      expect(await doomed.acquire('streams-ip:10.0.0.1', 2)).not.toBeNull()
      expect(await survivor.acquire('streams-ip:10.0.0.1', 2)).toBeNull()
      await proxy.down() // gone without a word: no release, no renewal
      await until(async () => (await survivor.count('streams-ip:10.0.0.1')) === 0, 'the dead node\'s slots lapse')
      expect(await survivor.acquire('streams-ip:10.0.0.1', 2)).not.toBeNull()
    })

    it('when Redis loses a node\'s slots, the node writes them back from memory on its next renewal', async () => {
      const prefix = nextPrefix()
      const [a, b] = (await nodes(2, { prefix, streamLeaseMs: 600 })) as [RedisCredentials, RedisCredentials]
      expect(await a.acquire('streams:eve', 5)).not.toBeNull()
      expect(await a.acquire('streams:eve', 5)).not.toBeNull()
      expect(await b.acquire('streams:eve', 5)).not.toBeNull()
      expect(await deleteKeys(admin, `${prefix}:streams`)).toBeGreaterThan(0)
      expect(await a.count('streams:eve')).toBe(0)
      await until(async () => (await a.count('streams:eve')) === 3, 'both nodes rewrite their slots')
    })

    it('while Redis is unreachable every call fails fast with unavailable; it recovers by itself', async () => {
      const prefix = nextPrefix()
      const proxy = await startTcpProxy(redisUrl)
      cleanups.push(() => proxy.close())
      const [node] = (await nodes(1, { prefix, url: proxy.url })) as [RedisCredentials]
      await node.create(record('k'))
      await proxy.down()
      const calls = await Promise.allSettled([node.get('k'), node.hit('x', 1, 1000), node.acquire('s', 1), node.revoke('k', new Date().toISOString())])
      for (const call of calls) expect(call).toMatchObject({ status: 'rejected', reason: { code: 'unavailable' } })
      await proxy.up()
      await until(() => node.waitUntilReady(50), 'reconnected')
      expect((await node.get('k'))?.id).toBe('k')
      expect(await node.acquire('s', 1)).not.toBeNull()
    })
  })
}
