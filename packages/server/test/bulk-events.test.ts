import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { JobwireBackend } from '@jobwire/backend'
import { errorRegistry, JobwireError, type ErrorBody, type ErrorCode, type JobState, type StreamMessage } from '@jobwire/protocol'
import { collect, createJsonClient, openSse, startTestServer, type JsonClient, type JsonResponse, type TestServer } from './fixtures.js'

/**
 * POST /v1/events: events for many jobs in one request, over a real socket, on both embedded
 * stores. Each job's write is atomic and answered on its own; a malformed request appends nothing.
 */
type Answer =
  | { jobId: string; events: { seq: number; type: string }[]; seq: number; status: string; duplicate?: true }
  | { jobId: string; error: ErrorBody }

for (const storage of ['memory', 'sqlite'] as const) {
  describe(`POST /v1/events (${storage})`, () => {
    let t: TestServer
    beforeAll(async () => {
      t = await startTestServer({ storage, maxBatchEvents: 20, maxEventBytes: 512 })
    })
    afterAll(() => t.close())

    const create = async (body: Record<string, unknown> = {}): Promise<JobState> => {
      const answer = await t.api.call<JobState>('POST', '/v1/jobs', { type: 'bulk', ...body })
      expect(answer.status).toBe(201)
      return answer.body
    }
    const bulk = (writes: unknown, client: JsonClient = t.api): Promise<JsonResponse<{ results: Answer[] } & { error?: ErrorBody }>> =>
      client.call('POST', '/v1/events', { writes })
    const getJob = async (id: string): Promise<JobState> => (await t.api.call<JobState>('GET', `/v1/jobs/${id}`)).body
    const expectRefused = (answer: JsonResponse<{ error?: ErrorBody }>, code: ErrorCode): ErrorBody => {
      expect(answer.status, JSON.stringify(answer.body)).toBe(errorRegistry[code].status)
      expect(answer.body.error?.code).toBe(code)
      return answer.body.error as ErrorBody
    }

    it('appends to several jobs in one request, each in order, and answers per write in request order', async () => {
      const [a, b] = [await create(), await create()]
      const stream = await openSse(`${t.url}/v1/jobs/${a.id}/stream`, { headers: { authorization: `Bearer ${t.key}` } })
      const answer = await bulk([
        { jobId: a.id, events: [{ type: 'progress', percent: 10 }] },
        { jobId: b.id, events: [{ type: 'chunk', text: 'Hel' }] },
        { jobId: a.id, events: [{ type: 'progress', percent: 20 }, { type: 'item', id: 'f1', status: 'running' }] },
        { jobId: b.id, events: [{ type: 'chunk', text: 'lo' }, { type: 'completed', result: { ok: true } }] },
      ])
      expect(answer.status, JSON.stringify(answer.body)).toBe(200)
      expect(answer.body.results).toEqual([
        { jobId: a.id, events: [{ seq: 2, type: 'started' }, { seq: 3, type: 'progress' }], seq: 3, status: 'running' },
        { jobId: b.id, events: [{ seq: 2, type: 'started' }, { seq: 3, type: 'chunk' }], seq: 3, status: 'running' },
        { jobId: a.id, events: [{ seq: 4, type: 'progress' }, { seq: 5, type: 'item' }], seq: 5, status: 'running' },
        { jobId: b.id, events: [{ seq: 4, type: 'chunk' }, { seq: 5, type: 'completed' }], seq: 5, status: 'completed' },
      ])
      expect(await getJob(b.id)).toMatchObject({ status: 'completed', text: 'Hello', result: { ok: true } })
      // A watcher of one of the jobs hears exactly its writes, in order.
      const heard = await collect(stream.messages(), (m: StreamMessage) => m.type === 'event' && m.event.seq === 5)
      expect(heard.flatMap((m) => (m.type === 'event' ? [m.event.seq] : []))).toEqual([2, 3, 4, 5])
      stream.close()
    })

    it('a refused write (finished job, unknown job, lost lease) is answered with its error and leaves the others applied', async () => {
      const [open, done] = [await create(), await create()]
      await t.api.call('POST', `/v1/jobs/${done.id}/cancel`, {})
      const answer = await bulk([
        { jobId: open.id, events: [{ type: 'progress', percent: 5 }] },
        { jobId: done.id, events: [{ type: 'progress', percent: 5 }] },
        { jobId: 'job_doesnotexist0000000', events: [{ type: 'progress', percent: 5 }] },
        { jobId: open.id, lease: 'lease_forged', events: [{ type: 'progress', percent: 6 }] },
        { jobId: open.id, events: [{ type: 'progress', percent: 7 }] },
      ])
      expect(answer.status).toBe(200)
      const codes = answer.body.results.map((r) => ('error' in r ? r.error.code : r.seq))
      expect(codes).toEqual([3, 'job_finished', 'job_not_found', 'lease_lost', 4])
      for (const r of answer.body.results) if ('error' in r) expect(r.error.message.length).toBeGreaterThan(0)
      expect((await getJob(open.id)).progress.percent).toBe(7)
      expect((await getJob(done.id)).seq).toBe(2)
    })

    it('a worker writes under its lease; a retried batch number is answered duplicate and appends nothing', async () => {
      const job = await create({ type: 'bulk-worker' })
      const claimed = await t.api.call<{ lease: { token: string } }>('POST', '/v1/workers/claim', { types: ['bulk-worker'], worker: 'w-1' })
      const lease = claimed.body.lease.token
      const write = { jobId: job.id, lease, batch: 1, events: [{ type: 'chunk', text: 'once' }] }
      const first = await bulk([write])
      const again = await bulk([write])
      expect(first.body.results[0]).toMatchObject({ seq: 3 })
      expect(again.body.results[0]).toMatchObject({ seq: 3, duplicate: true, events: [] })
      expect((await getJob(job.id)).text).toBe('once')
    })

    it('a malformed write anywhere refuses the whole request, names the field from the top and appends nothing', async () => {
      const job = await create()
      const cases: [unknown, ErrorCode, string | undefined][] = [
        [[{ jobId: job.id, events: [{ type: 'progress', percent: 1 }] }, { jobId: job.id, events: [{ type: 'progress', percent: 150 }] }], 'invalid_request', 'writes.1.events.0.percent'],
        [[{ jobId: job.id, events: [] }], 'invalid_request', 'writes.0.events'],
        [[{ jobId: job.id, events: [{ type: 'progress' }], extra: 1 }], 'invalid_request', 'writes.0.extra'],
        [[{ events: [{ type: 'progress' }] }], 'invalid_request', 'writes.0.jobId'],
        [[{ jobId: job.id, events: [{ type: 'explode' }] }], 'unknown_event_type', undefined],
        [[{ jobId: job.id, events: [{ type: 'chunk', text: 'x'.repeat(600) }] }], 'event_too_large', undefined],
        [[], 'invalid_request', 'writes'],
        ['nope', 'invalid_request', 'writes'],
      ]
      for (const [writes, code, field] of cases) {
        const error = expectRefused(await bulk(writes), code)
        if (field !== undefined) expect(error.details?.field, JSON.stringify(error)).toBe(field)
      }
      expectRefused(await t.api.call('POST', '/v1/events', { writes: [{ jobId: job.id, events: [{ type: 'progress' }] }], more: true }), 'invalid_request')
      expect((await getJob(job.id)).seq).toBe(1)
    })

    it('the whole request is one batch: more than maxBatchEvents events over all writes is 413 batch_too_large, nothing appended', async () => {
      const [a, b] = [await create(), await create()]
      const ten = Array.from({ length: 10 }, (_, i) => ({ type: 'progress', percent: i }))
      const error = expectRefused(await bulk([{ jobId: a.id, events: ten }, { jobId: b.id, events: [...ten, { type: 'progress', percent: 11 }] }]), 'batch_too_large')
      expect(error.details).toMatchObject({ limit: 20 })
      expect([(await getJob(a.id)).seq, (await getJob(b.id)).seq]).toEqual([1, 1])
    })

    it('scope holds per write: a job out of a read token\'s reach is job_not_found, a readable one forbidden', async () => {
      const [mine, other] = [await create({ owner: { tenant: 't1', user: 'u1' } }), await create({ owner: { tenant: 't2', user: 'u2' } })]
      const token = await t.api.call<{ token: string }>('POST', '/v1/tokens', { jobIds: [mine.id] })
      const reader = createJsonClient(t.url, token.body.token)
      try {
        const answer = await bulk(
          [
            { jobId: mine.id, events: [{ type: 'progress', percent: 1 }] },
            { jobId: other.id, events: [{ type: 'progress', percent: 1 }] },
          ],
          reader,
        )
        expect(answer.status).toBe(200)
        expect(answer.body.results.map((r) => ('error' in r ? r.error.code : 'ok'))).toEqual(['forbidden', 'job_not_found'])
        expect([(await getJob(mine.id)).seq, (await getJob(other.id)).seq]).toEqual([1, 1])
      } finally {
        await reader.close()
      }
    })

    it('@jobwire/backend reportMany: results in order, a refused write as a typed JobwireError in its place', async () => {
      const [a, b] = [await create({ dispatch: false }), await create({ dispatch: false })]
      await t.api.call('POST', `/v1/jobs/${b.id}/cancel`, {})
      const backend = new JobwireBackend({ url: t.url, apiKey: t.key })
      const results = await backend.reportMany([
        { jobId: a.id, events: [{ type: 'progress', percent: 50 }] },
        { jobId: b.id, events: [{ type: 'progress', percent: 50 }] },
      ])
      expect(results[0]).toMatchObject({ jobId: a.id, seq: 3, status: 'running' })
      expect(results[1]).toBeInstanceOf(JobwireError)
      expect(results[1]).toMatchObject({ code: 'job_finished', status: 409 })
    })

    it('without a credential the request is refused before anything is read', async () => {
      const anonymous = createJsonClient(t.url, null)
      try {
        expectRefused(await bulk([{ jobId: 'job_x', events: [{ type: 'progress' }] }], anonymous), 'unauthorized')
      } finally {
        await anonymous.close()
      }
    })
  })
}
