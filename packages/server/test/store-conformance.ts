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
  defaultCoreLimits,
  defaultRetention,
  Dispatcher,
  JobService,
  type AppendPlan,
  type AppendResult,
  type Claimed,
  type CoreLimits,
  type Lease,
  type NewJob,
  type Retention,
  type Store,
  type StreamSink,
} from '@jobwire/server'
import { seededRandom } from '../../../test/support/random.js'
import { listedJob } from '../src/core/store.js'

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
      return { store, service: new JobService(store, { ...defaultCoreLimits, ...options.limits }) }
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

      it('every character survives a commit and a fresh read: control characters, separators, astral ones', async () => {
        const { store } = await open()
        const { job: created } = await store.createJob(newJob())
        // The Redis store sends a commit's fields as one string split at 0x1F, its text apart.
        const odd = 'a\u0000b\u001fc\u001ed\n\r\te\u2028f\u{1F600}g"h\\i'
        const result = await store.append(created.id, () => [
          { type: 'started', data: { attempt: 1, worker: `w${odd}` } },
          { type: 'progress', data: { stage: odd, percent: 10, message: odd } },
          { type: 'item', data: { id: odd, label: odd, status: 'running', message: odd } },
          { type: 'chunk', data: { text: odd } },
          { type: 'checkpoint', data: { data: { at: odd } } },
        ])
        await store.append(created.id, () => [{ type: 'chunk', data: { text: '\u001f' } }])
        const done = await store.append(created.id, () => [{ type: 'completed', data: { result: { text: odd } } }])
        expect(done.job).toMatchObject({ text: `${odd}\u001f`, progress: { stage: odd, message: odd }, items: [{ id: odd, label: odd, message: odd }] })
        expect(result.job.checkpoint).toEqual({ at: odd })
        expect((await store.getRecord(created.id))?.job).toEqual(done.job)
        const log = await store.readLog(created.id, 0, 100)
        expect(reduceEvents(log?.events ?? [])).toEqual(done.job)
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

      it('lists jobs with their current state, without their text (its length instead) or input', async () => {
        const { store, service } = await open()
        const ids = await sampleJobs(store, service)
        // Counted in UTF-16 code units, as JavaScript does: the emoji is two.
        await service.appendEvents(ids[6] as string, [chunk(' 🙂 and more')])
        const page = await store.listJobs({ limit: 100 })
        for (const job of page.jobs) expect(job).toEqual(listedJob((await store.getJob(job.id)) as JobState))
        expect(page.jobs.find((j) => j.id === ids[2])?.status).toBe('completed')
        expect(page.jobs.find((j) => j.id === ids[6])).toMatchObject({ textLength: 13 })
        expect(page.jobs.find((j) => j.id === ids[6])).not.toHaveProperty('text')
        expect(page.jobs[0]).not.toHaveProperty('input')
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

      it('refuses a cursor it did not give rather than starting over at the first page', async () => {
        const { store, service } = await open()
        await sampleJobs(store, service)
        const cursor = (await store.listJobs({ limit: 2 })).nextCursor as string
        for (const bad of ['abc', `${cursor}=`, `${cursor}.`]) {
          await expect(store.listJobs({ limit: 2, cursor: bad }), bad).rejects.toMatchObject({ code: 'invalid_request', details: { field: 'cursor' } })
        }
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

    describe('deadlines', () => {
      const minute = 60_000
      /** JobService and Dispatcher on one hand-driven clock: deadlines come due without sleeping. */
      async function openClocked(limits: Partial<CoreLimits> = {}) {
        const { store } = await open()
        const clock = { now: Date.now() }
        const service = new JobService(store, { ...defaultCoreLimits, ...limits }, () => new Date(clock.now))
        const dispatcher = new Dispatcher(service, () => clock.now)
        const claim = async (type = 'test') => {
          const claimed = await dispatcher.claim({ types: [type], worker: 'w', leaseMs: 60 * minute, waitMs: 0 })
          if (claimed === null) throw new Error(`no ${type} job to claim`)
          return claimed
        }
        return { store, service, dispatcher, clock, claim }
      }

      it('a job running past its timeout fails with timed_out once, and its worker is signalled timed_out', async () => {
        const { store, service, dispatcher, clock, claim } = await openClocked()
        const { job } = await service.createJob({ type: 'test', deadlines: { timeoutMs: minute } })
        const claimed = await claim()
        clock.now += 30_000
        expect(await service.deadlines.fireDue()).toBe(0)
        expect((await store.getJob(job.id))?.status).toBe('running')
        clock.now += 31_000
        expect(await service.deadlines.fireDue()).toBe(1)
        const failed = await store.getJob(job.id)
        expect(failed).toMatchObject({ status: 'failed', error: { code: 'timed_out', retryable: false } })
        expect(failed?.error?.message).toContain('60000 ms')
        expect(await dispatcher.signals([{ id: job.id, lease: claimed.lease.token }], 0)).toEqual([{ jobId: job.id, reason: 'timed_out' }])
        await expectCode(service.appendEvents(job.id, [chunk('late')], { lease: claimed.lease.token, batch: 1 }), 'job_finished')
        clock.now += minute
        expect(await service.deadlines.fireDue()).toBe(0)
        expect((await store.readLog(job.id, 0, 10))?.events.filter((e) => e.type === 'failed')).toHaveLength(1)
        expect(await store.dueDeadlines(clock.now + 100 * minute, 10)).toEqual([])
      })

      it('a whole-job timeout keeps counting across a re-queue; a per-attempt one starts over at each start', async () => {
        const { store, service, clock, claim } = await openClocked()
        const whole = (await service.createJob({ type: 'whole', deadlines: { timeoutMs: minute } })).job.id
        const perAttempt = (await service.createJob({ type: 'each', deadlines: { timeoutMs: minute, timeoutPer: 'attempt' } })).job.id
        await claim('whole')
        await claim('each')
        clock.now += 40_000
        // Both go back to the queue (a worker gave them back) and start again at once.
        for (const id of [whole, perAttempt]) await store.append(id, () => ({ events: [requeued(1)], lease: null, availableAt: 0 }))
        await claim('whole')
        await claim('each')
        clock.now += 30_000
        expect(await service.deadlines.fireDue()).toBe(1)
        expect((await store.getJob(whole))?.error?.code).toBe('timed_out')
        expect((await store.getJob(perAttempt))?.status).toBe('running')
        clock.now += 31_000
        expect(await service.deadlines.fireDue()).toBe(1)
        expect((await store.getJob(perAttempt))?.error?.code).toBe('timed_out')
      })

      it('a retryable per-attempt timeout re-queues the job with backoff while attempts remain, then fails it', async () => {
        const { store, service, dispatcher, clock, claim } = await openClocked({ retryBackoffMs: 5_000 })
        const { job } = await service.createJob({ type: 'test', maxAttempts: 2, deadlines: { timeoutMs: minute, timeoutPer: 'attempt', timeoutRetryable: true } })
        const first = await claim()
        clock.now += minute + 1
        expect(await service.deadlines.fireDue()).toBe(1)
        const requeuedJob = await store.getJob(job.id)
        expect(requeuedJob).toMatchObject({ status: 'queued', attempt: 1, error: { code: 'timed_out', retryable: true } })
        const log = (await store.readLog(job.id, 0, 10))?.events ?? []
        expect(log.at(-1)).toMatchObject({ type: 'requeued', data: { reason: 'timed_out', attempt: 1 } })
        expect(await dispatcher.signals([{ id: job.id, lease: first.lease.token }], 0)).toEqual([{ jobId: job.id, reason: 'timed_out' }])
        expect(await dispatcher.claim({ types: ['test'], worker: 'w', leaseMs: minute, waitMs: 0 })).toBeNull()
        clock.now += 5_000
        await claim()
        clock.now += minute + 1
        expect(await service.deadlines.fireDue()).toBe(1)
        expect(await store.getJob(job.id)).toMatchObject({ status: 'failed', attempt: 2, error: { code: 'timed_out', retryable: false } })
      })

      it('a dispatched job left unclaimed past its queue timeout fails with queue_timeout; a claimed one does not', async () => {
        const { store, service, clock, claim } = await openClocked()
        const waiting = (await service.createJob({ type: 'nobody-serves', deadlines: { queueTimeoutMs: minute } })).job.id
        const taken = (await service.createJob({ type: 'test', deadlines: { queueTimeoutMs: minute } })).job.id
        clock.now += 59_000
        expect(await service.deadlines.fireDue()).toBe(0)
        await claim()
        clock.now += 2_000
        expect(await service.deadlines.fireDue()).toBe(1)
        expect(await store.getJob(waiting)).toMatchObject({ status: 'failed', error: { code: 'queue_timeout', retryable: false } })
        expect((await store.getJob(taken))?.status).toBe('running')
        expect(await store.queuePosition(waiting)).toBeNull()
      })

      it('a self-run job whose runner stops sending events and heartbeats fails with runner_lost', async () => {
        const { store, service, clock } = await openClocked()
        const { job } = await service.createJob({ type: 'test', dispatch: false, deadlines: { heartbeatTimeoutMs: minute } })
        await service.appendEvents(job.id, [chunk('working')])
        clock.now += 40_000
        expect((await service.runnerHeartbeat(job.id)).expiresAt).toBe(new Date(clock.now + minute).toISOString())
        clock.now += 50_000
        expect(await service.deadlines.fireDue()).toBe(0)
        clock.now += 11_000
        expect(await service.deadlines.fireDue()).toBe(1)
        expect(await store.getJob(job.id)).toMatchObject({ status: 'failed', error: { code: 'runner_lost', retryable: false } })
        // A dispatched job's runner is its worker: it heartbeats its lease instead.
        const dispatched = (await service.createJob({ type: 'test' })).job.id
        await expectCode(service.runnerHeartbeat(dispatched), 'invalid_request')
      })

      it('settings resolve job over type over default, and 0 turns one off', async () => {
        const { store, service, clock } = await openClocked({
          deadlines: { queueTimeoutMs: 10 * minute, retentionMs: minute },
          deadlinesByType: { fast: { queueTimeoutMs: minute } },
        })
        const plain = (await service.createJob({ type: 'slow' })).job.id
        const fast = (await service.createJob({ type: 'fast' })).job.id
        const own = (await service.createJob({ type: 'fast', deadlines: { queueTimeoutMs: 3 * minute } })).job.id
        const off = (await service.createJob({ type: 'fast', deadlines: { queueTimeoutMs: 0 } })).job.id
        const due = async (id: string) => (await store.getRecord(id))?.timers.due.queueTimeout
        expect(await due(plain)).toBe(clock.now + 10 * minute)
        expect(await due(fast)).toBe(clock.now + minute)
        expect(await due(own)).toBe(clock.now + 3 * minute)
        expect(await due(off)).toBeUndefined()
        expect((await store.getRecord(off))?.timers.settings).toEqual({ retentionMs: minute })
      })

      it('several nodes firing the same due deadline at once end the job exactly once', async () => {
        const { store, service, clock } = await openClocked()
        const { job } = await service.createJob({ type: 'test', deadlines: { queueTimeoutMs: minute } })
        const others = [1, 2, 3].map(() => new JobService(store, defaultCoreLimits, () => new Date(clock.now)))
        clock.now += 2 * minute
        const fired = await Promise.all([service, ...others].map((node) => node.deadlines.fireDue()))
        expect(fired.reduce((a, b) => a + b, 0)).toBe(1)
        expect((await store.readLog(job.id, 0, 10))?.events.map((e) => e.type)).toEqual(['created', 'failed'])
      })

      it('dueDeadlines lists due jobs earliest first, up to the limit, and none that finished', async () => {
        const { store, service, clock } = await openClocked()
        const late = (await service.createJob({ type: 'test', deadlines: { queueTimeoutMs: 3 * minute } })).job.id
        const early = (await service.createJob({ type: 'test', deadlines: { queueTimeoutMs: minute } })).job.id
        const done = (await service.createJob({ type: 'test', deadlines: { queueTimeoutMs: minute } })).job.id
        await service.cancelJob(done)
        expect(await store.dueDeadlines(clock.now + 30_000, 10)).toEqual([])
        expect(await store.dueDeadlines(clock.now + 2 * minute, 10)).toEqual([early])
        expect(await store.dueDeadlines(clock.now + 4 * minute, 10)).toEqual([early, late])
        expect(await store.dueDeadlines(clock.now + 4 * minute, 1)).toEqual([early])
      })
    })

    describe('cancel when unwatched', () => {
      const minute = 60_000

      it('cancels a job nobody watched for its cancelWhenUnwatched, and never one that is watched', async () => {
        const { store } = await open()
        const clock = { now: Date.now() }
        const service = new JobService(store, defaultCoreLimits, () => new Date(clock.now))
        const watched = (await service.createJob({ type: 'test', deadlines: { cancelWhenUnwatchedMs: minute } })).job.id
        const ignored = (await service.createJob({ type: 'test', deadlines: { cancelWhenUnwatchedMs: minute } })).job.id
        const sink = recordingSink()
        const subscription = await service.subscribe(watched, undefined, sink)
        // Every 30 s the node says which jobs it sees watched, as its deadline sweep does.
        for (let i = 0; i < 5; i++) {
          clock.now += 30_000
          await service.deadlines.refreshWatched()
          await service.deadlines.fireDue()
        }
        expect(await store.getJob(ignored)).toMatchObject({ status: 'cancelled' })
        expect((await store.readLog(ignored, 0, 10))?.events.at(-1)).toMatchObject({ type: 'cancelled', data: { reason: 'unwatched' } })
        expect((await store.getJob(watched))?.status).toBe('queued')
        subscription.close()
        clock.now += 30_000
        await service.deadlines.refreshWatched()
        expect(await service.deadlines.fireDue()).toBe(0)
        clock.now += 31_000
        await service.deadlines.refreshWatched()
        expect(await service.deadlines.fireDue()).toBe(1)
        expect((await store.readLog(watched, 0, 10))?.events.at(-1)).toMatchObject({ type: 'cancelled', data: { reason: 'unwatched' } })
      })

      it('counts a watcher on another node and a long-poll as watching', async () => {
        const { store } = await open()
        const clock = { now: Date.now() }
        const firing = new JobService(store, defaultCoreLimits, () => new Date(clock.now))
        const watching = new JobService(store, defaultCoreLimits, () => new Date(clock.now))
        const polled = (await firing.createJob({ type: 'test', deadlines: { cancelWhenUnwatchedMs: minute } })).job.id
        const streamed = (await firing.createJob({ type: 'test', deadlines: { cancelWhenUnwatchedMs: minute } })).job.id
        const subscription = await watching.subscribe(streamed, undefined, recordingSink())
        for (let i = 0; i < 4; i++) {
          clock.now += 30_000
          await watching.poll(polled, undefined, 0)
          await watching.deadlines.refreshWatched()
          expect(await firing.deadlines.fireDue()).toBe(0)
        }
        expect((await store.getJob(polled))?.status).toBe('queued')
        expect((await store.getJob(streamed))?.status).toBe('queued')
        subscription.close()
      })
    })

    describe('retention per job', () => {
      const minute = 60_000

      it('keeps a finished job for its own retention, whatever its status, then deletes it with its log', async () => {
        const { store, service } = await open({ retention: { ttlMs: { completed: 10 * minute, failed: 10 * minute, cancelled: 10 * minute } } })
        const short = (await service.createJob({ type: 'test', deadlines: { retentionMs: minute } })).job.id
        const long = (await service.createJob({ type: 'test', deadlines: { retentionMs: 30 * minute } })).job.id
        const plain = (await service.createJob({ type: 'test' })).job.id
        for (const id of [short, long, plain]) await service.appendEvents(id, [{ type: 'completed', data: { result: null } }])
        expect(await store.sweep(Date.now() + 2 * minute)).toEqual({ expiredJobs: 1 })
        expect(await store.getJob(short)).toBeNull()
        expect(await store.readLog(short, 0, 10)).toBeNull()
        await expectCode(service.subscribe(short, undefined, recordingSink()), 'job_not_found')
        await expectCode(service.subscribe(short, 2, recordingSink()), 'job_not_found')
        expect(await store.sweep(Date.now() + 11 * minute)).toEqual({ expiredJobs: 1 })
        expect(await store.getJob(plain)).toBeNull()
        expect(await store.getJob(long)).not.toBeNull()
        expect(await store.sweep(Date.now() + 31 * minute)).toEqual({ expiredJobs: 1 })
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

      it('items beyond maxItemsPerJob are refused with item_limit_exceeded, nothing of the batch appended; known items still update', async () => {
        const { service } = await open({ limits: { maxItemsPerJob: 3 } })
        const { job } = await service.createJob({ type: 'files' })
        const item = (id: string, percent: number) => ({ type: 'item' as const, data: { id, percent } })
        await service.appendEvents(job.id, [item('a', 10), item('b', 10)])
        // A batch that adds two new ids (one more than the room left) is refused whole, at the draft past the limit.
        const refused = await service.appendEvents(job.id, [item('a', 20), item('c', 10), item('d', 10)]).catch((error: unknown) => error)
        expect(refused).toMatchObject({ code: 'item_limit_exceeded', details: { jobId: job.id, limit: 3, index: 2 } })
        expect((await service.getJob(job.id)).items.map((i) => [i.id, i.percent])).toEqual([['a', 10], ['b', 10]])
        // Up to the limit, and updates of known items past it, are fine; the same new id twice counts once.
        await service.appendEvents(job.id, [item('c', 5), item('c', 50)])
        await service.appendEvents(job.id, [item('a', 100), item('b', 100), item('c', 100)])
        expect((await service.getJob(job.id)).items.map((i) => [i.id, i.percent])).toEqual([['a', 100], ['b', 100], ['c', 100]])
        await expectCode(service.appendEvents(job.id, [item('d', 1)]), 'item_limit_exceeded')
        // A longer batch (checked against a set of the job's ids rather than a scan): the same rules.
        const known = Array.from({ length: 9 }, (_, i) => item('abc'[i % 3] as string, i))
        await service.appendEvents(job.id, known)
        expect((await service.getJob(job.id)).items.map((i) => [i.id, i.percent])).toEqual([['a', 6], ['b', 7], ['c', 8]])
        const late = await service.appendEvents(job.id, [...known, item('d', 1)]).catch((error: unknown) => error)
        expect(late).toMatchObject({ code: 'item_limit_exceeded', details: { limit: 3, index: 9 } })
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
          const random = seededRandom(seed)
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
          more: false,
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
        expect(await service.poll(id, 3, 5)).toEqual({ events: [], next: 3, done: false, more: false })
        expect(await service.poll(id, 3, 0)).toEqual({ events: [], next: 3, done: false, more: false })
      })

      it('an aborted signal ends the wait with no events', async () => {
        const { store, service } = await open()
        const id = await jobWithEvents(store, 3)
        const controller = new AbortController()
        const pending = service.poll(id, 3, 600_000, controller.signal)
        await settle()
        controller.abort()
        expect(await pending).toEqual({ events: [], next: 3, done: false, more: false })
      })

      it('says done once the terminal event is delivered, and at once for a poll at a finished head', async () => {
        const { store, service } = await open()
        const id = await jobWithEvents(store, 3)
        await service.appendEvents(id, [{ type: 'completed', data: { result: 1 } }])
        expect(await service.poll(id, 2, 600_000)).toMatchObject({ next: 4, done: true })
        expect((await service.poll(id, 2, 600_000)).events.map((e) => e.seq)).toEqual([3, 4])
        expect(await service.poll(id, 4, 600_000)).toEqual({ events: [], next: 4, done: true, more: false })
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
        const mores: boolean[] = []
        for (let after = 0, done = false; !done; ) {
          const response = await service.poll(id, after, 600_000)
          seen.push(...response.events.map((e) => e.seq))
          dones.push(response.done)
          mores.push(response.more)
          after = response.next
          done = response.done
        }
        expect(seen).toEqual(range(1, 8))
        expect(dones).toEqual([false, false, true])
        // `more` says a full page left events behind: the client asks again at once instead of waiting.
        expect(mores).toEqual([true, true, false])
      })

      it('from a trimmed position answers a snapshot with reset: true and reason trimmed', async () => {
        const { store, service } = await open({ retention: { maxEventsPerJob: 5 } })
        const id = await jobWithEvents(store, 12)
        expect(await service.poll(id, 2, 600_000)).toEqual({
          snapshot: { job: await service.getJob(id), reset: true, reason: 'trimmed' },
          events: [],
          next: 12,
          done: false,
          more: false,
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

    describe('dispatch', () => {
      /** A store whose JobService and Dispatcher share one hand-driven clock, so leases lapse and backoffs end without sleeping. */
      async function openDispatch(limits: Partial<CoreLimits> = {}) {
        const { store } = await open()
        const clock = { now: Date.now() }
        const service = new JobService(store, { ...defaultCoreLimits, ...limits }, () => new Date(clock.now))
        const dispatcher = new Dispatcher(service, () => clock.now)
        const claim = (types: readonly string[], worker = 'w', leaseMs = 10_000) =>
          dispatcher.claim({ types, worker, leaseMs, waitMs: 0 })
        return { store, service, dispatcher, clock, claim }
      }

      it('claim takes the oldest queued job among the given types, FIFO across types, and leaves other types queued', async () => {
        const { store } = await open()
        const ids: Record<string, string> = {}
        for (const [name, type] of [['a1', 'a'], ['c1', 'c'], ['b1', 'b'], ['a2', 'a'], ['b2', 'b']] as const) {
          ids[name] = (await store.createJob(newJob({ type }))).job.id
        }
        const order: string[] = []
        for (let guard = 0; guard < 10; guard++) {
          const held = lease()
          const result = await claimOne(store, ['a', 'b'], Date.now(), startUnder(held))
          if (result === null) break
          expect(result.job).toMatchObject({ status: 'running', attempt: 1, worker: held.worker })
          expect(result.events.map((e) => [e.seq, e.type])).toEqual([[2, 'started']])
          expect(result.lease).toEqual(held)
          order.push(result.job.id)
        }
        expect(order).toEqual([ids.a1, ids.b1, ids.a2, ids.b2])
        expect((await store.getJob(ids.c1 as string))?.status).toBe('queued')
        expect((await claimOne(store, ['c'], Date.now(), startUnder(lease())))?.job.id).toBe(ids.c1)
      })

      it('claim commits its events like an append: logged, reduced and heard by subscribers', async () => {
        const { store } = await open()
        const { job } = await store.createJob(newJob())
        const heard: JobEvent[] = []
        store.subscribe(job.id, (events) => heard.push(...events))
        const result = await claimOne(store, ['test'], Date.now(), startUnder(lease()))
        await vi.waitFor(() => expect(heard).toEqual(result?.events))
        expect((await store.readLog(job.id, 0, 10))?.events.slice(1)).toEqual(result?.events)
        expect(await store.getJob(job.id)).toEqual(result?.job)
      })

      it('claim skips jobs created with dispatch: false', async () => {
        const { store } = await open()
        const own = (await store.createJob(newJob({ dispatch: false }))).job.id
        const dispatched = (await store.createJob(newJob())).job.id
        expect((await claimOne(store, ['test'], Date.now(), startUnder(lease())))?.job.id).toBe(dispatched)
        expect(await claimOne(store, ['test'], Date.now(), startUnder(lease()))).toBeNull()
        expect((await store.getJob(own))?.status).toBe('queued')
      })

      it('claim skips a job whose availableAt is still ahead and hands it out from that moment on', async () => {
        const { store } = await open()
        const now = Date.now()
        const backedOff = (await store.createJob(newJob())).job.id
        const younger = (await store.createJob(newJob())).job.id
        expect((await claimOne(store, ['test'], now, startUnder(lease())))?.job.id).toBe(backedOff)
        await store.append(backedOff, (job) => ({ events: [requeued(job.attempt)], lease: null, availableAt: now + 5_000 }))
        // The older job waits out its backoff; the younger one is not held up behind it.
        expect((await claimOne(store, ['test'], now, startUnder(lease())))?.job.id).toBe(younger)
        expect(await claimOne(store, ['test'], now + 4_999, startUnder(lease()))).toBeNull()
        expect((await claimOne(store, ['test'], now + 5_000, startUnder(lease())))?.job).toMatchObject({ id: backedOff, attempt: 2 })
      })

      it('a re-queued job goes ahead of younger queued jobs', async () => {
        const { store } = await open()
        const older = (await store.createJob(newJob())).job.id
        const younger = (await store.createJob(newJob())).job.id
        await claimOne(store, ['test'], Date.now(), startUnder(lease()))
        await store.append(older, (job) => ({ events: [requeued(job.attempt)], lease: null, availableAt: 0 }))
        expect((await claimOne(store, ['test'], Date.now(), startUnder(lease())))?.job.id).toBe(older)
        expect((await claimOne(store, ['test'], Date.now(), startUnder(lease())))?.job.id).toBe(younger)
      })

      it('claim answers null when nothing is claimable, and for no types at all', async () => {
        const { store } = await open()
        const plan = vi.fn(startUnder(lease()))
        expect(await claimOne(store, ['test'], Date.now(), plan)).toBeNull()
        const { job } = await store.createJob(newJob({ type: 'other' }))
        expect(await claimOne(store, ['test', 'third'], Date.now(), plan)).toBeNull()
        expect(await claimOne(store, [], Date.now(), plan)).toBeNull()
        expect(plan).not.toHaveBeenCalled()
        expect((await store.getJob(job.id))?.status).toBe('queued')
      })

      it('the lease a claim set is kept with the job, and stops authorizing anything once the job completes, fails or is cancelled', async () => {
        const { store, service } = await open()
        const dispatcher = new Dispatcher(service)
        const leases: Lease[] = []
        const ids: string[] = []
        for (let i = 0; i < 3; i++) {
          const { job } = await store.createJob(newJob())
          const held = lease({ worker: `w${i}` })
          await claimOne(store, ['test'], Date.now(), startUnder(held))
          expect(await store.getRecord(job.id)).toEqual({ job: await store.getJob(job.id), lease: held, timers: { settings: {}, due: {} } })
          leases.push(held)
          ids.push(job.id)
        }
        const [done, failed, cancelled] = ids as [string, string, string]
        await service.appendEvents(done, [{ type: 'completed', data: { result: 1 } }], { lease: leases[0]?.token, batch: 1 })
        await service.appendEvents(failed, [{ type: 'failed', data: { code: 'e', message: 'm', retryable: false } }], { lease: leases[1]?.token, batch: 1 })
        await service.cancelJob(cancelled)
        // A cancel takes the lease away outright.
        expect(await store.getRecord(cancelled)).toEqual({ job: await store.getJob(cancelled), lease: null, timers: { settings: {}, due: {} } })
        for (const [i, id] of ids.entries()) {
          const token = leases[i]?.token as string
          expect((await store.getRecord(id))?.job, id).toEqual(await store.getJob(id))
          await expectCode(service.appendEvents(id, [chunk('more')], { lease: token, batch: 2 }), 'job_finished')
          await expectCode(dispatcher.release(id, token, null), 'job_finished')
          expect((await dispatcher.heartbeat(id, token, 60_000)).expiresAt, id).toBeNull()
        }
        // Whatever a backend keeps of an ended lease, it never lapses.
        expect(await store.expiredLeases(Date.now() + 3_600_000, 10)).toEqual([])
        expect(await store.getRecord(jobId())).toBeNull()
      })

      it('a plan returning no events but a lease persists the lease and appends nothing; one silent on the lease keeps it', async () => {
        const { store } = await open()
        const id = await jobWithEvents(store, 3)
        const heard: number[] = []
        store.subscribe(id, (events) => heard.push(...events.map((e) => e.seq)))
        const held = lease()
        const result = await store.append(id, () => ({ events: [], lease: held }))
        expect(result.events).toEqual([])
        expect(result.lease).toEqual(held)
        expect(result.job.seq).toBe(3)
        expect(await store.getRecord(id)).toEqual({ job: await store.getJob(id), lease: held, timers: { settings: {}, due: {} } })
        expect((await store.readLog(id, 0, 100))?.head).toBe(3)

        // Extended in place, as a heartbeat does: the lapse index follows the new expiry.
        const extended = { ...held, expiresAt: held.expiresAt + 60_000, lastBatch: 4 }
        await store.append(id, () => ({ events: [], lease: extended }))
        expect((await store.getRecord(id))?.lease).toEqual(extended)
        expect(await store.expiredLeases(held.expiresAt + 1, 10)).toEqual([])
        expect(await store.expiredLeases(extended.expiresAt + 1, 10)).toEqual([id])

        await store.append(id, () => ({ events: [chunk('kept')] }))
        expect((await store.getRecord(id))?.lease).toEqual(extended)
        await store.append(id, () => ({ events: [], lease: null }))
        expect(await store.getRecord(id)).toEqual({ job: await store.getJob(id), lease: null, timers: { settings: {}, due: {} } })
        expect(await store.expiredLeases(extended.expiresAt + 1, 10)).toEqual([])
        await store.append(id, () => [chunk('witness')])
        // Only the two events reached subscribers: a lease change alone publishes nothing.
        await vi.waitFor(() => expect(heard).toEqual([4, 5]))
      })

      it('expiredLeases lists the jobs whose lease ran out before now, and only those, up to limit', async () => {
        const { store } = await open()
        const now = Date.now()
        const withLease = async (expiresAt: number) => {
          const { job } = await store.createJob(newJob())
          await claimOne(store, ['test'], now, startUnder(lease({ expiresAt })))
          return job.id
        }
        const longAgo = await withLease(now - 60_000)
        const justNow = await withLease(now - 1)
        await withLease(now) // expires at now, not before it
        await withLease(now + 10_000)
        await jobWithEvents(store, 3) // running without a lease
        await store.createJob(newJob()) // queued
        expect((await store.expiredLeases(now, 100)).sort()).toEqual([longAgo, justNow].sort())
        const one = await store.expiredLeases(now, 1)
        expect(one).toHaveLength(1)
        expect([longAgo, justNow]).toContain(one[0])
        await store.append(justNow, (job) => ({ events: [requeued(job.attempt)], lease: null, availableAt: 0 }))
        expect(await store.expiredLeases(now, 100)).toEqual([longAgo])
      })

      it('queuePosition is the 1-based place among queued dispatched jobs of the type, and null when not queued', async () => {
        const { store, service } = await open()
        const create = async (type: string, dispatch = true) => (await store.createJob(newJob({ type, dispatch }))).job.id
        const a1 = await create('a')
        const b1 = await create('b')
        const a2 = await create('a')
        const own = await create('a', false)
        const a3 = await create('a')
        const positions = async () => Promise.all([a1, a2, a3, b1, own].map((id) => store.queuePosition(id)))
        expect(await positions()).toEqual([1, 2, 3, 1, null])
        await claimOne(store, ['a'], Date.now(), startUnder(lease()))
        expect(await positions()).toEqual([null, 1, 2, 1, null])
        await service.cancelJob(a2)
        expect(await positions()).toEqual([null, null, 1, 1, null])
        // Re-queued, the oldest job is first again.
        await store.append(a1, (job) => ({ events: [requeued(job.attempt)], lease: null, availableAt: 0 }))
        expect(await positions()).toEqual([1, null, 2, 1, null])
        expect(await store.queuePosition(jobId())).toBeNull()
        expect((await service.getJob(a3)).queuePosition).toBe(2)
      })

      it('subscribeQueue signals when a job of its type enters or leaves the queue, and not for other types or after unsubscribe', async () => {
        const { store, service, dispatcher } = await openDispatch()
        let heardA = 0
        let heardB = 0
        let witness = 0
        const stopA = store.subscribeQueue('qa', () => heardA++)
        store.subscribeQueue('qb', () => heardB++)
        store.subscribeQueue('qa', () => witness++)

        const { job } = await service.createJob({ type: 'qa' })
        await vi.waitFor(() => expect(heardA).toBe(1)) // entered
        const claimed = await dispatcher.claim({ types: ['qa'], worker: 'w', leaseMs: 10_000, waitMs: 0 })
        await vi.waitFor(() => expect(heardA).toBe(2)) // left
        await dispatcher.release(job.id, claimed?.lease.token ?? '', 'stopping')
        await vi.waitFor(() => expect(heardA).toBe(3)) // entered again
        await service.cancelJob(job.id)
        await vi.waitFor(() => expect(heardA).toBe(4)) // left
        await service.createJob({ type: 'qb' })
        await vi.waitFor(() => expect(heardB).toBe(1))
        expect(heardA).toBe(4)

        stopA()
        await service.createJob({ type: 'qa' })
        await vi.waitFor(() => expect(witness).toBe(5))
        expect(heardA).toBe(4)
      })

      it('work on running jobs and jobs created with dispatch: false never signal the queue', async () => {
        const { service, dispatcher, store } = await openDispatch()
        let heard = 0
        store.subscribeQueue('busy', () => heard++)
        await service.createJob({ type: 'busy' })
        const claimed = await dispatcher.claim({ types: ['busy'], worker: 'w', leaseMs: 10_000, waitMs: 0 })
        await vi.waitFor(() => expect(heard).toBe(2))
        const jobIdOf = claimed?.job.id as string
        for (let batch = 1; batch <= 5; batch++) {
          await service.appendEvents(jobIdOf, [chunk(String(batch)), { type: 'progress', data: { percent: batch } }], { lease: claimed?.lease.token, batch })
        }
        const own = await service.createJob({ type: 'busy', dispatch: false })
        await service.appendEvents(own.job.id, [chunk('x'), { type: 'completed', data: { result: null } }])
        // The next real change is the third signal: nothing in between made one.
        await service.createJob({ type: 'busy' })
        await vi.waitFor(() => expect(heard).toBe(3))
        await settle()
        expect(heard).toBe(3)
      })

      it('8 concurrent Dispatcher.claim callers over 200 jobs: every job is claimed exactly once, oldest first, none lost', async () => {
        const { store, service } = await open()
        const dispatcher = new Dispatcher(service)
        const ids: string[] = []
        for (let i = 0; i < 200; i++) ids.push((await service.createJob({ type: i % 3 === 0 ? 'red' : 'blue' })).job.id)
        const tokens = new Map<string, string>()
        let round = 0
        for (; round < 100; round++) {
          const results = await Promise.all(
            Array.from({ length: 8 }, (_, w) => dispatcher.claim({ types: ['blue', 'red'], worker: `w${w}`, leaseMs: 60_000, waitMs: 0 })),
          )
          const claimed = results.filter((r) => r !== null)
          if (claimed.length === 0) break
          for (const { job, lease: held } of claimed) {
            expect(tokens.has(job.id), `${job.id} claimed twice`).toBe(false)
            tokens.set(job.id, held.token)
          }
          // Rounds do not overlap, so each one takes exactly the oldest jobs still queued.
          expect(new Set(claimed.map((c) => c.job.id))).toEqual(new Set(ids.slice(round * 8, round * 8 + 8)))
        }
        expect(round).toBe(25)
        expect([...tokens.keys()].sort()).toEqual([...ids].sort())
        expect(new Set(tokens.values()).size).toBe(200)
        for (const id of ids) {
          const record = await store.getRecord(id)
          expect(record?.job).toMatchObject({ status: 'running', attempt: 1 })
          expect(record?.lease?.token).toBe(tokens.get(id))
          expect((await store.readLog(id, 0, 10))?.events.map((e) => e.type)).toEqual(['created', 'started'])
        }
        expect((await store.listJobs({ status: 'queued', limit: 10 })).jobs).toEqual([])
      })

      it('8 long-polling claimers while jobs are being created: each job is claimed once and none is left queued', async () => {
        const { store, service } = await open()
        const dispatcher = new Dispatcher(service)
        const total = 200
        const owners = new Map<string, number>()
        const twice: string[] = []
        const giveUpAt = Date.now() + 20_000
        const claimers = Array.from({ length: 8 }, async (_, w) => {
          while (owners.size < total && Date.now() < giveUpAt) {
            const claimed = await dispatcher.claim({ types: ['live'], worker: `w${w}`, leaseMs: 60_000, waitMs: 100 })
            if (claimed === null) continue
            if (owners.has(claimed.job.id)) twice.push(claimed.job.id)
            owners.set(claimed.job.id, w)
          }
        })
        const created: string[] = []
        for (let i = 0; i < total; i++) {
          created.push((await service.createJob({ type: 'live' })).job.id)
          // Let the claimers run between some of the creates, as on a busy node.
          if (i % 7 === 0) await new Promise((resolve) => setImmediate(resolve))
        }
        await Promise.all(claimers)
        expect(twice).toEqual([])
        expect([...owners.keys()].sort()).toEqual([...created].sort())
        expect((await store.listJobs({ type: 'live', status: 'queued', limit: 10 })).jobs).toEqual([])
        // More than one claimer took part.
        expect(new Set(owners.values()).size).toBeGreaterThan(1)
      })

      /** `store`, calling `answered` with each claim's results before the claimer hears them. */
      function watchingClaims(store: Store, answered: (results: AppendResult[]) => void): Store {
        return new Proxy(store, {
          get(target, key) {
            if (key === 'claim') {
              return (...args: Parameters<Store['claim']>) =>
                target.claim(...args).then((results) => {
                  answered(results)
                  return results
                })
            }
            const value: unknown = Reflect.get(target, key, target)
            return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value
          },
        })
      }

      /** `store`, counting the claims it has answered (each one a transaction on SQLite, a script on Redis). */
      function countingClaims(store: Store): { store: Store; claims: () => number } {
        let claims = 0
        return { store: watchingClaims(store, () => claims++), claims: () => claims }
      }

      it('a job entering the queue goes to the claim that has waited longest, and wakes one more at most — not every waiting claim', async () => {
        const { store: inner } = await open()
        const { store, claims } = countingClaims(inner)
        // No periodic look during the test: every look counted is a signal's.
        const dispatcher = new Dispatcher(new JobService(store, defaultCoreLimits), Date.now, { claimRecheckMs: 3_600_000 })
        const stops = Array.from({ length: 12 }, () => new AbortController())
        const waiting: Promise<Claimed[]>[] = []
        for (const [w, stop] of stops.entries()) {
          waiting.push(dispatcher.claimMany({ types: ['herd'], worker: `w${w}`, leaseMs: 60_000, waitMs: 60_000, signal: stop.signal }))
          // One at a time, so the order they wait in is known: each has looked once before the next comes.
          await vi.waitFor(() => expect(claims()).toBe(w + 1))
        }
        const before = claims()
        const { job } = await new JobService(inner, defaultCoreLimits).createJob({ type: 'herd' })
        const first = await Promise.race(waiting.map((claim, w) => claim.then((claimed) => ({ w, claimed }))))
        expect(first.w).toBe(0)
        expect(first.claimed.map((c) => c.job.id)).toEqual([job.id])
        // The woken claim's own look, and the next claim's (the job left the queue, and the woken
        // claim took all it asked for): on Redis the two signals may each wake one.
        await vi.waitFor(() => expect(claims() - before).toBeGreaterThanOrEqual(2))
        await new Promise((resolve) => setTimeout(resolve, 200))
        expect(claims() - before).toBeLessThanOrEqual(3)
        for (const stop of stops) stop.abort()
        const rest = await Promise.all(waiting.slice(1))
        expect(rest.every((claimed) => claimed.length === 0)).toBe(true)
      })

      it('a woken claim that goes away before it looks passes the signal on: the next waiting claim takes the job', async () => {
        const { store: inner, service } = await open()
        const { store, claims } = countingClaims(inner)
        const dispatcher = new Dispatcher(new JobService(store, defaultCoreLimits), Date.now, { claimRecheckMs: 3_600_000 })
        const gone = new AbortController()
        const first = dispatcher.claimMany({ types: ['pass'], worker: 'gone', leaseMs: 60_000, waitMs: 60_000, signal: gone.signal })
        await vi.waitFor(() => expect(claims()).toBe(1))
        const stop = new AbortController()
        const second = dispatcher.claimMany({ types: ['pass'], worker: 'next', leaseMs: 60_000, waitMs: 60_000, signal: stop.signal })
        await vi.waitFor(() => expect(claims()).toBe(2))
        // Heard after the dispatcher's own listener, which has just handed the signal to `first`.
        const off = store.subscribeQueue('pass', () => gone.abort())
        try {
          const { job } = await service.createJob({ type: 'pass' })
          expect(await first).toEqual([])
          const claimed = await second
          expect(claimed.map((c) => c.job.id)).toEqual([job.id])
          expect(claimed[0]?.lease.leaseMs).toBe(60_000)
        } finally {
          off()
          stop.abort()
        }
      })

      it('a claim whose worker goes away while the store hands it a job gives the job back at once: the next waiting claim takes it', async () => {
        const { store: inner, service } = await open()
        const gone = new AbortController()
        // The worker goes away after the store took the job for its claim, before the claim is answered.
        let looks = 0
        const store = watchingClaims(inner, (results) => {
          looks++
          if (results.length > 0) gone.abort()
        })
        // No periodic look: only the job given back can wake the next claim, within the test's time.
        const dispatcher = new Dispatcher(new JobService(store, defaultCoreLimits), Date.now, { claimRecheckMs: 3_600_000 })
        const first = dispatcher.claimMany({ types: ['abandoned'], worker: 'gone', leaseMs: 60_000, waitMs: 60_000, signal: gone.signal })
        const stop = new AbortController()
        const second = dispatcher.claimMany({ types: ['abandoned'], worker: 'next', leaseMs: 60_000, waitMs: 60_000, signal: stop.signal })
        try {
          // Both have looked once and wait, the first longest: the job's signal goes to it.
          await vi.waitFor(() => expect(looks).toBe(2))
          const { job } = await service.createJob({ type: 'abandoned' })
          expect(await first).toEqual([])
          const claimed = await second
          expect(claimed.map((c) => c.job.id)).toEqual([job.id])
          const log = (await service.store.readLog(job.id, 0, 100))?.events ?? []
          expect(log.map((event) => event.type)).toEqual(['created', 'started', 'requeued', 'started'])
        } finally {
          stop.abort()
          gone.abort()
        }
      })

      it('jobs that become claimable without a signal (backoffs ending) are found by the periodic look, and each waiting claim takes one', async () => {
        const { store } = await open()
        const clock = { now: Date.now() }
        const service = new JobService(store, { ...defaultCoreLimits, retryBackoffMs: 1_000 }, () => new Date(clock.now))
        const dispatcher = new Dispatcher(service, () => clock.now, { claimRecheckMs: 20 })
        const flaky = { type: 'failed', data: { code: 'busy', message: 'later', retryable: true } } as const
        const ids: string[] = []
        for (let i = 0; i < 3; i++) {
          const { job } = await service.createJob({ type: 'backoff', maxAttempts: 2 })
          const claimed = await dispatcher.claim({ types: ['backoff'], worker: 'first', leaseMs: 60_000, waitMs: 0 })
          expect(claimed?.job.id).toBe(job.id)
          await service.appendEvents(job.id, [flaky], { lease: claimed?.lease.token, batch: 1 })
          ids.push(job.id)
        }
        const waiting = Array.from({ length: 3 }, (_, w) => dispatcher.claimMany({ types: ['backoff'], worker: `w${w}`, leaseMs: 60_000, waitMs: 30_000 }))
        // Nothing is claimable yet; then every backoff ends, and no store event says so.
        await new Promise((resolve) => setTimeout(resolve, 100))
        clock.now += 1_000
        const claimed = (await Promise.all(waiting)).map((list) => list.map((c) => c.job.id))
        expect(claimed.every((list) => list.length === 1)).toBe(true)
        expect(claimed.flat().sort()).toEqual([...ids].sort())
      })

      it('a claim of several jobs takes the oldest claimable ones, at most max, each under its own lease, in order', async () => {
        const { store } = await open()
        const now = Date.now()
        const ids: string[] = []
        for (let i = 0; i < 7; i++) ids.push((await store.createJob(newJob({ type: i % 2 === 0 ? 'a' : 'b' }))).job.id)
        await store.createJob(newJob({ type: 'c' }))
        const own = (await store.createJob(newJob({ type: 'a', dispatch: false }))).job.id
        // The oldest job waits out a backoff: it is skipped, not the end of the claim.
        await claimOne(store, ['a'], now, startUnder(lease()))
        await store.append(ids[0] as string, (job) => ({ events: [requeued(job.attempt)], lease: null, availableAt: now + 5_000 }))
        const leases: Lease[] = []
        const plan: AppendPlan = (job, current, timers) => {
          const held = lease({ worker: `w${leases.length}` })
          leases.push(held)
          return startUnder(held)(job, current, timers)
        }
        const first = await store.claim(['a', 'b'], now, 4, plan)
        expect(first.map((result) => result.job.id)).toEqual(ids.slice(1, 5))
        expect(first.map((result) => result.lease)).toEqual(leases)
        for (const result of first) {
          expect(result.job).toMatchObject({ status: 'running', attempt: 1 })
          expect(result.events.map((e) => e.type)).toEqual(['started'])
          expect((await store.getRecord(result.job.id))?.lease).toEqual(result.lease)
        }
        // Fewer left than max: what there is; then nothing until the backoff ends.
        expect((await store.claim(['a', 'b'], now, 10, plan)).map((result) => result.job.id)).toEqual(ids.slice(5))
        expect(await store.claim(['a', 'b'], now, 10, plan)).toEqual([])
        const later = await store.claim(['a', 'b', 'c'], now + 5_000, 1, plan)
        expect(later.map((result) => result.job)).toMatchObject([{ id: ids[0], attempt: 2 }])
        expect(new Set(leases.map((held) => held.token)).size).toBe(leases.length)
        expect((await store.getJob(own))?.status).toBe('queued')
        expect(await store.claim([], now, 5, plan)).toEqual([])
      })

      it('8 concurrent batch claimers (max 1–7) over 300 jobs: every job is claimed exactly once, under the lease it was answered with', async () => {
        const { store, service } = await open()
        const dispatcher = new Dispatcher(service)
        const ids: string[] = []
        for (let i = 0; i < 300; i++) ids.push((await service.createJob({ type: i % 3 === 0 ? 'red' : 'blue' })).job.id)
        const tokens = new Map<string, string>()
        const twice: string[] = []
        let tooMany = 0
        const claimers = Array.from({ length: 8 }, async (_, w) => {
          const max = (w % 7) + 1
          for (;;) {
            const claimed = await dispatcher.claimMany({ types: ['blue', 'red'], worker: `w${w}`, leaseMs: 60_000, waitMs: 0, max })
            if (claimed.length === 0) return
            if (claimed.length > max) tooMany++
            for (const { job, lease: held } of claimed) {
              if (tokens.has(job.id)) twice.push(job.id)
              tokens.set(job.id, held.token)
            }
          }
        })
        await Promise.all(claimers)
        expect(twice).toEqual([])
        expect(tooMany).toBe(0)
        expect([...tokens.keys()].sort()).toEqual([...ids].sort())
        expect(new Set(tokens.values()).size).toBe(300)
        for (const id of ids) {
          const record = await store.getRecord(id)
          expect(record?.job).toMatchObject({ status: 'running', attempt: 1 })
          expect(record?.lease?.token).toBe(tokens.get(id))
          expect((await store.readLog(id, 0, 10))?.events.map((e) => e.type)).toEqual(['created', 'started'])
        }
      })

      it('leases of a batch claim are each their own: one job completed, one released, one lapsed, the rest untouched', async () => {
        const { store, service, dispatcher, clock } = await openDispatch()
        for (let i = 0; i < 4; i++) await service.createJob({ type: 'batch', maxAttempts: 1 })
        const claimed = await dispatcher.claimMany({ types: ['batch'], worker: 'w', leaseMs: 10_000, waitMs: 0, max: 4 })
        expect(claimed).toHaveLength(4)
        const [done, released, lapsed, kept] = claimed as [Claimed, Claimed, Claimed, Claimed]
        await expectCode(service.appendEvents(done.job.id, [{ type: 'completed', data: { result: 1 } }], { lease: released.lease.token, batch: 1 }), 'lease_lost')
        await service.appendEvents(done.job.id, [{ type: 'completed', data: { result: 1 } }], { lease: done.lease.token, batch: 1 })
        await dispatcher.release(released.job.id, released.lease.token, null)
        await dispatcher.heartbeat(kept.job.id, kept.lease.token, 60_000)
        clock.now += 20_000
        expect(await dispatcher.reclaimLapsed()).toBe(1)
        expect((await store.getJob(done.job.id))?.status).toBe('completed')
        expect((await store.getJob(released.job.id))?.status).toBe('queued')
        expect((await store.getJob(lapsed.job.id))?.status).toBe('failed')
        expect((await store.getRecord(kept.job.id))?.lease?.token).toBe(kept.lease.token)
        expect((await store.getJob(kept.job.id))?.status).toBe('running')
      })

      it('a waiting claim wakes when a job of its type is created', async () => {
        const { service } = await open()
        const dispatcher = new Dispatcher(service)
        let settled = false
        const waiting = dispatcher.claim({ types: ['wake'], worker: 'w', leaseMs: 10_000, waitMs: 600_000 }).finally(() => (settled = true))
        await settle()
        expect(settled).toBe(false)
        await service.createJob({ type: 'other' })
        await settle()
        expect(settled).toBe(false)
        const { job } = await service.createJob({ type: 'wake' })
        expect((await waiting)?.job).toMatchObject({ id: job.id, status: 'running', attempt: 1 })
      })

      it('a waiting claim whose caller went away takes no job (regression: it claimed a job that came off backoff for no one)', async () => {
        const { store, service, dispatcher, clock, claim } = await openDispatch({ retryBackoffMs: 1_000 })
        const { job } = await service.createJob({ type: 'gone' })
        const first = await claim(['gone'])
        await service.appendEvents(job.id, [{ type: 'failed', data: { code: 'flaky', message: 'm', retryable: true } }], { lease: first?.lease.token })
        const controller = new AbortController()
        const waiting = dispatcher.claim({ types: ['gone'], worker: 'departed', leaseMs: 10_000, waitMs: 600_000, signal: controller.signal })
        await settle()
        // The backoff ends (no signal is sent for that) and the caller leaves in the same instant.
        clock.now += 1_000
        controller.abort()
        expect(await waiting).toBeNull()
        expect(await store.getJob(job.id)).toMatchObject({ status: 'queued', attempt: 1, worker: null })
        expect((await claim(['gone'], 'present'))?.job).toMatchObject({ id: job.id, attempt: 2, worker: 'present' })
      })

      it('reclaimLapsed re-queues a lapsed job with its checkpoint and counts the attempt, then fails it with worker_lost after maxAttempts', async () => {
        const { store, service, dispatcher, clock, claim } = await openDispatch()
        const { job } = await service.createJob({ type: 'render', maxAttempts: 2 })
        const first = await claim(['render'], 'w1')
        expect(first?.job).toMatchObject({ attempt: 1, worker: 'w1' })
        await service.appendEvents(job.id, [chunk('a'), checkpoint({ step: 3 })], { lease: first?.lease.token, batch: 1 })

        clock.now += 10_000 // exactly at expiry: not lapsed yet
        expect(await dispatcher.reclaimLapsed()).toBe(0)
        clock.now += 1
        expect(await store.expiredLeases(clock.now, 10)).toEqual([job.id])
        expect(await dispatcher.reclaimLapsed()).toBe(1)
        const back = await store.getRecord(job.id)
        expect(back).toMatchObject({ lease: null, job: { status: 'queued', attempt: 1, worker: null, checkpoint: { step: 3 }, text: 'a' } })
        const log = (await store.readLog(job.id, 0, 100))?.events ?? []
        expect(log.at(-1)).toMatchObject({ seq: 5, type: 'requeued', data: { reason: 'worker_lost', attempt: 1, retryAt: null } })
        expect(await store.queuePosition(job.id)).toBe(1)
        expect(await store.expiredLeases(clock.now, 10)).toEqual([])
        expect(await dispatcher.reclaimLapsed()).toBe(0)

        // The lost worker's late write changes nothing.
        await expectCode(service.appendEvents(job.id, [chunk('late')], { lease: first?.lease.token, batch: 2 }), 'lease_lost')
        expect((await store.getJob(job.id))?.seq).toBe(5)

        const second = await claim(['render'], 'w2')
        expect(second?.job).toMatchObject({ id: job.id, attempt: 2, worker: 'w2', checkpoint: { step: 3 }, text: 'a', seq: 6 })
        clock.now += 10_001
        expect(await dispatcher.reclaimLapsed()).toBe(1)
        const final = await store.getRecord(job.id)
        expect(final).toMatchObject({ lease: null, job: { status: 'failed', attempt: 2, checkpoint: { step: 3 }, error: { code: 'worker_lost', retryable: false } } })
        expect(await store.queuePosition(job.id)).toBeNull()
        expect(await dispatcher.reclaimLapsed()).toBe(0)
        expect(await claim(['render'])).toBeNull()
        expect((await store.readLog(job.id, 0, 100))?.events.map((e) => e.type)).toEqual([
          'created', 'started', 'chunk', 'checkpoint', 'requeued', 'started', 'failed',
        ])
      })

      it('a heartbeat keeps the lease from lapsing; after a cancel it answers cancelled', async () => {
        const { store, service, dispatcher, clock, claim } = await openDispatch()
        const { job } = await service.createJob({ type: 'beat' })
        const claimed = await claim(['beat'])
        const token = claimed?.lease.token ?? ''
        clock.now += 8_000
        expect(await dispatcher.heartbeat(job.id, token, 10_000)).toEqual({
          status: 'running',
          cancelled: false,
          expiresAt: new Date(clock.now + 10_000).toISOString(),
          timedOut: false,
        })
        clock.now += 8_000 // past the first lease, within the extended one
        expect(await dispatcher.reclaimLapsed()).toBe(0)
        expect((await store.getRecord(job.id))?.lease?.expiresAt).toBe(clock.now + 2_000)
        await expectCode(dispatcher.heartbeat(job.id, 'lease_someone-else', 10_000), 'lease_lost')
        const seq = (await store.getJob(job.id))?.seq
        await service.cancelJob(job.id, 'user')
        expect(await dispatcher.heartbeat(job.id, token, 10_000)).toEqual({ status: 'cancelled', cancelled: true, expiresAt: null, timedOut: false })
        await expectCode(service.appendEvents(job.id, [chunk('x')], { lease: token, batch: 1 }), 'job_finished')
        expect((await store.getJob(job.id))?.seq).toBe((seq ?? 0) + 1)
      })

      it('writes with another lease, an expired lease or no lease are refused with lease_lost and append nothing', async () => {
        const { store, service, clock, claim } = await openDispatch()
        const { job } = await service.createJob({ type: 'guarded' })
        const claimed = await claim(['guarded'])
        const token = claimed?.lease.token
        await service.appendEvents(job.id, [chunk('ok')], { lease: token, batch: 1 })
        await expectCode(service.appendEvents(job.id, [chunk('x')], { lease: 'lease_forged', batch: 2 }), 'lease_lost')
        await expectCode(service.appendEvents(job.id, [chunk('x')]), 'lease_lost')
        clock.now += 10_001 // lapsed, not yet reclaimed
        await expectCode(service.appendEvents(job.id, [chunk('x')], { lease: token, batch: 2 }), 'lease_lost')
        expect(await store.getJob(job.id)).toMatchObject({ seq: 3, text: 'ok' })
        // A lease sent for a job no worker holds is refused too.
        const own = await service.createJob({ type: 'guarded', dispatch: false })
        await expectCode(service.appendEvents(own.job.id, [chunk('x')], { lease: token }), 'lease_lost')
        expect((await store.getJob(own.job.id))?.seq).toBe(1)
      })

      it('a repeated write batch appends nothing and says duplicate; the last batch is kept with the lease', async () => {
        const { store, service, claim } = await openDispatch()
        const { job } = await service.createJob({ type: 'batches' })
        const token = (await claim(['batches']))?.lease.token
        const first = await service.appendEvents(job.id, [chunk('a'), chunk('b')], { lease: token, batch: 1 })
        expect(first).toMatchObject({ duplicate: false, events: [{ seq: 3 }, { seq: 4 }] })
        const again = await service.appendEvents(job.id, [chunk('a'), chunk('b')], { lease: token, batch: 1 })
        expect(again).toMatchObject({ duplicate: true, events: [], job: { seq: 4, text: 'ab' } })
        await service.appendEvents(job.id, [chunk('c')], { lease: token, batch: 2 })
        expect((await service.appendEvents(job.id, [chunk('a')], { lease: token, batch: 1 })).duplicate).toBe(true)
        expect((await store.getRecord(job.id))?.lease?.lastBatch).toBe(2)
        expect(await store.getJob(job.id)).toMatchObject({ seq: 5, text: 'abc' })
        // The batch that finished the job can be retried too (its answer was lost); a new one is refused.
        const completed = { type: 'completed', data: { result: 1 } } as const
        await service.appendEvents(job.id, [completed], { lease: token, batch: 3 })
        expect(await service.appendEvents(job.id, [completed], { lease: token, batch: 3 })).toMatchObject({ duplicate: true, events: [], job: { seq: 6 } })
        await expectCode(service.appendEvents(job.id, [chunk('d')], { lease: token, batch: 4 }), 'job_finished')
        // Another worker's token never passes for a duplicate.
        await expectCode(service.appendEvents(job.id, [completed], { lease: 'lease_other', batch: 3 }), 'job_finished')
      })

      it('a retryable failure under a lease re-queues with a doubling backoff, unclaimable until retryAt, and fails on the last attempt', async () => {
        const { store, service, clock, claim } = await openDispatch({ retryBackoffMs: 1_000 })
        const { job } = await service.createJob({ type: 'retry', maxAttempts: 3 })
        const flaky = { type: 'failed', data: { code: 'upstream_503', message: 'try later', retryable: true } } as const
        let claimed = await claim(['retry'])
        const firstFail = await service.appendEvents(job.id, [checkpoint({ step: 1 }), flaky], { lease: claimed?.lease.token, batch: 1 })
        expect(firstFail.job).toMatchObject({ status: 'queued', error: { code: 'upstream_503', retryable: true }, checkpoint: { step: 1 } })
        expect(firstFail.events.at(-1)).toMatchObject({
          type: 'requeued',
          data: { reason: 'upstream_503', attempt: 1, retryAt: new Date(clock.now + 1_000).toISOString(), error: { code: 'upstream_503' } },
        })
        // The failing worker's lease is spent: it lapses never and authorizes no new write.
        expect(await store.expiredLeases(clock.now + 3_600_000, 10)).toEqual([])
        await expectCode(service.appendEvents(job.id, [chunk('x')], { lease: claimed?.lease.token, batch: 2 }), 'lease_lost')
        clock.now += 999
        expect(await claim(['retry'])).toBeNull()
        expect(await store.queuePosition(job.id)).toBe(1)
        clock.now += 1
        claimed = await claim(['retry'])
        expect(claimed?.job).toMatchObject({ id: job.id, attempt: 2, checkpoint: { step: 1 }, error: null })

        const secondFail = await service.appendEvents(job.id, [flaky], { lease: claimed?.lease.token, batch: 1 })
        expect(secondFail.events.at(-1)?.data).toMatchObject({ attempt: 2, retryAt: new Date(clock.now + 2_000).toISOString() })
        clock.now += 1_999
        expect(await claim(['retry'])).toBeNull()
        clock.now += 1
        claimed = await claim(['retry'])
        expect(claimed?.job.attempt).toBe(3)
        const last = await service.appendEvents(job.id, [flaky], { lease: claimed?.lease.token, batch: 1 })
        expect(last.job).toMatchObject({ status: 'failed', error: { code: 'upstream_503', retryable: true } })
        expect(last.events.map((e) => e.type)).toEqual(['failed'])
        expect(await store.expiredLeases(clock.now + 3_600_000, 10)).toEqual([])
        clock.now += 600_000
        expect(await claim(['retry'])).toBeNull()
      })

      it('release re-queues at once with the checkpoint, ahead of younger jobs; a stale lease cannot release', async () => {
        const { store, service, dispatcher, claim } = await openDispatch()
        const { job } = await service.createJob({ type: 'rel' })
        const younger = await service.createJob({ type: 'rel' })
        const claimed = await claim(['rel'])
        await service.appendEvents(job.id, [checkpoint({ step: 2 })], { lease: claimed?.lease.token, batch: 1 })
        const released = await dispatcher.release(job.id, claimed?.lease.token ?? '', 'shutting down')
        expect(released.events.map((e) => [e.type, e.data])).toEqual([['requeued', { reason: 'shutting down', attempt: 1, retryAt: null }]])
        expect(await store.getRecord(job.id)).toMatchObject({ lease: null, job: { status: 'queued', checkpoint: { step: 2 } } })
        await expectCode(dispatcher.release(job.id, claimed?.lease.token ?? '', null), 'lease_lost')
        const next = await claim(['rel'], 'w2')
        expect(next?.job).toMatchObject({ id: job.id, attempt: 2, checkpoint: { step: 2 } })
        expect((await claim(['rel']))?.job.id).toBe(younger.job.id)
        await expectCode(dispatcher.release(job.id, claimed?.lease.token ?? '', null), 'lease_lost')
        expect((await dispatcher.release(job.id, next?.lease.token ?? '', null)).events[0]?.data).toMatchObject({ reason: 'released' })
      })

      it('resumeJob re-queues a failed or cancelled job with its checkpoint and a renewed attempt budget, and refuses the others', async () => {
        const { store, service, dispatcher, clock, claim } = await openDispatch({ maxAttempts: 2 })
        const { job } = await service.createJob({ type: 'resume' })
        for (let attempt = 1; attempt <= 2; attempt++) {
          const claimed = await claim(['resume'])
          await service.appendEvents(job.id, [checkpoint({ step: attempt })], { lease: claimed?.lease.token, batch: 1 })
          clock.now += 10_001
          await dispatcher.reclaimLapsed()
        }
        expect(await store.getJob(job.id)).toMatchObject({ status: 'failed', attempt: 2, maxAttempts: 2 })
        const resumed = await service.resumeJob(job.id)
        expect(resumed.events.map((e) => [e.type, e.data])).toEqual([
          ['requeued', { reason: 'resumed', attempt: 2, retryAt: null, maxAttempts: 4 }],
        ])
        expect(resumed.job).toMatchObject({ status: 'queued', maxAttempts: 4, checkpoint: { step: 2 }, error: null, finishedAt: null })
        expect(await store.queuePosition(job.id)).toBe(1)
        const again = await claim(['resume'])
        expect(again?.job).toMatchObject({ id: job.id, attempt: 3, checkpoint: { step: 2 } })
        await expectCode(service.resumeJob(job.id), 'invalid_transition') // running

        await service.cancelJob(job.id)
        expect((await service.resumeJob(job.id)).job).toMatchObject({ status: 'queued', attempt: 3, maxAttempts: 5 })
        await expectCode(service.resumeJob(job.id), 'invalid_transition') // queued
        const last = await claim(['resume'])
        await service.appendEvents(job.id, [{ type: 'completed', data: { result: 'ok' } }], { lease: last?.lease.token, batch: 1 })
        await expectCode(service.resumeJob(job.id), 'job_finished')
        await expectCode(service.resumeJob(jobId()), 'job_not_found')
      })

      it('signals answers at once with cancelled, finished or lease_lost, and a waiting one wakes on the change', async () => {
        const { service, dispatcher, clock, claim } = await openDispatch()
        const ids: string[] = []
        const tokens: string[] = []
        for (let i = 0; i < 4; i++) {
          ids.push((await service.createJob({ type: 'sig' })).job.id)
          tokens.push((await claim(['sig']))?.lease.token ?? '')
        }
        const held = ids.map((id, i) => ({ id, lease: tokens[i] as string }))
        expect(await dispatcher.signals(held, 0)).toEqual([])

        const waiting = dispatcher.signals(held, 600_000)
        await settle()
        await service.cancelJob(ids[0] as string)
        expect(await waiting).toEqual([{ jobId: ids[0], reason: 'cancelled' }])

        await service.appendEvents(ids[1] as string, [{ type: 'completed', data: { result: null } }], { lease: tokens[1], batch: 1 })
        clock.now += 10_001 // the leases of ids[2] and ids[3] lapse
        expect(await dispatcher.signals([...held, { id: jobId(), lease: 'lease_x' }], 0)).toEqual([
          { jobId: ids[0], reason: 'cancelled' },
          { jobId: ids[1], reason: 'finished' },
          { jobId: ids[2], reason: 'lease_lost' },
          { jobId: ids[3], reason: 'lease_lost' },
          { jobId: expect.any(String), reason: 'lease_lost' },
        ])
      })

      it('a waiting signals call sleeps through a job its own lease completed, lists it when something else ends the wait', async () => {
        const { service, dispatcher, claim } = await openDispatch()
        const ids: string[] = []
        const tokens: string[] = []
        for (let i = 0; i < 2; i++) {
          ids.push((await service.createJob({ type: 'own' })).job.id)
          tokens.push((await claim(['own']))?.lease.token ?? '')
        }
        const held = ids.map((id, i) => ({ id, lease: tokens[i] as string }))
        let answered = false
        const waiting = dispatcher.signals(held, 600_000).finally(() => (answered = true))
        await settle()
        await service.appendEvents(ids[0] as string, [{ type: 'completed', data: { result: null } }], { lease: tokens[0], batch: 1 })
        await settle()
        expect(answered).toBe(false)
        await service.cancelJob(ids[1] as string)
        expect(await waiting).toEqual([
          { jobId: ids[0], reason: 'finished' },
          { jobId: ids[1], reason: 'cancelled' },
        ])
      })

      it('a waiting signals call sleeps through its job\'s own progress writes and answers the cancel that follows (it used to answer empty on the first write)', async () => {
        const { service, dispatcher, store, claim } = await openDispatch()
        const { job } = await service.createJob({ type: 'busy' })
        const lease = (await claim(['busy']))?.lease.token ?? ''
        const held = [{ id: job.id, lease }]
        const waiting = dispatcher.signals(held, 600_000)
        await settle()
        // The job's worker writes a few times; a subscriber of our own sees each write delivered.
        let delivered = 0
        const stop = store.subscribe(job.id, (events) => (delivered += events.length))
        for (let batch = 1; batch <= 3; batch++) {
          await service.appendEvents(job.id, [{ type: 'progress', data: { percent: batch * 10 } }, { type: 'chunk', data: { text: 'x' } }], { lease, batch })
        }
        await vi.waitFor(() => expect(delivered).toBe(6))
        stop()
        expect(await Promise.race([waiting, settle().then(() => 'still waiting')])).toBe('still waiting')
        await service.cancelJob(job.id)
        expect(await waiting).toEqual([{ jobId: job.id, reason: 'cancelled' }])
      })

      it('a queued job\'s watcher gets queue messages as jobs ahead of it are claimed', async () => {
        const { service, dispatcher } = await openDispatch()
        for (let i = 0; i < 2; i++) await service.createJob({ type: 'line' })
        const { job } = await service.createJob({ type: 'line' })
        const sink = recordingSink()
        const subscription = await service.subscribe(job.id, undefined, sink)
        expect(sink.messages[0]).toMatchObject({ type: 'snapshot', job: { queuePosition: 3 } })
        const claimOne = () => dispatcher.claim({ types: ['line'], worker: 'w', leaseMs: 10_000, waitMs: 0 })
        await claimOne()
        await vi.waitFor(() => expect(sink.messages.at(-1)).toEqual({ type: 'queue', position: 2 }))
        await claimOne()
        await vi.waitFor(() => expect(sink.messages.at(-1)).toEqual({ type: 'queue', position: 1 }))
        const mine = await claimOne()
        expect(mine?.job.id).toBe(job.id)
        await vi.waitFor(() => expect(sink.messages.at(-1)).toMatchObject({ type: 'event', event: { type: 'started' } }))
        await new Promise((resolve) => setTimeout(resolve, 150))
        expect(sink.messages.filter((m) => m.type === 'queue')).toEqual([
          { type: 'queue', position: 2 },
          { type: 'queue', position: 1 },
        ])
        subscription.close()
      })
    })

    describe('app features (metadata, stage plans)', () => {
      it("keeps a job's stage plan and merged metadata through the store, on reads and in its log", async () => {
        const { store, service } = await open()
        const plan = [
          { name: 'decode', from: 0, to: 40 },
          { name: 'encode', from: 40, to: 100 },
        ]
        const { job } = await store.createJob(newJob({ plan }))
        expect(job.plan?.map((stage) => stage.status)).toEqual(['pending', 'pending'])
        await service.appendEvents(job.id, [
          { type: 'progress', data: { stage: 'decode', fraction: 1, metadata: { frames: 10, codec: 'opus' } } },
          { type: 'item', data: { id: 'a', metadata: { bytes: 5 } } },
        ])
        await service.appendEvents(job.id, [{ type: 'progress', data: { stage: 'encode', fraction: 0.5, metadata: { frames: 20, codec: null } } }])
        const read = await store.getJob(job.id)
        expect(read?.progress).toEqual({ stage: 'encode', percent: 70, message: null, metadata: { frames: 20 } })
        expect(read?.plan?.map((stage) => `${stage.name}:${stage.status}`)).toEqual(['decode:done', 'encode:running'])
        expect(read?.items[0]?.metadata).toEqual({ bytes: 5 })
        const log = await store.readLog(job.id, 0, 100)
        expect(reduceEvents(log?.events ?? [])).toEqual(read)
      })

      it('stores a large value once, apart from the log: put, get, overwrite, delete, and gone with its job on sweep', async () => {
        const { store } = await open({ retention: { ttlMs: { completed: 0, failed: 0, cancelled: 0 } } })
        const { job } = await store.createJob(newJob())
        const big = JSON.stringify({ transcript: 'w'.repeat(200_000) })
        await store.putValue(job.id, 'v_a', big)
        await store.putValue(job.id, 'v_b', '"second"')
        expect(await store.getValue(job.id, 'v_a')).toBe(big)
        await store.putValue(job.id, 'v_b', '"overwritten"')
        expect(await store.getValue(job.id, 'v_b')).toBe('"overwritten"')
        await store.deleteValue(job.id, 'v_b')
        expect(await store.getValue(job.id, 'v_b')).toBeNull()
        expect(await store.getValue(job.id, 'v_missing')).toBeNull()
        await store.append(job.id, () => [started(), { type: 'completed', data: { result: null, resultRef: { ref: 'v_a', size: big.length } } }])
        expect((await store.getJob(job.id))?.resultRef).toEqual({ ref: 'v_a', size: big.length })
        await store.sweep(Date.now() + 1000)
        expect(await store.getJob(job.id)).toBeNull()
        expect(await store.getValue(job.id, 'v_a')).toBeNull()
      })

      it('JobService keeps a result or checkpoint above inlineValueBytes out of events and snapshots, and drops a replaced checkpoint', async () => {
        const { store, service } = await open({ limits: { inlineValueBytes: 1024 } })
        const { job } = await store.createJob(newJob({ dispatch: false }))
        const first = { files: ['a'.repeat(3000)] }
        const second = { files: ['b'.repeat(3000)] }
        const one = await service.appendEvents(job.id, [chunk('text'), checkpoint(first)], { storeLargeValues: true })
        const ref1 = one.job.checkpointRef?.ref as string
        expect(one.job).toMatchObject({ checkpoint: null, checkpointRef: { size: JSON.stringify(first).length }, checkpointTextLength: 4 })
        expect(JSON.parse(await service.valueJson(job.id, 'checkpoint'))).toEqual(first)
        await service.appendEvents(job.id, [checkpoint(second)], { storeLargeValues: true })
        expect(JSON.parse(await service.valueJson(job.id, 'checkpoint'))).toEqual(second)
        expect(await store.getValue(job.id, ref1)).toBeNull()
        // A small checkpoint goes back inline, and the stored one is dropped.
        const small = await service.appendEvents(job.id, [checkpoint({ n: 1 })], { storeLargeValues: true })
        expect(small.job.checkpoint).toEqual({ n: 1 })
        expect('checkpointRef' in small.job).toBe(false)
        const result = { transcript: 'r'.repeat(5000) }
        const done = await service.appendEvents(job.id, [{ type: 'completed', data: { result } }], { storeLargeValues: true })
        expect(done.events.at(-1)?.data).toEqual({ result: null, resultRef: { ref: done.job.resultRef?.ref, size: JSON.stringify(result).length } })
        expect(JSON.parse(await service.valueJson(job.id, 'result'))).toEqual(result)
        const log = await store.readLog(job.id, 0, 100)
        expect(JSON.stringify(log?.events).length).toBeLessThan(2000)
        expect(reduceEvents(log?.events ?? [])).toEqual(await store.getJob(job.id))
      })

      it('a large checkpoint still marks where the text rolls back to on resume', async () => {
        const { store, service } = await open({ limits: { inlineValueBytes: 256 } })
        const { job } = await store.createJob(newJob({ dispatch: false }))
        await service.appendEvents(job.id, [chunk('kept '), checkpoint({ blob: 'c'.repeat(1000) }), chunk('dropped')], { storeLargeValues: true })
        await service.cancelJob(job.id)
        const resumed = await service.resumeJob(job.id)
        expect(resumed.job.text).toBe('kept ')
      })

      it('a resumed job starts from the text its checkpoint held: the requeue cuts what came after, once', async () => {
        const { store, service } = await open()
        const { job } = await store.createJob(newJob({ dispatch: false }))
        await service.appendEvents(job.id, [chunk('one '), checkpoint({ at: 1 }), chunk('two '), chunk('three')])
        await service.cancelJob(job.id)
        const resumed = await service.resumeJob(job.id)
        expect(resumed.events[0]).toMatchObject({ type: 'requeued', data: { reason: 'resumed', textLength: 4 } })
        expect(resumed.job.text).toBe('one ')
        await service.appendEvents(job.id, [chunk('two '), chunk('three')])
        const read = await store.getJob(job.id)
        expect(read?.text).toBe('one two three')
        expect(read?.checkpointTextLength).toBe(4)
      })

      it('a retryable failure in the same batch as a checkpoint rolls back to that checkpoint; without one, to no text', async () => {
        const { store, service } = await open()
        const dispatcher = new Dispatcher(service)
        const { job } = await store.createJob(newJob())
        const claim = await dispatcher.claim({ types: ['test'], worker: 'w', leaseMs: 30_000, waitMs: 0 })
        expect(claim?.job.id).toBe(job.id)
        const failure: EventDraft = { type: 'failed', data: { code: 'flaky', message: 'try again', retryable: true } }
        const outcome = await service.appendEvents(job.id, [chunk('kept '), checkpoint({ n: 1 }), chunk('dropped'), failure], { lease: claim?.lease.token, batch: 1 })
        expect(outcome.events.at(-1)).toMatchObject({ type: 'requeued', data: { textLength: 5 } })
        expect(outcome.job.text).toBe('kept ')

        const { job: fresh } = await store.createJob(newJob({ type: 'fresh' }))
        const second = await dispatcher.claim({ types: ['fresh'], worker: 'w', leaseMs: 30_000, waitMs: 0 })
        const again = await service.appendEvents(fresh.id, [chunk('all of it'), failure], { lease: second?.lease.token, batch: 1 })
        expect(again.events.at(-1)).toMatchObject({ type: 'requeued', data: { textLength: 0 } })
        expect(again.job.text).toBe('')
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

function checkpoint(data: unknown): EventDraft {
  return { type: 'checkpoint', data: { data } }
}

function requeued(attempt: number): EventDraft {
  return { type: 'requeued', data: { reason: 'worker_lost', attempt, retryAt: null } }
}

function lease(overrides: Partial<Lease> = {}): Lease {
  return { token: `lease_${randomBytes(12).toString('base64url')}`, worker: 'w', expiresAt: Date.now() + 60_000, lastBatch: 0, ...overrides }
}

/** A claim of one job: the job, or null when none was claimable. */
async function claimOne(store: Store, types: readonly string[], now: number, plan: AppendPlan): Promise<AppendResult | null> {
  return (await store.claim(types, now, 1, plan))[0] ?? null
}

/** The plan a claim runs: start the next attempt under `held`. */
function startUnder(held: Lease): AppendPlan {
  return (job) => ({ events: [{ type: 'started', data: { attempt: job.attempt + 1, worker: held.worker } }], lease: held })
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
