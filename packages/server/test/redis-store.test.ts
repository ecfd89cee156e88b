import { afterAll, describe, expect, it, vi } from 'vitest'
import { randomBytes } from 'node:crypto'
import type { JobEvent } from '@jobwire/protocol'
import { defaultCoreLimits, defaultRetention, Dispatcher, JobService, type NewJob, type RedisStore } from '@jobwire/server'
import { describeStoreConformance } from './store-conformance.js'
import { adminClient, deleteKeys, openRedisStore, redisReachable, testPrefix } from './redis-fixtures/redis.js'

// The same contract as memory and SQLite, on a real Redis: each store gets a prefix of its own.
if (redisReachable('Store conformance: redis')) {
  const base = testPrefix('conformance')
  const admin = adminClient()
  let stores = 0
  afterAll(() => admin.quit())
  /**
   * Runs `test` on a key prefix of its own: `open` starts a node on it (each one a node that has
   * seen nothing); afterwards every node opened is closed and the prefix's keys are deleted.
   */
  async function onPrefix(name: string, test: (nodes: { prefix: string; open: () => Promise<RedisStore> }) => Promise<void>): Promise<void> {
    const prefix = `${base}:${name}`
    const opened: RedisStore[] = []
    const open = async (): Promise<RedisStore> => {
      const store = await openRedisStore({ prefix })
      opened.push(store)
      return store
    }
    try {
      await test({ prefix, open })
    } finally {
      for (const store of opened) await store.close()
      await deleteKeys(admin, prefix)
    }
  }
  describeStoreConformance(
    'redis',
    ({ retention }) => openRedisStore({ prefix: `${base}:${++stores}`, ...(retention === undefined ? {} : { retention }) }),
    async () => {
      await deleteKeys(admin, base)
    },
  )

  describe('Redis store: the shared indexes follow every commit', () => {
    // A commit leaves a lease, an expiry or timers that did not change alone (lua/lib/commit.lua's
    // '='): the leases, expiry and deadlines sets must still say what the job's hash says.
    it('leases, expiry and deadlines entries through claim, progress, heartbeat, failure and resume', async () => {
      await onPrefix('indexes', async ({ prefix, open }) => {
        const store = await open()
        const clock = { now: Date.parse('2026-12-05T12:00:00Z') }
        const service = new JobService(store, defaultCoreLimits, () => new Date(clock.now))
        const dispatcher = new Dispatcher(service, () => clock.now)
        const minute = 60_000
        const { job } = await service.createJob({ type: 'indexed', deadlines: { timeoutMs: 10 * minute } })
        const score = async (set: string) => {
          const value = await admin.zscore(`${prefix}:${set}`, job.id)
          return value === null ? null : Number(value)
        }
        const hash = () => admin.hmget(`${prefix}:job:{${job.id}}`, 'lease', 'exp', 'timers')
        expect(await score('leases')).toBeNull()
        expect(await score('expiry')).toBeNull()
        const createdTimers = (await hash())[2]
        expect(createdTimers).not.toBeNull()

        const claimed = await dispatcher.claim({ types: ['indexed'], worker: 'w', leaseMs: minute, waitMs: 0 })
        if (claimed === null) throw new Error('no job claimed')
        const lease = claimed.lease.token
        expect(await score('leases')).toBe(clock.now + minute)
        const deadline = await score('deadlines')
        expect(deadline).toBe(clock.now + 10 * minute)
        const [leaseAtClaim, , timersAtClaim] = await hash()

        // Writes that change none of the three, twice: every entry stays as it was.
        for (const percent of [10, 20]) {
          clock.now += 1000
          await service.appendEvents(job.id, [{ type: 'progress', data: { percent } }], { lease, batch: percent / 10 })
          expect(await score('leases')).toBe(Date.parse('2026-12-05T12:00:00Z') + minute)
          expect(await score('deadlines')).toBe(deadline)
          expect(await score('expiry')).toBeNull()
          const [leaseNow, expiry, timersNow] = await hash()
          // The lease is renumbered (lastBatch), not moved.
          expect(JSON.parse(leaseNow ?? 'null')).toEqual({ ...JSON.parse(leaseAtClaim ?? 'null'), lastBatch: percent / 10 })
          expect([expiry, timersNow]).toEqual([null, timersAtClaim])
        }

        // A heartbeat moves the lease's expiry, and only that.
        clock.now += 1000
        await dispatcher.heartbeat(job.id, lease, 2 * minute)
        expect(await score('leases')).toBe(clock.now + 2 * minute)
        expect(await score('deadlines')).toBe(deadline)
        expect(JSON.parse((await hash())[0] ?? 'null')).toMatchObject({ token: lease, expiresAt: clock.now + 2 * minute })

        // Finished (failed for good): no lease to lapse, no deadline left, an expiry.
        clock.now += 1000
        await service.appendEvents(job.id, [{ type: 'failed', data: { code: 'broken', message: 'broken', retryable: false } }], { lease, batch: 3 })
        expect(await score('leases')).toBeNull()
        expect(await score('deadlines')).toBeNull()
        const finished = await store.getJob(job.id)
        const expiresAt = Date.parse(finished?.finishedAt ?? '') + defaultRetention.ttlMs.failed
        expect(await score('expiry')).toBe(expiresAt)
        expect((await hash())[1]).toBe(String(expiresAt))

        // Resumed: queued again, so it no longer expires.
        clock.now += 1000
        await service.resumeJob(job.id)
        expect(await score('expiry')).toBeNull()
        expect((await hash())[1]).toBeNull()
        expect(await admin.zscore(`${prefix}:queue:indexed`, job.id)).not.toBeNull()
      })
    })
    // A claim removes a job from its type's delayed set only when it waited out a retry backoff
    // (lua/lib/commit.lua's 'queued before' 2); a pick looks up backoffs only when the set holds any.
    it('the delayed set holds a job only while it waits out a retry backoff, and a claim after the backoff leaves it empty', async () => {
      await onPrefix('delayed', async ({ prefix, open }) => {
        const store = await open()
        const clock = { now: Date.parse('2026-12-05T12:00:00Z') }
        const service = new JobService(store, defaultCoreLimits, () => new Date(clock.now))
        const dispatcher = new Dispatcher(service, () => clock.now)
        const claim = () => dispatcher.claim({ types: ['backoff'], worker: 'w', leaseMs: 60_000, waitMs: 0 })
        const score = async (set: string, id: string) => {
          const value = await admin.zscore(`${prefix}:${set}:backoff`, id)
          return value === null ? null : Number(value)
        }
        const { job: plain } = await service.createJob({ type: 'backoff' })
        const first = await claim()
        expect(first?.job.id).toBe(plain.id)
        expect(await score('delayed', plain.id)).toBeNull()
        const failure = { type: 'failed', data: { code: 'flaky', message: 'again', retryable: true } } as const
        const requeued = await service.appendEvents(plain.id, [failure], { lease: first?.lease.token ?? '', batch: 1 })
        expect(requeued.job.status).toBe('queued')
        const retryAt = clock.now + defaultCoreLimits.retryBackoffMs
        expect(await score('delayed', plain.id)).toBe(retryAt)
        expect(await score('queue', plain.id)).not.toBeNull()

        // A second job, never delayed: the first still waits, so the pick passes it over for this one.
        const { job: other } = await service.createJob({ type: 'backoff' })
        expect((await claim())?.job.id).toBe(other.id)
        expect(await score('delayed', other.id)).toBeNull()
        expect(await claim()).toBeNull()

        clock.now = retryAt
        const again = await claim()
        expect(again?.job).toMatchObject({ id: plain.id, attempt: 2 })
        expect(await score('delayed', plain.id)).toBeNull()
        expect(await score('queue', plain.id)).toBeNull()
        expect(await admin.zcard(`${prefix}:delayed:backoff`)).toBe(0)
      })
    })

    // lua/lib/load.lua reads a job's text and kept-apart input only when the hash's `tlen` and
    // `inp` say they may exist; a record an older version wrote has neither field.
    it('a node reads streamed text and a large input back from Redis, also from a record written without tlen and inp (an older version)', async () => {
      await onPrefix('side-keys', async ({ prefix, open }) => {
        const writer = await open()
        const service = new JobService(writer, defaultCoreLimits)
        const dispatcher = new Dispatcher(service)
        const input = { document: 'x'.repeat(2048) }
        const { job: large } = await service.createJob({ type: 'side', input })
        const { job: small } = await service.createJob({ type: 'side', input: { n: 1 } })
        const [one, two] = [await dispatcher.claim({ types: ['side'], worker: 'w', leaseMs: 60_000, waitMs: 0 }), await dispatcher.claim({ types: ['side'], worker: 'w', leaseMs: 60_000, waitMs: 0 })]
        await service.appendEvents(large.id, [{ type: 'chunk', data: { text: 'hello ' } }, { type: 'chunk', data: { text: 'world' } }], { lease: one?.lease.token ?? '', batch: 1 })
        expect(await admin.hmget(`${prefix}:job:{${large.id}}`, 'tlen', 'inp')).toEqual(['11', '1'])
        expect(await admin.hmget(`${prefix}:job:{${small.id}}`, 'tlen', 'inp')).toEqual(['0', '0'])
        expect(two?.job).toMatchObject({ id: small.id, input: { n: 1 }, text: '' })

        // A node that never saw the jobs (nothing cached) reads them whole.
        const reader = await open()
        expect(await reader.getJob(large.id)).toMatchObject({ input, text: 'hello world' })
        expect(await reader.getJob(small.id)).toMatchObject({ input: { n: 1 }, text: '' })

        for (const id of [large.id, small.id]) await admin.hdel(`${prefix}:job:{${id}}`, 'tlen', 'inp')
        const older = await open()
        expect(await older.getJob(large.id)).toMatchObject({ input, text: 'hello world' })
        expect(await older.getJob(small.id)).toMatchObject({ input: { n: 1 }, text: '' })
        // And its next write, from that state, keeps both.
        await new JobService(older, defaultCoreLimits).appendEvents(large.id, [{ type: 'chunk', data: { text: '!' } }], { lease: one?.lease.token ?? '', batch: 2 })
        expect(await (await open()).getJob(large.id)).toMatchObject({ input, text: 'hello world!' })
      })
    })
  })

  describe('Redis store: reads of one job made at once share one', () => {
    it('concurrent reads share a state read after each began: never one older than a write acknowledged before the call', async () => {
      await onPrefix('shared-reads', async ({ open }) => {
        const store = await open()
        const service = new JobService(store, defaultCoreLimits)
        const { job } = await service.createJob({ type: 'shared-reads', dispatch: false })
        // Many at once: the first reads alone, the others share the read that follows it.
        const together = await Promise.all(Array.from({ length: 50 }, () => store.getJob(job.id)))
        expect(new Set(together.slice(1)).size).toBe(1)
        expect(together[1]).toEqual(together[0])
        // Reads racing writes: each sees at least every write acknowledged before it was called.
        let acknowledged = 1
        for (let round = 0; round < 30; round++) {
          const writing = service.appendEvents(job.id, [{ type: 'chunk', data: { text: `${round} ` } }]).then((result) => {
            acknowledged = result.job.seq
          })
          const reads = Array.from({ length: 5 }, async (_, i) => {
            if (i > 2) await writing
            const floor = acknowledged
            const read = await store.getJob(job.id)
            expect(read?.seq).toBeGreaterThanOrEqual(floor)
          })
          await Promise.all([writing, ...reads])
        }
        const final = await store.getJob(job.id)
        // created, the `started` of the first write (the backend takes the job over), 30 chunks.
        expect(final?.seq).toBe(32)
        expect(final?.text).toBe(Array.from({ length: 30 }, (_, round) => `${round} `).join(''))
      })
    })
  })

  describe('Redis store: creates issued together', () => {
    // The creates a node issues in one pass of its event loop go in one call of lua/create.lua,
    // each created or answered on its own, in order.
    it('each is created or answered on its own: a repeated idempotency key gets the first job, an id taken fails alone, and every index holds what it should', async () => {
      await onPrefix('create-batch', async ({ prefix, open }) => {
        const store = await open()
        const at = new Date().toISOString()
        const id = () => `job_${randomBytes(16).toString('base64url')}`
        const job = (overrides: Partial<NewJob>): NewJob => ({ id: id(), type: 'batched', input: null, owner: null, idempotencyKey: null, dispatch: true, maxAttempts: 3, at, ...overrides })
        const taken = await store.createJob(job({}))
        const large = { document: 'y'.repeat(4096) }
        const owner = { tenant: 'acme', user: 'ada' }
        const [first, repeat, clash, owned, selfRun] = await Promise.allSettled([
          store.createJob(job({ idempotencyKey: 'order-7' })),
          store.createJob(job({ idempotencyKey: 'order-7', input: { other: true } })),
          store.createJob(job({ id: taken.job.id })),
          store.createJob(job({ input: large, owner, deadlines: { timeoutMs: 60_000, queueTimeoutMs: 30_000 } })),
          store.createJob(job({ type: 'self-run', dispatch: false })),
        ])
        if (first.status !== 'fulfilled' || repeat.status !== 'fulfilled' || owned.status !== 'fulfilled' || selfRun.status !== 'fulfilled') throw new Error('a create failed')
        expect(first.value.created).toBe(true)
        expect(repeat.value).toEqual({ created: false, job: first.value.job })
        expect(clash.status).toBe('rejected')
        expect(owned.value.created).toBe(true)
        expect(selfRun.value.created).toBe(true)

        const ids = [taken.job.id, first.value.job.id, owned.value.job.id, selfRun.value.job.id]
        expect(await admin.zcard(`${prefix}:jobs`)).toBe(4)
        for (const one of ids) expect(await admin.zscore(`${prefix}:idx:status:queued`, one)).not.toBeNull()
        expect(await admin.zrange(`${prefix}:queue:batched`, '0', '-1')).toEqual([taken.job.id, first.value.job.id, owned.value.job.id])
        expect(await admin.exists(`${prefix}:queue:self-run`)).toBe(0)
        expect(await admin.zrange(`${prefix}:idx:tenant:acme`, '0', '-1')).toEqual([owned.value.job.id])
        expect(await admin.zrange(`${prefix}:deadlines`, '0', '-1')).toEqual([owned.value.job.id])
        expect(await admin.get(`${prefix}:idem:order-7`)).toBe(first.value.job.id)
        // Ordinals in the order the creates were issued.
        const ords = await Promise.all(ids.map((one) => admin.hget(`${prefix}:job:{${one}}`, 'ord')))
        expect(ords.map(Number)).toEqual([1, 2, 3, 4])

        // A node that never saw them reads them whole.
        const reader = await open()
        expect(await reader.getJob(owned.value.job.id)).toEqual(owned.value.job)
        expect(await reader.getJob(owned.value.job.id)).toMatchObject({ input: large, owner })
        expect(await reader.getJob(taken.job.id)).toEqual(taken.job)
        expect((await reader.readLog(first.value.job.id, 0, 10))?.events.map((event) => event.type)).toEqual(['created'])
      })
    })
  })

  describe("Redis store: a commit's events", () => {
    // A commit's events travel inside one string of fields and are cut out of it for the log and
    // joined again for the channel (lua/lib/commit.lua): text of several bytes per character, and
    // the separators of a JSON array inside strings, must come out whole in both.
    it('several events with multi-byte text reach the log and another node exactly as written', async () => {
      await onPrefix('event-bytes', async ({ open }) => {
        const writer = await open()
        const watcher = await open()
        const service = new JobService(writer, defaultCoreLimits)
        const { job } = await service.createJob({ type: 'bytes' })
        const heard: JobEvent[] = []
        const unsubscribe = watcher.subscribe(job.id, (events) => heard.push(...events))
        // The watcher's subscription must be confirmed before the write (listen first, then look).
        await watcher.getRecord(job.id)
        const texts = ['é, ü], and [', '😀 — 漢字 "quoted" \\ \u2028 tail', ',', 'plain']
        await service.appendEvents(job.id, [
          ...texts.map((text) => ({ type: 'chunk' as const, data: { text } })),
          { type: 'progress', data: { percent: 50, message: 'ünïcode, ]"' } },
        ])
        const expected = [...texts.map((text) => ({ type: 'chunk', data: { text } })), { type: 'progress', data: { percent: 50, message: 'ünïcode, ]"' } }]
        const fresh = await open()
        // A write without a lease starts the job: `started` goes in the same commit, first.
        const log = await fresh.readLog(job.id, 1, 10)
        expect(log?.events.map(({ type }) => type)).toEqual(['started', 'chunk', 'chunk', 'chunk', 'chunk', 'progress'])
        expect(log?.events.slice(1).map(({ type, data }) => ({ type, data }))).toEqual(expected)
        expect((await fresh.getJob(job.id))?.text).toBe(texts.join(''))
        await vi.waitFor(() => expect(heard).toHaveLength(6))
        expect(heard.slice(1).map(({ type, data }) => ({ type, data }))).toEqual(expected)
        unsubscribe()
      })
    })
  })

  describe('Redis store: scripts', () => {
    // The store sends its scripts by SHA once a connection has run them; a Redis that lost them
    // (SCRIPT FLUSH, a restart without persistence, a failover) answers NOSCRIPT, and the write is
    // sent again with the script's text instead of failing.
    it('a write after Redis lost its scripts (SCRIPT FLUSH) loads them again and lands, once', async () => {
      await onPrefix('noscript', async ({ open }) => {
        const store = await open()
        const service = new JobService(store, defaultCoreLimits)
        const { job } = await service.createJob({ type: 'noscript' })
        await service.appendEvents(job.id, [{ type: 'progress', data: { percent: 10 } }])
        await admin.script('FLUSH')
        await service.appendEvents(job.id, [{ type: 'progress', data: { percent: 20 } }])
        await service.appendEvents(job.id, [{ type: 'progress', data: { percent: 30 } }])
        const log = await store.readLog(job.id, 0, 10)
        expect(log?.events.map((event) => (event.type === 'progress' ? event.data.percent : event.type))).toEqual(['created', 'started', 10, 20, 30])
        expect((await store.getRecord(job.id))?.job.progress?.percent).toBe(30)
      })
    })

    // A claim runs two scripts (the pick, then its commits) where a write runs one: after a
    // NOSCRIPT each is sent again with its text (connection.ts: run), and no job is taken twice.
    it('a claim after Redis lost its scripts (SCRIPT FLUSH) takes each job once and its completion lands', async () => {
      await onPrefix('noscript-claim', async ({ open }) => {
        const store = await open()
        const service = new JobService(store, defaultCoreLimits)
        const created = []
        for (let i = 0; i < 3; i++) created.push((await service.createJob({ type: 'noscript-claim', dispatch: true })).job.id)
        await admin.script('FLUSH')
        const now = Date.now()
        const claimed = await store.claim(['noscript-claim'], now, 2, (job) => ({
          events: [{ type: 'started', data: { attempt: job.attempt + 1, worker: 'w' } }],
          lease: { token: `t-${job.id}`, worker: 'w', expiresAt: now + 60_000, lastBatch: 0 },
        }))
        expect(claimed.map((result) => result.job.id)).toEqual(created.slice(0, 2))
        await admin.script('FLUSH')
        const first = created[0] as string
        await service.appendEvents(first, [{ type: 'completed', data: { result: { ok: true } } }], { lease: `t-${first}` })
        const log = await store.readLog(first, 0, 10)
        expect(log?.events.map((event) => event.type)).toEqual(['created', 'started', 'completed'])
        expect((await store.getRecord(first))?.job).toMatchObject({ status: 'completed', attempt: 1, result: { ok: true } })
        expect((await store.getRecord(created[2] as string))?.job.status).toBe('queued')
      })
    })

    // A commit's fields travel as one string split at U+001F: a type holding it, given in code
    // (the HTTP API admits only letters, digits and _ . : -), would shift every field after it.
    it('refuses to create a job whose type holds U+001F, and writes nothing', async () => {
      await onPrefix('separator', async ({ prefix, open }) => {
        const store = await open()
        const service = new JobService(store, defaultCoreLimits)
        await expect(service.createJob({ type: 'a\u001fb' })).rejects.toMatchObject({ code: 'invalid_request', details: { field: 'type' } })
        expect(await admin.keys(`${prefix}:job:*`)).toEqual([])
        expect(await admin.exists(`${prefix}:jobs`, `${prefix}:queue:a\u001fb`)).toBe(0)
      })
    })
  })
}
