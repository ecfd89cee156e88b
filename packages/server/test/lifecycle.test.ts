import { readFile } from 'node:fs/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { jobErrorRegistry, type JobEvent, type JobState, type StreamMessage } from '@jobwire/protocol'
import { JobwireBackend } from '@jobwire/backend'
import { createWorker } from '@jobwire/worker'
import { loadConfig } from '../src/config.js'
import { collect, openSse, startTestServer, type TestServer } from './fixtures.js'

/**
 * Deadlines, retention and cancel-when-unwatched through a real server: HTTP create options, the
 * runner heartbeat route, the worker SDK's signal, what watchers see and what metrics count. The
 * store-level rules (every store, hand-driven clocks) are in store-conformance.ts.
 */
let t: TestServer

beforeAll(async () => {
  t = await startTestServer({ deadlineSweepInterval: 20, sweepInterval: 100, leaseSweepInterval: 50 })
})

afterAll(async () => {
  await t.close()
})

let counter = 0
const uniqueType = (name: string): string => `${name}-${++counter}-${Date.now().toString(36)}`

async function create(body: Record<string, unknown>): Promise<JobState> {
  const answer = await t.api.call<JobState>('POST', '/v1/jobs', body)
  expect(answer.status, JSON.stringify(answer.body)).toBe(201)
  return answer.body
}

/**
 * Everything a watcher gets until the stream ends (the job's terminal event ends it). It resumes
 * after `created` (seq 1), so it gets the terminal event even when the deadline fired before it
 * connected (a busy machine may take longer than a short deadline to open the stream).
 */
async function watchToEnd(jobId: string): Promise<StreamMessage[]> {
  const connection = await openSse(`${t.url}/v1/jobs/${jobId}/stream`, { headers: { authorization: `Bearer ${t.key}`, 'last-event-id': '1' } })
  expect(connection.status).toBe(200)
  return collect(connection.messages())
}

function lastEvent(messages: StreamMessage[]): JobEvent | undefined {
  return messages.flatMap((m) => (m.type === 'event' ? [m.event] : [])).at(-1)
}

async function metric(name: string, labels: string): Promise<number> {
  const answer = await fetch(`${t.url}/metrics`, { headers: { authorization: `Bearer ${t.key}` } })
  const line = (await answer.text()).split('\n').find((l) => l.startsWith(`${name}{${labels}}`) || (labels === '' && l.startsWith(`${name} `)))
  return line === undefined ? 0 : Number(line.split(' ').at(-1))
}

/** Waits on a condition the server will reach by itself (a deadline firing), checking every 20 ms. */
async function until<T>(read: () => Promise<T>, done: (value: T) => boolean, what: string): Promise<T> {
  const deadline = Date.now() + 20_000
  for (;;) {
    const value = await read()
    if (done(value)) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

describe('deadlines over HTTP', () => {
  it('fails a job no worker claims with queue_timeout: its watcher sees the terminal event and metrics count it by code', async () => {
    const type = uniqueType('unserved')
    const job = await create({ type, queueTimeout: '200ms' })
    const messages = await watchToEnd(job.id)
    expect(lastEvent(messages)).toMatchObject({ type: 'failed', data: { code: 'queue_timeout', retryable: false } })
    expect(await metric('jobwire_deadlines_fired_total', `type="${type}",code="queue_timeout"`)).toBe(1)
    expect(await metric('jobwire_jobs_finished_total', `type="${type}",status="failed"`)).toBe(1)
  })

  it("aborts a hanging @jobwire/worker handler's signal with timed_out and fails the job with timed_out", async () => {
    const type = uniqueType('hangs')
    const job = await create({ type, timeout: 300 })
    let reason: unknown = null
    const worker = createWorker({ url: t.url, apiKey: t.key, pollWaitSeconds: 1, onError: () => {} })
    worker.handle(type, (_job, ctx) => new Promise<void>((resolve) => {
      // Never finishes on its own: only the server's timeout ends it.
      ctx.signal.addEventListener('abort', () => {
        reason = (ctx.signal.reason as { reason?: string }).reason
        resolve()
      })
    }))
    void worker.start()
    try {
      const messages = await watchToEnd(job.id)
      expect(lastEvent(messages)).toMatchObject({ type: 'failed', data: { code: 'timed_out', retryable: false } })
      await until(async () => reason, (value) => value !== null, 'the handler signal to abort')
      expect(reason).toBe('timed_out')
    } finally {
      await worker.stop({ graceMs: 100 })
    }
  })

  it('keeps a self-run job alive while its runner heartbeats through @jobwire/backend, and fails it runner_lost once it stops', async () => {
    const backend = new JobwireBackend({ url: t.url, apiKey: t.key })
    const job = await backend.createJob({ type: uniqueType('self-run'), dispatch: false, heartbeatTimeout: '1s' })
    await backend.report(job.id, [{ type: 'progress', percent: 10 }])
    const first = await backend.heartbeat(job.id)
    expect(first).toMatchObject({ status: 'running', cancelled: false })
    await new Promise((resolve) => setTimeout(resolve, 5))
    const second = await backend.heartbeat(job.id)
    expect(Date.parse(second.expiresAt ?? '')).toBeGreaterThan(Date.parse(first.expiresAt ?? ''))
    const messages = await watchToEnd(job.id)
    expect(lastEvent(messages)).toMatchObject({ type: 'failed', data: { code: 'runner_lost' } })
    // A dispatched job is heartbeated under its worker's lease, not by its creator.
    const dispatched = await create({ type: uniqueType('dispatched') })
    const refused = await t.api.call<{ error: { code: string; details: { field: string } } }>('POST', `/v1/jobs/${dispatched.id}/heartbeat`, {})
    expect(refused.status).toBe(400)
    expect(refused.body.error).toMatchObject({ code: 'invalid_request', details: { field: 'lease' } })
  })

  it('refuses a malformed deadline with 400 invalid_request naming the field', async () => {
    for (const [field, value] of [['timeout', 'soon'], ['queueTimeout', -1], ['timeoutPer', 'hour'], ['retention', '400d']] as const) {
      const answer = await t.api.call<{ error: { code: string; details: { field: string } } }>('POST', '/v1/jobs', { type: 'x', [field]: value })
      expect(answer.status, field).toBe(400)
      expect(answer.body.error, field).toMatchObject({ code: 'invalid_request', details: { field } })
    }
  })
})

describe('retention and unwatched jobs over HTTP', () => {
  it('deletes a finished job with its log once its own retention passed: reads and streams get job_not_found', async () => {
    const expiredBefore = await metric('jobwire_jobs_expired_total', '')
    const job = await create({ type: uniqueType('short-lived'), dispatch: false, retention: '50ms' })
    await t.api.call('POST', `/v1/jobs/${job.id}/events`, { events: [{ type: 'completed', result: 1 }] })
    await until(() => t.api.call('GET', `/v1/jobs/${job.id}`), (answer) => answer.status === 404, 'the job to be swept')
    const stream = await openSse(`${t.url}/v1/jobs/${job.id}/stream`, { headers: { authorization: `Bearer ${t.key}`, 'last-event-id': '3' } })
    expect(stream.status).toBe(404)
    expect(JSON.parse(stream.body)).toMatchObject({ error: { code: 'job_not_found' } })
    expect(await metric('jobwire_jobs_expired_total', '')).toBeGreaterThan(expiredBefore)
  })

  it('cancels a job nobody watches with reason unwatched; metrics count it', async () => {
    const type = uniqueType('unwatched')
    const job = await create({ type, cancelWhenUnwatched: '150ms' })
    // GET is a look, not a watch: only streams and long-polls count as watching.
    const cancelled = await until(() => t.api.call<JobState>('GET', `/v1/jobs/${job.id}`), (a) => a.body.status === 'cancelled', 'the job to be cancelled')
    expect(cancelled.body.status).toBe('cancelled')
    const log = await t.api.call<{ events: JobEvent[] }>('GET', `/v1/jobs/${job.id}/events?after=0`)
    expect(log.body.events.at(-1)).toMatchObject({ type: 'cancelled', data: { reason: 'unwatched' } })
    expect(await metric('jobwire_deadlines_fired_total', `type="${type}",code="unwatched"`)).toBe(1)
  })
})

describe('lifecycle configuration', () => {
  it('reads per-type deadlines from a JSON flag or variable, and names a bad one', () => {
    const config = loadConfig({ jobTypes: '{"suggest": {"timeout": "2m", "queueTimeout": "10m", "timeoutPer": "attempt"}}' }, {})
    expect(config.jobTypes).toEqual({ suggest: { timeout: 120_000, queueTimeout: 600_000, timeoutPer: 'attempt' } })
    expect(loadConfig({}, { JOBWIRE_JOB_TYPES: '{"agent": {"heartbeatTimeout": "30s"}}' }).jobTypes).toEqual({ agent: { heartbeatTimeout: 30_000 } })
    expect(() => loadConfig({ jobTypes: '{"suggest": {"timeout": "soon"}}' }, {})).toThrow(/--job-types/)
    expect(() => loadConfig({ jobTypes: '{"suggest": {"colour": "red"}}' }, {})).toThrow(/--job-types/)
  })

  it('docs/lifecycle.md describes every code a job can end with', async () => {
    const page = await readFile(new URL('../../../docs/lifecycle.md', import.meta.url), 'utf8')
    for (const code of Object.keys(jobErrorRegistry)) expect(page, code).toContain(`\`${code}\``)
  })
})
