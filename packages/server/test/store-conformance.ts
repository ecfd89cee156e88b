import { randomBytes } from 'node:crypto'
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest'
import {
  applyEvent,
  isTerminalEvent,
  JobwireError,
  reduceEvents,
  type ErrorCode,
  type EventDraft,
  type JobEvent,
  type JobState,
  type StreamMessage,
} from '@jobwire/protocol'
import {
  defaultRetention,
  JobService,
  type CoreLimits,
  type NewJob,
  type Retention,
  type Store,
  type StreamSink,
} from '@jobwire/server'

export type MakeStore = (opts: { retention?: Retention }) => Promise<Store> | Store

/**
 * The contract every Store backend must meet, exercised only through the Store interface and
 * JobService. `makeStore` must return a fresh, empty store on each call (its own file, key
 * prefix or database); the suite closes every store it made after each test, then calls
 * `cleanup` once at the end.
 */
export function describeStoreConformance(name: string, makeStore: MakeStore, cleanup?: () => Promise<void> | void): void {
  describe(`Store conformance: ${name}`, () => {
    const opened: Store[] = []

    async function open(options: { retention?: Partial<Retention>; limits?: Partial<CoreLimits> } = {}) {
      const retention = options.retention === undefined ? undefined : { ...defaultRetention, ...options.retention }
      const store = await makeStore(retention === undefined ? {} : { retention })
      opened.push(store)
      return { store, service: new JobService(store, options.limits) }
    }

    afterEach(async () => {
      await Promise.all(opened.splice(0).map((store) => store.close()))
    })
    if (cleanup !== undefined) afterAll(cleanup)

    describe('lifecycle of the store', () => {
      it('ping resolves while the store is open', async () => {
        const { store } = await open()
        await expect(store.ping()).resolves.toBeUndefined()
      })

      it('a closed store refuses calls with unavailable, and closing twice is harmless', async () => {
        const { store } = await open()
        const { job } = await store.createJob(newJob())
        await store.close()
        await store.close()
        await expectCode(store.ping(), 'unavailable')
        await expectCode(store.getJob(job.id), 'unavailable')
        await expectCode(store.readLog(job.id, 0, 10), 'unavailable')
        await expectCode(store.append(job.id, () => [started()]), 'unavailable')
        await expectCode(store.createJob(newJob()), 'unavailable')
        await expectCode(store.listJobs({ limit: 10 }), 'unavailable')
      })
    })

    describe('createJob', () => {
      it('writes created as seq 1 and the job starts queued', async () => {
        const { store } = await open()
        const input = newJob({ type: 'transcode', input: { file: 'a.wav' }, owner: { tenant: 't1', user: 'u1' } })
        const { job, created } = await store.createJob(input)
        expect(created).toBe(true)
        expect(job).toMatchObject({
          id: input.id,
          type: 'transcode',
          input: { file: 'a.wav' },
          owner: { tenant: 't1', user: 'u1' },
          status: 'queued',
          seq: 1,
          attempt: 0,
          createdAt: input.at,
        })
        const range = await store.readLog(input.id, 0, 10)
        expect(range).toEqual({
          events: [
            {
              jobId: input.id,
              seq: 1,
              type: 'created',
              at: input.at,
              data: { type: 'transcode', input: { file: 'a.wav' }, owner: { tenant: 't1', user: 'u1' }, dispatch: true, maxAttempts: 3 },
            },
          ],
          firstSeq: 1,
          head: 1,
          status: 'queued',
        })
        expect(await store.getJob(input.id)).toEqual(job)
      })

      it('an idempotency key seen before returns the first job with created: false and writes nothing', async () => {
        const { store } = await open()
        const first = await store.createJob(newJob({ idempotencyKey: 'order-42' }))
        const second = await store.createJob(newJob({ idempotencyKey: 'order-42', input: { other: true } }))
        expect(second.created).toBe(false)
        expect(second.job).toEqual(first.job)
        expect((await store.listJobs({ limit: 10 })).jobs).toHaveLength(1)
        expect((await store.readLog(first.job.id, 0, 10))?.events).toHaveLength(1)
      })

      it('the existing job returned for an idempotency key is its current state', async () => {
        const { store, service } = await open()
        const first = await store.createJob(newJob({ type: 'export', idempotencyKey: 'k' }))
        await service.appendEvents(first.job.id, [{ type: 'progress', data: { percent: 50 } }])
        const again = await service.createJob({ type: 'export', idempotencyKey: 'k' })
        expect(again.created).toBe(false)
        expect(again.job).toMatchObject({ id: first.job.id, status: 'running', seq: 3 })
      })

      it('different idempotency keys, and no key, make different jobs', async () => {
        const { store } = await open()
        const a = await store.createJob(newJob({ idempotencyKey: 'a' }))
        const b = await store.createJob(newJob({ idempotencyKey: 'b' }))
        const c = await store.createJob(newJob())
        const d = await store.createJob(newJob())
        expect([a, b, c, d].every((r) => r.created)).toBe(true)
        expect(new Set([a, b, c, d].map((r) => r.job.id)).size).toBe(4)
      })

      it('reusing an idempotency key for another job type is refused with idempotency_conflict', async () => {
        const { service } = await open()
        await service.createJob({ type: 'export', idempotencyKey: 'k' })
        await expectCode(service.createJob({ type: 'import', idempotencyKey: 'k' }), 'idempotency_conflict')
      })

      it('concurrent creates with one idempotency key make exactly one job', async () => {
        const { store } = await open()
        const results = await Promise.all(Array.from({ length: 20 }, () => store.createJob(newJob({ idempotencyKey: 'once' }))))
        expect(results.filter((r) => r.created)).toHaveLength(1)
        expect(new Set(results.map((r) => r.job.id)).size).toBe(1)
        expect((await store.listJobs({ limit: 100 })).jobs).toHaveLength(1)
      })

      it('getJob answers null for an unknown job', async () => {
        const { store } = await open()
        expect(await store.getJob(jobId())).toBeNull()
      })

      it('JobService.getJob rejects an unknown job with job_not_found', async () => {
        const { service } = await open()
        await expectCode(service.getJob(jobId()), 'job_not_found')
      })
    })

    describe('append', () => {
      it('numbers a batch contiguously after the head and reduces it into the job', async () => {
        const { store } = await open()
        const { job: created } = await store.createJob(newJob())
        const result = await store.append(created.id, () => [
          { type: 'started', data: { attempt: 1, worker: 'w1' } },
          { type: 'progress', data: { stage: 'decoding', percent: 10 } },
          { type: 'chunk', data: { text: 'Hello, ' } },
          { type: 'chunk', data: { text: 'world' } },
        ])
        expect(result.events.map((e) => [e.seq, e.type])).toEqual([
          [2, 'started'],
          [3, 'progress'],
          [4, 'chunk'],
          [5, 'chunk'],
        ])
        for (const event of result.events) {
          expect(event.jobId).toBe(created.id)
          expect(Number.isNaN(Date.parse(event.at))).toBe(false)
        }
        expect(result.job).toMatchObject({ seq: 5, status: 'running', text: 'Hello, world', progress: { stage: 'decoding', percent: 10 } })
        expect(await store.getJob(created.id)).toEqual(result.job)
        const log = await store.readLog(created.id, 0, 100)
        expect(log?.events.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5])
        expect(log?.events.slice(1)).toEqual(result.events)
        // The stored state is exactly the reduction of the stored log.
        expect(reduceEvents(log?.events ?? [])).toEqual(result.job)
      })

      it('the next batch continues from the head the previous one left', async () => {
        const { store } = await open()
        const { job } = await store.createJob(newJob())
        await store.append(job.id, () => [started()])
        const second = await store.append(job.id, () => [chunk('a'), chunk('b')])
        const third = await store.append(job.id, () => [chunk('c')])
        expect(second.events.map((e) => e.seq)).toEqual([3, 4])
        expect(third.events.map((e) => e.seq)).toEqual([5])
        expect(third.job.text).toBe('abc')
      })

      it('hands the plan the current state of the job', async () => {
        const { store } = await open()
        const { job } = await store.createJob(newJob())
        await store.append(job.id, () => [started(), chunk('xyz')])
        let seen: JobState | undefined
        await store.append(job.id, (current) => {
          seen = current
          return []
        })
        expect(seen).toMatchObject({ id: job.id, seq: 3, status: 'running', text: 'xyz' })
      })

      it('an empty plan appends nothing and leaves seq where it was', async () => {
        const { store } = await open()
        const { job } = await store.createJob(newJob())
        const result = await store.append(job.id, () => [])
        expect(result.events).toEqual([])
        expect(result.job.seq).toBe(1)
        expect((await store.getJob(job.id))?.seq).toBe(1)
      })

      it('a plan that throws appends nothing, rejects with its error and leaves seq unchanged', async () => {
        const { store } = await open()
        const { job } = await store.createJob(newJob())
        await store.append(job.id, () => [started()])
        const refusal = new JobwireError('invalid_request', { reason: 'no' })
        await expect(
          store.append(job.id, () => {
            throw refusal
          }),
        ).rejects.toBe(refusal)
        expect((await store.getJob(job.id))?.seq).toBe(2)
        expect((await store.readLog(job.id, 0, 100))?.head).toBe(2)
        const next = await store.append(job.id, () => [chunk('after')])
        expect(next.events[0]?.seq).toBe(3)
      })

      it('a batch the reducer refuses halfway through is not appended at all', async () => {
        const { store } = await open()
        const { job } = await store.createJob(newJob())
        // The third event is illegal (started on a running job), so the first two must not stick either.
        await expect(store.append(job.id, () => [started(), chunk('x'), started()])).rejects.toThrow()
        const after = await store.getJob(job.id)
        expect(after).toMatchObject({ seq: 1, status: 'queued', text: '' })
        expect((await store.readLog(job.id, 0, 100))?.events.map((e) => e.seq)).toEqual([1])
      })

      it('append to an unknown job rejects with job_not_found and never runs the plan', async () => {
        const { store } = await open()
        const plan = vi.fn(() => [started()])
        await expectCode(store.append(jobId(), plan), 'job_not_found')
        expect(plan).not.toHaveBeenCalled()
      })
    })

    describe('readLog', () => {
      it('returns the events after a position, at most limit of them, with firstSeq, head and status', async () => {
        const { store } = await open()
        const id = await jobWithEvents(store, 10)
        const all = await store.readLog(id, 0, 100)
        expect(all?.events.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
        expect(all).toMatchObject({ firstSeq: 1, head: 10, status: 'running' })

        const middle = await store.readLog(id, 3, 4)
        expect(middle?.events.map((e) => e.seq)).toEqual([4, 5, 6, 7])
        expect(middle).toMatchObject({ firstSeq: 1, head: 10, status: 'running' })

        expect((await store.readLog(id, 8, 100))?.events.map((e) => e.seq)).toEqual([9, 10])
        expect((await store.readLog(id, 9, 1))?.events.map((e) => e.seq)).toEqual([10])
      })

      it('at the head returns no events but still reports head and status', async () => {
        const { store } = await open()
        const id = await jobWithEvents(store, 4)
        expect(await store.readLog(id, 4, 100)).toEqual({ events: [], firstSeq: 1, head: 4, status: 'running' })
      })

      it('beyond the head returns no events and the real head, so callers can refuse the position', async () => {
        const { store } = await open()
        const id = await jobWithEvents(store, 4)
        expect(await store.readLog(id, 9, 100)).toMatchObject({ events: [], head: 4 })
      })

      it('reports the status a terminal event left', async () => {
        const { store, service } = await open()
        const id = await jobWithEvents(store, 3)
        await service.appendEvents(id, [{ type: 'completed', data: { result: 'ok' } }])
        expect(await store.readLog(id, 0, 100)).toMatchObject({ head: 4, status: 'completed' })
      })

      it('answers null for an unknown job', async () => {
        const { store } = await open()
        expect(await store.readLog(jobId(), 0, 10)).toBeNull()
      })
    })

    describe('log cap', () => {
      it('keeps only the newest maxEventsPerJob events and moves firstSeq', async () => {
        const { store } = await open({ retention: { maxEventsPerJob: 5 } })
        const id = await jobWithEvents(store, 12)
        const range = await store.readLog(id, 0, 100)
        expect(range).toMatchObject({ firstSeq: 8, head: 12 })
        expect(range?.events.map((e) => e.seq)).toEqual([8, 9, 10, 11, 12])
      })

      it('the snapshot still holds the effect of trimmed events', async () => {
        const { store } = await open({ retention: { maxEventsPerJob: 5 } })
        const id = await jobWithEvents(store, 12)
        const job = await store.getJob(id)
        // Events 3..12 were chunks "3".."12"; most of them are gone from the log.
        expect(job?.text).toBe('3456789101112')
        expect(job).toMatchObject({ seq: 12, status: 'running', attempt: 1 })
      })

      it('reading from a trimmed position shows firstSeq beyond after + 1', async () => {
        const { store } = await open({ retention: { maxEventsPerJob: 5 } })
        const id = await jobWithEvents(store, 12)
        const range = await store.readLog(id, 2, 100)
        expect(range?.firstSeq).toBe(8)
        expect(range?.firstSeq).toBeGreaterThan(2 + 1)
        // Right before firstSeq is the oldest position that can still be resumed exactly.
        const edge = await store.readLog(id, 7, 100)
        expect(edge?.firstSeq).toBe(8)
        expect(edge?.events.map((e) => e.seq)).toEqual([8, 9, 10, 11, 12])
      })

      it('a batch larger than the cap keeps only its newest events', async () => {
        const { store } = await open({ retention: { maxEventsPerJob: 5 } })
        const { job } = await store.createJob(newJob())
        const result = await store.append(job.id, () => [started(), ...Array.from({ length: 9 }, (_, i) => chunk(String(i)))])
        expect(result.events).toHaveLength(10)
        const range = await store.readLog(job.id, 0, 100)
        expect(range).toMatchObject({ firstSeq: 7, head: 11 })
        expect(range?.events.map((e) => e.seq)).toEqual([7, 8, 9, 10, 11])
        expect(result.job.text).toBe('012345678')
      })

      it('a log shorter than the cap is not trimmed', async () => {
        const { store } = await open({ retention: { maxEventsPerJob: 5 } })
        const id = await jobWithEvents(store, 5)
        expect(await store.readLog(id, 0, 100)).toMatchObject({ firstSeq: 1, head: 5 })
      })
    })

    describe('subscribe', () => {
      it('delivers committed events in seq order, and nothing after unsubscribe', async () => {
        const { store, service } = await open()
        const { job } = await service.createJob({ type: 'watch' })
        const heard: number[] = []
        const witness: number[] = []
        const unsubscribe = store.subscribe(job.id, (events) => heard.push(...events.map((e) => e.seq)))
        store.subscribe(job.id, (events) => witness.push(...events.map((e) => e.seq)))
        await service.appendEvents(job.id, [chunk('a'), chunk('b')])
        await service.appendEvents(job.id, [chunk('c')])
        await vi.waitFor(() => expect(heard).toEqual([2, 3, 4, 5]))
        unsubscribe()
        await service.appendEvents(job.id, [chunk('d')])
        // Once a listener still subscribed has heard seq 6, the unsubscribed one would have too.
        await vi.waitFor(() => expect(witness).toEqual([2, 3, 4, 5, 6]))
        expect(heard).toEqual([2, 3, 4, 5])
      })

      it('a listener registered before createJob hears the created event', async () => {
        const { store } = await open()
        const input = newJob()
        const heard: JobEvent[] = []
        store.subscribe(input.id, (events) => heard.push(...events))
        await store.createJob(input)
        await vi.waitFor(() => expect(heard.map((e) => [e.seq, e.type])).toEqual([[1, 'created']]))
      })

      it('delivers the same events the append returned', async () => {
        const { store } = await open()
        const { job } = await store.createJob(newJob())
        const heard: JobEvent[] = []
        store.subscribe(job.id, (events) => heard.push(...events))
        const result = await store.append(job.id, () => [started(), chunk('x')])
        await vi.waitFor(() => expect(heard).toEqual(result.events))
      })

      it('a listener of one job hears nothing of another job', async () => {
        const { store } = await open()
        const a = (await store.createJob(newJob())).job.id
        const b = (await store.createJob(newJob())).job.id
        const heardA: number[] = []
        const heardB: number[] = []
        store.subscribe(a, (events) => heardA.push(...events.map((e) => e.seq)))
        store.subscribe(b, (events) => heardB.push(...events.map((e) => e.seq)))
        await store.append(b, () => [started(), chunk('b')])
        await vi.waitFor(() => expect(heardB).toEqual([2, 3]))
        expect(heardA).toEqual([])
      })

      it('a refused batch and an empty plan reach no listener', async () => {
        const { store } = await open()
        const { job } = await store.createJob(newJob())
        const heard: number[] = []
        store.subscribe(job.id, (events) => heard.push(...events.map((e) => e.seq)))
        await expect(store.append(job.id, () => [started(), started()])).rejects.toThrow()
        await store.append(job.id, () => [])
        await store.append(job.id, () => [started()])
        await vi.waitFor(() => expect(heard).toEqual([2]))
      })

      it('a listener that throws does not keep events from the other listeners', async () => {
        const { store } = await open()
        const { job } = await store.createJob(newJob())
        const heard: number[] = []
        store.subscribe(job.id, () => {
          throw new Error('broken subscriber')
        })
        store.subscribe(job.id, (events) => heard.push(...events.map((e) => e.seq)))
        await store.append(job.id, () => [started()])
        await store.append(job.id, () => [chunk('x')])
        await vi.waitFor(() => expect(heard).toEqual([2, 3]))
      })
    })

    describe('listJobs', () => {
      async function sampleJobs(store: Store, service: JobService) {
        const specs = [
          { type: 'export', owner: { tenant: 'acme', user: 'ann' } },
          { type: 'import', owner: { tenant: 'acme', user: 'bob' } },
          { type: 'export', owner: { tenant: 'globex', user: 'ann' } },
          { type: 'export', owner: null },
          { type: 'import', owner: { tenant: 'acme', user: 'ann' } },
          { type: 'export', owner: { tenant: 'acme', user: 'bob' } },
          { type: 'report', owner: { tenant: 'globex', user: 'cid' } },
        ]
        const ids: string[] = []
        for (const spec of specs) ids.push((await store.createJob(newJob(spec))).job.id)
        await service.appendEvents(ids[1] as string, [chunk('x')])
        await service.appendEvents(ids[2] as string, [{ type: 'completed', data: { result: null } }])
        await service.cancelJob(ids[4] as string)
        await service.appendEvents(ids[6] as string, [chunk('y')])
        return ids
      }

      it('lists newest first', async () => {
        const { store, service } = await open()
        const ids = await sampleJobs(store, service)
        const page = await store.listJobs({ limit: 100 })
        expect(page.jobs.map((j) => j.id)).toEqual([...ids].reverse())
        expect(page.nextCursor).toBeNull()
      })

      it('lists jobs with their current state', async () => {
        const { store, service } = await open()
        const ids = await sampleJobs(store, service)
        const page = await store.listJobs({ limit: 100 })
        for (const job of page.jobs) expect(job).toEqual(await store.getJob(job.id))
        expect(page.jobs.find((j) => j.id === ids[2])?.status).toBe('completed')
      })

      it('filters by status, type, tenant and user, alone and combined', async () => {
        const { store, service } = await open()
        const ids = await sampleJobs(store, service)
        const list = async (query: Omit<Parameters<Store['listJobs']>[0], 'limit'>) =>
          (await store.listJobs({ ...query, limit: 100 })).jobs.map((j) => ids.indexOf(j.id))
        expect(await list({ status: 'running' })).toEqual([6, 1])
        expect(await list({ status: 'queued' })).toEqual([5, 3, 0])
        expect(await list({ status: 'completed' })).toEqual([2])
        expect(await list({ status: 'cancelled' })).toEqual([4])
        expect(await list({ status: 'failed' })).toEqual([])
        expect(await list({ type: 'export' })).toEqual([5, 3, 2, 0])
        expect(await list({ tenant: 'acme' })).toEqual([5, 4, 1, 0])
        expect(await list({ user: 'ann' })).toEqual([4, 2, 0])
        expect(await list({ tenant: 'acme', user: 'ann' })).toEqual([4, 0])
        expect(await list({ tenant: 'acme', user: 'bob', type: 'export' })).toEqual([5])
        expect(await list({ tenant: 'acme', status: 'queued' })).toEqual([5, 0])
        expect(await list({ tenant: 'nobody' })).toEqual([])
      })

      it('cursor pagination walks every job once, newest first, and the last page has no cursor', async () => {
        const { store, service } = await open()
        const ids = await sampleJobs(store, service)
        for (const limit of [1, 2, 3, 7, 10]) {
          const pages = await walk(store, { limit })
          expect(pages.flat(), `limit ${limit}`).toEqual([...ids].reverse())
          expect(pages.length, `limit ${limit}`).toBe(Math.max(1, Math.ceil(ids.length / limit)))
          for (const page of pages.slice(0, -1)) expect(page).toHaveLength(limit)
        }
      })

      it('cursor pagination keeps the filter across pages', async () => {
        const { store, service } = await open()
        const ids = await sampleJobs(store, service)
        const pages = await walk(store, { limit: 1, tenant: 'acme' })
        expect(pages.flat()).toEqual([ids[5], ids[4], ids[1], ids[0]])
      })

      it('jobs created while paging appear on no later page', async () => {
        const { store, service } = await open()
        const ids = await sampleJobs(store, service)
        const first = await store.listJobs({ limit: 3 })
        await store.createJob(newJob())
        const rest = await walk(store, { limit: 3 }, first.nextCursor)
        expect([...first.jobs.map((j) => j.id), ...rest.flat()]).toEqual([...ids].reverse())
      })

      it('an empty store lists nothing and no cursor', async () => {
        const { store } = await open()
        expect(await store.listJobs({ limit: 10 })).toEqual({ jobs: [], nextCursor: null })
      })
    })

    describe('sweep', () => {
      const minute = 60_000
      const ttl = { completed: 10 * minute, failed: 2 * minute, cancelled: 5 * minute }

      async function finishedAndUnfinished(store: Store, service: JobService) {
        const make = async () => (await store.createJob(newJob())).job.id
        const completed = await make()
        await service.appendEvents(completed, [{ type: 'completed', data: { result: 1 } }])
        const failed = await make()
        await service.appendEvents(failed, [{ type: 'failed', data: { code: 'x', message: 'y', retryable: false } }])
        const cancelled = await make()
        await service.cancelJob(cancelled)
        const running = await make()
        await service.appendEvents(running, [chunk('still going')])
        const queued = await make()
        return { completed, failed, cancelled, running, queued }
      }

      it('deletes finished jobs past their TTL and keeps running and queued ones', async () => {
        const { store, service } = await open({ retention: { ttlMs: ttl } })
        const jobs = await finishedAndUnfinished(store, service)
        expect(await store.sweep(Date.now() + 11 * minute)).toEqual({ expiredJobs: 3 })
        for (const id of [jobs.completed, jobs.failed, jobs.cancelled]) {
          expect(await store.getJob(id)).toBeNull()
          expect(await store.readLog(id, 0, 10)).toBeNull()
        }
        expect((await store.getJob(jobs.running))?.status).toBe('running')
        expect((await store.getJob(jobs.queued))?.status).toBe('queued')
        expect((await store.listJobs({ limit: 10 })).jobs.map((j) => j.id)).toEqual([jobs.queued, jobs.running])
      })

      it('keeps finished jobs whose TTL has not passed', async () => {
        const { store, service } = await open({ retention: { ttlMs: ttl } })
        const jobs = await finishedAndUnfinished(store, service)
        expect(await store.sweep(Date.now())).toEqual({ expiredJobs: 0 })
        for (const id of Object.values(jobs)) expect(await store.getJob(id)).not.toBeNull()
      })

      it('applies the TTL of each terminal status', async () => {
        const { store, service } = await open({ retention: { ttlMs: ttl } })
        const jobs = await finishedAndUnfinished(store, service)
        // Past failed's 2 minutes, before cancelled's 5 and completed's 10.
        expect(await store.sweep(Date.now() + 3 * minute)).toEqual({ expiredJobs: 1 })
        expect(await store.getJob(jobs.failed)).toBeNull()
        expect(await store.getJob(jobs.cancelled)).not.toBeNull()
        expect(await store.sweep(Date.now() + 6 * minute)).toEqual({ expiredJobs: 1 })
        expect(await store.getJob(jobs.cancelled)).toBeNull()
        expect(await store.getJob(jobs.completed)).not.toBeNull()
        expect(await store.sweep(Date.now() + 11 * minute)).toEqual({ expiredJobs: 1 })
        expect(await store.getJob(jobs.completed)).toBeNull()
        expect(await store.sweep(Date.now() + 1000 * minute)).toEqual({ expiredJobs: 0 })
      })

      it('frees the idempotency key of a swept job', async () => {
        const { store, service } = await open({ retention: { ttlMs: ttl } })
        const first = await service.createJob({ type: 'export', idempotencyKey: 'nightly' })
        await service.cancelJob(first.job.id)
        await store.sweep(Date.now() + 6 * minute)
        const again = await service.createJob({ type: 'export', idempotencyKey: 'nightly' })
        expect(again.created).toBe(true)
        expect(again.job.id).not.toBe(first.job.id)
        expect(again.job.status).toBe('queued')
      })
    })

    describe('concurrent appends', () => {
      it('200 parallel appendEvents on one job get seqs 1..N exactly once and text in seq order', async () => {
        const { store, service } = await open()
        const { job } = await service.createJob({ type: 'chat' })
        const results = await Promise.all(
          Array.from({ length: 200 }, (_, i) => service.appendEvents(job.id, [chunk(`<${i}>`)])),
        )
        const log = await store.readLog(job.id, 0, 10_000)
        const events = log?.events ?? []
        // created + one implicit started + 200 chunks
        expect(events.map((e) => e.seq)).toEqual(Array.from({ length: 202 }, (_, i) => i + 1))
        expect(events.filter((e) => e.type === 'started')).toHaveLength(1)
        const texts = events.flatMap((e) => (e.type === 'chunk' ? [e.data.text] : []))
        expect(new Set(texts).size).toBe(200)
        const final = await store.getJob(job.id)
        expect(final?.text).toBe(texts.join(''))
        expect(final?.seq).toBe(202)
        // Each caller got back the seqs its own chunk was stored under.
        const returned = results.flatMap((r) => r.events).sort((a, b) => a.seq - b.seq)
        expect(returned).toEqual(events.slice(1))
      })

      it('parallel appends to different jobs do not interfere', async () => {
        const { store, service } = await open()
        const ids = await Promise.all(Array.from({ length: 5 }, async () => (await service.createJob({ type: 'x' })).job.id))
        await Promise.all(ids.flatMap((id) => Array.from({ length: 30 }, (_, i) => service.appendEvents(id, [chunk(`${i},`)]))))
        for (const id of ids) {
          const log = await store.readLog(id, 0, 1000)
          expect(log?.events.map((e) => e.seq)).toEqual(Array.from({ length: 32 }, (_, i) => i + 1))
          expect(log?.events.every((e) => e.jobId === id)).toBe(true)
        }
      })
    })

    describe('JobService rules', () => {
      it('progress on a queued job inserts an implicit started first', async () => {
        const { service } = await open()
        const { job } = await service.createJob({ type: 'scan' })
        const result = await service.appendEvents(job.id, [{ type: 'progress', data: { stage: 'reading', percent: 5 } }])
        expect(result.events.map((e) => [e.seq, e.type])).toEqual([
          [2, 'started'],
          [3, 'progress'],
        ])
        expect(result.events[0]?.data).toEqual({ attempt: 1, worker: null })
        expect(result.job).toMatchObject({ status: 'running', attempt: 1, progress: { stage: 'reading', percent: 5 } })
      })

      it('an explicit started gets the next attempt number whatever the producer sent', async () => {
        const { service } = await open()
        const { job } = await service.createJob({ type: 'scan' })
        const result = await service.appendEvents(job.id, [{ type: 'started', data: { attempt: 99, worker: 'w7' } }])
        expect(result.events.map((e) => e.data)).toEqual([{ attempt: 1, worker: 'w7' }])
      })

      it('progress after completed is refused with job_finished and appends nothing', async () => {
        const { service } = await open()
        const { job } = await service.createJob({ type: 'scan' })
        await service.appendEvents(job.id, [{ type: 'completed', data: { result: 'done' } }])
        await expectCode(service.appendEvents(job.id, [{ type: 'progress', data: { percent: 1 } }]), 'job_finished')
        expect((await service.getJob(job.id)).seq).toBe(3)
      })

      it('a batch with an illegal event in the middle appends none of it', async () => {
        const { service } = await open()
        const { job } = await service.createJob({ type: 'scan' })
        await expectCode(
          service.appendEvents(job.id, [chunk('a'), { type: 'completed', data: { result: null } }, chunk('b')]),
          'job_finished',
        )
        expect(await service.getJob(job.id)).toMatchObject({ seq: 1, status: 'queued', text: '' })
      })

      it('started on a running job is refused with invalid_transition', async () => {
        const { service } = await open()
        const { job } = await service.createJob({ type: 'scan' })
        await service.appendEvents(job.id, [chunk('a')])
        await expectCode(service.appendEvents(job.id, [{ type: 'started', data: { attempt: 1, worker: null } }]), 'invalid_transition')
      })

      it('appending to an unknown job is refused with job_not_found', async () => {
        const { service } = await open()
        await expectCode(service.appendEvents(jobId(), [chunk('a')]), 'job_not_found')
      })

      it('cancel of a queued job cancels it; cancelling again is a no-op that returns it', async () => {
        const { service } = await open()
        const { job } = await service.createJob({ type: 'scan' })
        const first = await service.cancelJob(job.id, 'user asked')
        expect(first.events.map((e) => [e.seq, e.type, e.data])).toEqual([[2, 'cancelled', { reason: 'user asked' }]])
        expect(first.job.status).toBe('cancelled')
        const second = await service.cancelJob(job.id, 'again')
        expect(second.events).toEqual([])
        expect(second.job).toEqual(first.job)
      })

      it('cancel of a running job cancels it', async () => {
        const { service } = await open()
        const { job } = await service.createJob({ type: 'scan' })
        await service.appendEvents(job.id, [chunk('partial')])
        const result = await service.cancelJob(job.id)
        expect(result.job).toMatchObject({ status: 'cancelled', text: 'partial', seq: 4 })
      })

      it('cancel of a completed or failed job is refused with job_finished', async () => {
        const { service } = await open()
        const done = (await service.createJob({ type: 'scan' })).job.id
        await service.appendEvents(done, [{ type: 'completed', data: { result: 1 } }])
        await expectCode(service.cancelJob(done), 'job_finished')
        const failed = (await service.createJob({ type: 'scan' })).job.id
        await service.appendEvents(failed, [{ type: 'failed', data: { code: 'e', message: 'm', retryable: false } }])
        await expectCode(service.cancelJob(failed), 'job_finished')
        expect((await service.getJob(done)).seq).toBe(3)
      })

      it('cancel of an unknown job is refused with job_not_found', async () => {
        const { service } = await open()
        await expectCode(service.cancelJob(jobId()), 'job_not_found')
      })

      it('text beyond maxTextLength is refused with text_limit_exceeded and the text stays as it was', async () => {
        const { service } = await open({ limits: { maxTextLength: 10 } })
        const { job } = await service.createJob({ type: 'chat' })
        await service.appendEvents(job.id, [chunk('abcdef')])
        await expectCode(service.appendEvents(job.id, [chunk('ghijk')]), 'text_limit_exceeded')
        expect((await service.getJob(job.id)).text).toBe('abcdef')
        // Exactly at the limit is fine.
        await service.appendEvents(job.id, [chunk('ghij')])
        expect((await service.getJob(job.id)).text).toBe('abcdefghij')
        await expectCode(service.appendEvents(job.id, [chunk('k')]), 'text_limit_exceeded')
      })

      it('text_limit_exceeded counts every chunk of one batch', async () => {
        const { service } = await open({ limits: { maxTextLength: 10 } })
        const { job } = await service.createJob({ type: 'chat' })
        await expectCode(service.appendEvents(job.id, [chunk('12345'), chunk('67890'), chunk('!')]), 'text_limit_exceeded')
        expect((await service.getJob(job.id)).seq).toBe(1)
      })
    })

    describe('JobSubscription', () => {
      it('without a position: a snapshot (initial), then live events', async () => {
        const { service } = await open()
        const { job } = await service.createJob({ type: 'watch' })
        await service.appendEvents(job.id, [chunk('a')])
        const sink = recordingSink()
        const subscription = await service.subscribe(job.id, undefined, sink)
        expect(sink.messages).toEqual([{ type: 'snapshot', job: await service.getJob(job.id), reset: false, reason: 'initial' }])
        await service.appendEvents(job.id, [chunk('b'), chunk('c')])
        await vi.waitFor(() => expect(seqsOf(sink.messages)).toEqual([4, 5]))
        expect(subscription.position).toBe(5)
        expect(sink.ended).toBe(false)
        subscription.close()
      })

      it('from a held position: recovered, then exactly the missing events, then live ones', async () => {
        const { store, service } = await open()
        const id = await jobWithEvents(store, 6)
        const sink = recordingSink()
        const subscription = await service.subscribe(id, 2, sink)
        expect(sink.messages[0]).toEqual({ type: 'recovered', after: 2 })
        expect(seqsOf(sink.messages)).toEqual([3, 4, 5, 6])
        await service.appendEvents(id, [chunk('7')])
        await vi.waitFor(() => expect(seqsOf(sink.messages)).toEqual([3, 4, 5, 6, 7]))
        expect(sink.messages.filter((m) => m.type !== 'event')).toHaveLength(1)
        subscription.close()
      })

      it('from position 0: recovered, then the whole log from created', async () => {
        const { store, service } = await open()
        const id = await jobWithEvents(store, 3)
        const sink = recordingSink()
        await service.subscribe(id, 0, sink)
        expect(sink.messages[0]).toEqual({ type: 'recovered', after: 0 })
        expect(sink.messages.slice(1)).toEqual(((await store.readLog(id, 0, 10))?.events ?? []).map((event) => ({ type: 'event', event })))
      })

      it('from the head: recovered with nothing to replay, then live', async () => {
        const { store, service } = await open()
        const id = await jobWithEvents(store, 3)
        const sink = recordingSink()
        await service.subscribe(id, 3, sink)
        expect(sink.messages).toEqual([{ type: 'recovered', after: 3 }])
        await service.appendEvents(id, [chunk('x')])
        await vi.waitFor(() => expect(seqsOf(sink.messages)).toEqual([4]))
      })

      it('a replay longer than one log page arrives whole and in order', async () => {
        const { store, service } = await open({ limits: { replayPageSize: 3 } })
        const id = await jobWithEvents(store, 20)
        const sink = recordingSink()
        await service.subscribe(id, 1, sink)
        await vi.waitFor(() => expect(seqsOf(sink.messages)).toEqual(range(2, 20)))
        await service.appendEvents(id, [chunk('21')])
        await vi.waitFor(() => expect(seqsOf(sink.messages)).toEqual(range(2, 21)))
      })

      it('from a trimmed position: a snapshot with reset: true and reason trimmed, then live', async () => {
        const { store, service } = await open({ retention: { maxEventsPerJob: 5 } })
        const id = await jobWithEvents(store, 12)
        const sink = recordingSink()
        await service.subscribe(id, 2, sink)
        expect(sink.messages).toEqual([{ type: 'snapshot', job: await service.getJob(id), reset: true, reason: 'trimmed' }])
        await service.appendEvents(id, [chunk('13')])
        await vi.waitFor(() => expect(seqsOf(sink.messages)).toEqual([13]))
      })

      it('a position beyond the head rejects with position_ahead and writes nothing', async () => {
        const { store, service } = await open()
        const id = await jobWithEvents(store, 3)
        const sink = recordingSink()
        await expectCode(service.subscribe(id, 4, sink), 'position_ahead')
        await service.appendEvents(id, [chunk('4'), chunk('5')])
        expect(sink.messages).toEqual([])
        expect(sink.ended).toBe(false)
      })

      it('an unknown job rejects with job_not_found, with or without a position', async () => {
        const { service } = await open()
        const sink = recordingSink()
        await expectCode(service.subscribe(jobId(), undefined, sink), 'job_not_found')
        await expectCode(service.subscribe(jobId(), 0, sink), 'job_not_found')
        expect(sink.messages).toEqual([])
      })

      it('ends after the terminal event and delivers nothing more, even if the job is requeued', async () => {
        const { store, service } = await open()
        const { job } = await service.createJob({ type: 'watch' })
        const sink = recordingSink()
        const subscription = await service.subscribe(job.id, undefined, sink)
        await service.appendEvents(job.id, [chunk('a'), { type: 'failed', data: { code: 'e', message: 'm', retryable: true } }])
        await vi.waitFor(() => expect(sink.ended).toBe(true))
        expect(seqsOf(sink.messages)).toEqual([2, 3, 4])
        expect(sink.messages.at(-1)).toMatchObject({ type: 'event', event: { type: 'failed' } })
        expect(subscription.closed).toBe(true)
        await store.append(job.id, () => [{ type: 'requeued', data: { reason: 'retry', attempt: 1, retryAt: null } }])
        await service.appendEvents(job.id, [chunk('b')])
        expect(seqsOf(sink.messages)).toEqual([2, 3, 4])
        expect(sink.endCount).toBe(1)
      })

      it('a terminal event in the middle of a replay ends the subscription there', async () => {
        const { store, service } = await open()
        const { job } = await service.createJob({ type: 'watch' })
        await service.appendEvents(job.id, [chunk('a'), { type: 'completed', data: { result: 1 } }])
        const sink = recordingSink()
        await service.subscribe(job.id, 1, sink)
        expect(sink.messages.map((m) => m.type)).toEqual(['recovered', 'event', 'event', 'event'])
        expect(seqsOf(sink.messages)).toEqual([2, 3, 4])
        expect(sink.ended).toBe(true)
        expect((await store.readLog(job.id, 0, 10))?.head).toBe(4)
      })

      it('a finished job without a position: the snapshot, then the end', async () => {
        const { service } = await open()
        const { job } = await service.createJob({ type: 'watch' })
        await service.cancelJob(job.id)
        const sink = recordingSink()
        await service.subscribe(job.id, undefined, sink)
        expect(sink.messages).toEqual([{ type: 'snapshot', job: await service.getJob(job.id), reset: false, reason: 'initial' }])
        expect(sink.ended).toBe(true)
      })

      it('a finished job from its head: recovered, then the end', async () => {
        const { service } = await open()
        const { job } = await service.createJob({ type: 'watch' })
        await service.cancelJob(job.id)
        const sink = recordingSink()
        await service.subscribe(job.id, 2, sink)
        expect(sink.messages).toEqual([{ type: 'recovered', after: 2 }])
        expect(sink.ended).toBe(true)
      })

      it('close() stops delivery and ends the sink once', async () => {
        const { service } = await open()
        const { job } = await service.createJob({ type: 'watch' })
        const sink = recordingSink()
        const subscription = await service.subscribe(job.id, 1, sink)
        subscription.close()
        subscription.close()
        await service.appendEvents(job.id, [chunk('a')])
        expect(sink.messages).toEqual([{ type: 'recovered', after: 1 }])
        expect(sink.endCount).toBe(1)
      })

      for (const seed of [1, 2, 3]) {
        it(`subscriptions opened at random points and positions while 2,000 events are appended each see every seq once, in order (seed ${seed})`, async () => {
          const { store, service } = await open({ retention: { maxEventsPerJob: 150 } })
          const random = mulberry32(seed)
          const { job } = await service.createJob({ type: 'stress' })
          const committed: JobEvent[] = [((await store.readLog(job.id, 0, 1))?.events ?? [])[0] as JobEvent]
          let head = 1
          let producing = true

          const producer = (async () => {
            while (head < 2000) {
              const size = Math.min(1 + Math.floor(random() * 3), 2000 - head)
              const result = await service.appendEvents(job.id, Array.from({ length: size }, () => chunk(`${head},`)))
              committed.push(...result.events)
              head = Math.max(head, result.job.seq)
            }
            const last = await service.appendEvents(job.id, [{ type: 'completed', data: { result: 'ok' } }])
            committed.push(...last.events)
            producing = false
          })()

          const watchers: Watcher[] = []
          // Opens a subscription every 1..60 committed events, at a random microtask inside the
          // producer's work. When the producer is waiting on I/O (a networked backend), the opener
          // yields a macrotask instead of spinning, so it never starves the event loop.
          const opener = (async () => {
            let openAt = 1
            let seenHead = head
            let idle = 0
            while (producing) {
              await Promise.resolve()
              if (head !== seenHead) {
                seenHead = head
                idle = 0
              } else if (++idle > 100) {
                idle = 0
                await new Promise((resolve) => setImmediate(resolve))
              }
              if (head < openAt) continue
              openAt = head + 1 + Math.floor(random() * 60)
              for (let n = Math.floor(random() * 12); n > 0; n--) await Promise.resolve()
              const roll = random()
              const position = roll < 0.2 ? undefined : roll < 0.3 ? 0 : roll < 0.5 ? head : Math.floor(random() * (head + 1))
              const sink = recordingSink()
              watchers.push({ position, sink, started: service.subscribe(job.id, position, sink) })
            }
          })()

          await Promise.all([producer, opener])
          await Promise.all(watchers.map((w) => w.started))
          await vi.waitFor(() => expect(watchers.every((w) => w.sink.ended)).toBe(true), { timeout: 10_000 })

          committed.sort((a, b) => a.seq - b.seq)
          const final = await store.getJob(job.id)
          expect(final?.status).toBe('completed')
          expect(committed.map((e) => e.seq)).toEqual(range(1, final?.seq ?? 0))
          expect(watchers.length).toBeGreaterThan(20)
          for (const watcher of watchers) checkWatcher(watcher, committed, final as JobState)
        })
      }
    })

    describe('long-poll', () => {
      it('without a position answers the snapshot (initial) with next = seq', async () => {
        const { store, service } = await open()
        const id = await jobWithEvents(store, 3)
        expect(await service.poll(id, undefined, 60_000)).toEqual({
          snapshot: { job: await service.getJob(id), reset: false, reason: 'initial' },
          events: [],
          next: 3,
          done: false,
        })
      })

      it('with a held position answers the events after it at once', async () => {
        const { store, service } = await open()
        const id = await jobWithEvents(store, 5)
        const response = await service.poll(id, 2, 60_000)
        expect(response.snapshot).toBeUndefined()
        expect(response.events.map((e) => e.seq)).toEqual([3, 4, 5])
        expect(response).toMatchObject({ next: 5, done: false })
      })

      it('at the head waits, and wakes with the next event', async () => {
        const { store, service } = await open()
        const id = await jobWithEvents(store, 3)
        let settled = false
        const pending = service.poll(id, 3, 600_000).finally(() => (settled = true))
        await settle()
        expect(settled).toBe(false)
        await service.appendEvents(id, [chunk('4'), chunk('5')])
        const response = await pending
        expect(response.events.map((e) => e.seq)).toEqual([4, 5])
        expect(response).toMatchObject({ next: 5, done: false })
      })

      it('at the head with no new event until the wait runs out answers no events and the same next', async () => {
        const { store, service } = await open()
        const id = await jobWithEvents(store, 3)
        expect(await service.poll(id, 3, 5)).toEqual({ events: [], next: 3, done: false })
        expect(await service.poll(id, 3, 0)).toEqual({ events: [], next: 3, done: false })
      })

      it('an aborted signal ends the wait with no events', async () => {
        const { store, service } = await open()
        const id = await jobWithEvents(store, 3)
        const controller = new AbortController()
        const pending = service.poll(id, 3, 600_000, controller.signal)
        await settle()
        controller.abort()
        expect(await pending).toEqual({ events: [], next: 3, done: false })
      })

      it('says done once the terminal event is delivered, and at once for a poll at a finished head', async () => {
        const { store, service } = await open()
        const id = await jobWithEvents(store, 3)
        await service.appendEvents(id, [{ type: 'completed', data: { result: 1 } }])
        expect(await service.poll(id, 2, 600_000)).toMatchObject({ next: 4, done: true })
        expect((await service.poll(id, 2, 600_000)).events.map((e) => e.seq)).toEqual([3, 4])
        expect(await service.poll(id, 4, 600_000)).toEqual({ events: [], next: 4, done: true })
        expect(await service.poll(id, undefined, 600_000)).toMatchObject({ next: 4, done: true })
      })

      it('a waiting poll wakes with done when the job finishes', async () => {
        const { store, service } = await open()
        const id = await jobWithEvents(store, 3)
        const pending = service.poll(id, 3, 600_000)
        await settle()
        await service.cancelJob(id)
        expect(await pending).toMatchObject({ next: 4, done: true })
      })

      it('pages a long backlog by replayPageSize and is done only on the page that reaches the terminal event', async () => {
        const { store, service } = await open({ limits: { replayPageSize: 3 } })
        const id = await jobWithEvents(store, 7)
        await service.appendEvents(id, [{ type: 'completed', data: { result: 1 } }])
        const seen: number[] = []
        const dones: boolean[] = []
        for (let after = 0, done = false; !done; ) {
          const response = await service.poll(id, after, 600_000)
          seen.push(...response.events.map((e) => e.seq))
          dones.push(response.done)
          after = response.next
          done = response.done
        }
        expect(seen).toEqual(range(1, 8))
        expect(dones).toEqual([false, false, true])
      })

      it('from a trimmed position answers a snapshot with reset: true and reason trimmed', async () => {
        const { store, service } = await open({ retention: { maxEventsPerJob: 5 } })
        const id = await jobWithEvents(store, 12)
        expect(await service.poll(id, 2, 600_000)).toEqual({
          snapshot: { job: await service.getJob(id), reset: true, reason: 'trimmed' },
          events: [],
          next: 12,
          done: false,
        })
      })

      it('a position beyond the head is refused with position_ahead', async () => {
        const { store, service } = await open()
        const id = await jobWithEvents(store, 3)
        await expectCode(service.poll(id, 4, 600_000), 'position_ahead')
      })

      it('an unknown job is refused with job_not_found, with or without a position', async () => {
        const { service } = await open()
        await expectCode(service.poll(jobId(), undefined, 600_000), 'job_not_found')
        await expectCode(service.poll(jobId(), 0, 600_000), 'job_not_found')
      })
    })
  })
}

// ---------------------------------------------------------------------------------------------

interface RecordingSink extends StreamSink {
  readonly messages: StreamMessage[]
  readonly ended: boolean
  readonly endCount: number
}

function recordingSink(): RecordingSink {
  const messages: StreamMessage[] = []
  let endCount = 0
  return {
    messages,
    get ended() {
      return endCount > 0
    },
    get endCount() {
      return endCount
    },
    write(batch) {
      messages.push(...batch)
    },
    end() {
      endCount++
    },
  }
}

interface Watcher {
  position: number | undefined
  sink: RecordingSink
  started: Promise<unknown>
}

/**
 * A watcher's view is valid when it opens as asked (snapshot, or recovered at its position), every
 * event extends the last seq by one, any later snapshot is an explicit reset forward, and the state
 * it rebuilds from what it got equals the job's final state.
 */
function checkWatcher(watcher: Watcher, committed: readonly JobEvent[], final: JobState): void {
  const { messages } = watcher.sink
  const label = `watcher from ${String(watcher.position)}`
  const first = messages[0]
  if (first === undefined) throw new Error(`${label}: got nothing`)
  let state: JobState | null
  if (first.type === 'recovered') {
    expect(first.after, label).toBe(watcher.position)
    state = reduceEvents(committed.slice(0, first.after))
  } else if (first.type === 'snapshot') {
    if (watcher.position === undefined) expect(first, label).toMatchObject({ reset: false, reason: 'initial' })
    else expect(first, label).toMatchObject({ reset: true, reason: 'trimmed' })
    state = first.job
  } else {
    throw new Error(`${label}: opened with ${first.type}`)
  }
  for (const message of messages.slice(1)) {
    if (message.type === 'event') {
      const expectedSeq = (state?.seq ?? 0) + 1
      if (message.event.seq !== expectedSeq) throw new Error(`${label}: got seq ${message.event.seq}, expected ${expectedSeq}`)
      state = applyEvent(state, message.event)
    } else if (message.type === 'snapshot') {
      // A reset mid-stream is allowed only as an explicit jump forward past trimmed events.
      expect(message, label).toMatchObject({ reset: true, reason: 'trimmed' })
      expect(message.job.seq, label).toBeGreaterThan(state?.seq ?? 0)
      state = message.job
    } else {
      throw new Error(`${label}: unexpected ${message.type} after the start`)
    }
  }
  expect(state, label).toEqual(final)
  const last = messages.at(-1)
  if (last !== first) expect(last?.type === 'event' && isTerminalEvent(last.event.type), label).toBe(true)
  expect(watcher.sink.endCount, label).toBe(1)
}

function seqsOf(messages: readonly StreamMessage[]): number[] {
  return messages.flatMap((m) => (m.type === 'event' ? [m.event.seq] : []))
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i)
}

function jobId(): string {
  return `job_${randomBytes(16).toString('base64url')}`
}

function newJob(overrides: Partial<NewJob> = {}): NewJob {
  return {
    id: jobId(),
    type: 'test',
    input: null,
    owner: null,
    idempotencyKey: null,
    dispatch: true,
    maxAttempts: 3,
    at: new Date().toISOString(),
    ...overrides,
  }
}

function started(): EventDraft {
  return { type: 'started', data: { attempt: 1, worker: null } }
}

function chunk(text: string): EventDraft {
  return { type: 'chunk', data: { text } }
}

/** A running job whose log is created, started, then chunks "3".."n": `n` events in all. */
async function jobWithEvents(store: Store, n: number): Promise<string> {
  const { job } = await store.createJob(newJob())
  if (n < 2) return job.id
  await store.append(job.id, () => [started()])
  for (let seq = 3; seq <= n; seq++) await store.append(job.id, () => [chunk(String(seq))])
  return job.id
}

async function walk(store: Store, query: Omit<Parameters<Store['listJobs']>[0], 'cursor'>, cursor: string | null = null): Promise<string[][]> {
  const pages: string[][] = []
  for (let guard = 0; guard < 100; guard++) {
    const page = await store.listJobs(cursor === null ? query : { ...query, cursor })
    pages.push(page.jobs.map((j) => j.id))
    if (page.nextCursor === null) return pages
    cursor = page.nextCursor
  }
  throw new Error('pagination did not end')
}

async function expectCode(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(error).toBeInstanceOf(JobwireError)
  expect((error as JobwireError).code).toBe(code)
}

/** Lets pending I/O callbacks and timers of zero delay run, so a waiter is really waiting. */
function settle(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 10))
}

/** A small seeded PRNG, so a failing interleaving can be replayed. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
