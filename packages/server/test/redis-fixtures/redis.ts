/**
 * What the Redis tests share: where Redis is (REDIS_URL, default redis://127.0.0.1:6379), whether
 * it answers, a random key prefix per test file, and deleting a prefix's keys afterwards. They
 * never flush or restart the shared Redis: other test files use it at the same time.
 */
import { randomBytes } from 'node:crypto'
import { afterAll, afterEach, describe, it } from 'vitest'
import { Redis } from 'ioredis'
import { RedisStore, type RedisStoreOptions } from '@jobwire/server'

export const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'

/** Why Redis cannot be used, or null when it answers PING. */
async function redisProblem(): Promise<string | null> {
  const client = new Redis(redisUrl, { lazyConnect: true, connectTimeout: 1000, maxRetriesPerRequest: 0, retryStrategy: () => null })
  client.on('error', () => undefined)
  try {
    await client.connect()
    await client.ping()
    return null
  } catch (error) {
    return `${redisUrl}: ${(error as Error).message}`
  } finally {
    client.disconnect()
  }
}

const problem = await redisProblem()

/**
 * True when Redis answers. Otherwise registers what the run should show instead: outside CI a
 * skipped suite and a console line; in CI (where .ci/run starts Redis), or with
 * JOBWIRE_REDIS_REQUIRED set, a failing test.
 */
export function redisReachable(suite: string): boolean {
  if (problem === null) return true
  const ci = process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== 'false'
  if (ci || (process.env.JOBWIRE_REDIS_REQUIRED ?? '') !== '') {
    describe(suite, () => {
      it('needs Redis at REDIS_URL', () => {
        throw new Error(`Redis is not reachable (${problem}); CI must provide it`)
      })
    })
  } else {
    console.warn(`\n  SKIPPED ${suite}: Redis is not reachable (${problem}). Start one or set REDIS_URL.\n`)
    describe.skip(`${suite} (Redis not reachable)`, () => {
      it('needs Redis', () => undefined)
    })
  }
  return false
}

/** A key prefix no other test run uses. */
export function testPrefix(name: string): string {
  return `jwtest:${name}:${randomBytes(6).toString('hex')}`
}

/** A plain client for the tests themselves (inspecting and damaging keys). Disconnect it after. */
export function adminClient(): Redis {
  const client = new Redis(redisUrl, { maxRetriesPerRequest: 1 })
  client.on('error', () => undefined)
  return client
}

/** Deletes every key under `prefix` through a client of its own (for a test that made no `redisTestRun`). */
export async function deletePrefix(prefix: string): Promise<void> {
  const admin = adminClient()
  await deleteKeys(admin, prefix)
  await admin.quit()
}

/**
 * Every key under `prefix`, sorted: a whole SCAN, cursor to cursor. One call is not enough, however
 * large its COUNT: it covers that many slots of the whole keyspace, which other tests (and
 * benchmarks) on the shared Redis fill too.
 */
export async function keysUnder(client: Redis, prefix: string): Promise<string[]> {
  const keys = new Set<string>()
  let cursor = '0'
  do {
    const [next, batch] = await client.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000)
    cursor = next
    for (const key of batch) keys.add(key)
  } while (cursor !== '0')
  return [...keys].sort()
}

/** Deletes every key under `prefix` at once (in one MULTI, as a FLUSHDB would), and says how many. */
export async function deleteKeys(client: Redis, prefix: string): Promise<number> {
  const all = await keysUnder(client, prefix)
  if (all.length === 0) return 0
  const multi = client.multi()
  for (let i = 0; i < all.length; i += 1000) multi.unlink(...all.slice(i, i + 1000))
  const replies = (await multi.exec()) ?? []
  return replies.reduce((sum, [, count]) => sum + Number(count), 0)
}

/** A RedisStore on `prefix`, connected (rejects if it cannot connect within 5 s). */
export async function openRedisStore(options: Omit<RedisStoreOptions, 'url'> & { url?: string }): Promise<RedisStore> {
  const store = new RedisStore({ url: redisUrl, ...options })
  if (!(await store.waitUntilReady(5000))) {
    await store.close()
    throw new Error(`RedisStore could not connect to ${options.url ?? redisUrl}`)
  }
  return store
}

/** One Redis test file's keys and teardown (see `redisTestRun`). */
export interface RedisTestRun {
  /** The file's own prefix: every key a test writes is under it. */
  base: string
  /** A plain client for inspecting and damaging keys. */
  admin: Redis
  /** Run after each test, newest first. */
  cleanups: (() => Promise<unknown>)[]
  /** A fresh prefix under `base` for one test. */
  nextPrefix(): string
}

/**
 * Sets up a Redis test file: a prefix of its own, an admin client, cleanups after each test (a
 * failing one fails the test only when `strict`), and after all of them the prefix's keys deleted.
 */
export function redisTestRun(name: string, { strict = false } = {}): RedisTestRun {
  const base = testPrefix(name)
  const admin = adminClient()
  const cleanups: (() => Promise<unknown>)[] = []
  let runs = 0
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await (strict ? cleanup() : cleanup().catch(() => undefined))
  })
  afterAll(async () => {
    await deleteKeys(admin, base)
    await admin.quit()
  })
  return {
    base,
    admin,
    cleanups,
    nextPrefix: () => `${base}:${++runs}`,
  }
}
