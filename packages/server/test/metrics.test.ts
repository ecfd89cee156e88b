import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { JobState } from '@jobwire/protocol'
import { collect, openSse, readSse, startTestServer, type SseConnection, type TestServer } from './fixtures.js'

/**
 * /metrics after a scripted run of jobs through the HTTP API: every counter has the exact value
 * the script implies, and the histograms hold one observation per finished or started job.
 */
let t: TestServer

beforeAll(async () => {
  t = await startTestServer({ storage: 'sqlite', maxEventsPerJob: 10, retryBackoff: 0, leaseTime: 10_000 })
})

afterAll(async () => {
  await t.close()
})

async function create(body: Record<string, unknown>): Promise<JobState> {
  const answer = await t.api.call<JobState>('POST', '/v1/jobs', body)
  expect([200, 201], JSON.stringify(answer.body)).toContain(answer.status)
  return answer.body
}

async function write(jobId: string, body: unknown): Promise<void> {
  const answer = await t.api.call('POST', `/v1/jobs/${jobId}/events`, body)
  expect(answer.status, JSON.stringify(answer.body)).toBe(200)
}

async function claim(type: string): Promise<{ job: JobState; lease: { token: string } }> {
  const answer = await t.api.call<{ job: JobState; lease: { token: string } }>('POST', '/v1/workers/claim', { types: [type], wait: 5 })
  expect(answer.status, JSON.stringify(answer.body)).toBe(200)
  return answer.body
}

async function scrape(): Promise<string> {
  const response = await fetch(`${t.url}/metrics`, { headers: { authorization: `Bearer ${t.key}` } })
  expect(response.status).toBe(200)
  return response.text()
}

/** The value of one sample, e.g. `value(text, 'jobwire_jobs_created_total', { type: 'render' })`; undefined when absent. */
function value(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const match = /^([a-z_:]+)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (match === null || match[1] !== name) continue
    const found = Object.fromEntries([...(match[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]))
    if (Object.entries(labels).every(([key, v]) => found[key] === v)) return Number(match[3])
  }
  return undefined
}

describe('metrics', () => {
  let live: SseConnection | null = null
  afterAll(() => live?.close())

  it('count a scripted run of jobs exactly and fill the duration and queue-wait histograms', async () => {
    // render: run by their creator. A completes, B fails, C is cancelled while queued, D while running.
    const a = await create({ type: 'render', dispatch: false, idempotencyKey: 'render-a' })
    await create({ type: 'render', dispatch: false, idempotencyKey: 'render-a' }) // a repeat creates nothing
    const b = await create({ type: 'render', dispatch: false })
    const c = await create({ type: 'render', dispatch: false })
    const d = await create({ type: 'render', dispatch: false })
    await write(a.id, { events: [{ type: 'progress', percent: 50 }, { type: 'completed', result: 'ok' }] })
    await write(b.id, { events: [{ type: 'progress', percent: 10 }, { type: 'failed', code: 'bad_input', message: 'no', retryable: false }] })
    expect((await t.api.call('POST', `/v1/jobs/${c.id}/cancel`, {})).status).toBe(200)
    await write(d.id, { type: 'progress', percent: 5 })
    expect((await t.api.call('POST', `/v1/jobs/${d.id}/cancel`, {})).status).toBe(200)

    // encode: dispatched to a worker; the first attempt fails retryably and is re-queued, the second completes.
    const e = await create({ type: 'encode' })
    const first = await claim('encode')
    expect(first.job.id).toBe(e.id)
    await write(e.id, { lease: first.lease.token, batch: 1, events: [{ type: 'failed', code: 'oom', message: 'killed', retryable: true }] })
    const second = await claim('encode')
    await write(e.id, { lease: second.lease.token, batch: 1, events: [{ type: 'completed', result: 1 }] })

    // trim: 15 events in a log that keeps 10, so a resume from seq 1 gets a reset snapshot.
    const f = await create({ type: 'trim', dispatch: false })
    await write(f.id, { events: Array.from({ length: 14 }, (_, i) => ({ type: 'progress', percent: i })) })

    // Subscriptions: an initial snapshot, an exact replay, a reset; one stream stays open.
    const initial = await collect(readSse(`${t.url}/v1/jobs/${a.id}/stream`, { headers: { authorization: `Bearer ${t.key}` } }))
    expect(initial[0]).toMatchObject({ type: 'snapshot', reset: false })
    const recovered = await collect(readSse(`${t.url}/v1/jobs/${a.id}/stream`, { headers: { authorization: `Bearer ${t.key}`, 'last-event-id': '1' } }))
    expect(recovered[0]).toMatchObject({ type: 'recovered', after: 1 })
    const reset = await t.api.call<{ snapshot?: { reset: boolean } }>('GET', `/v1/jobs/${f.id}/events?after=1`)
    expect(reset.body.snapshot?.reset).toBe(true)
    live = await openSse(`${t.url}/v1/jobs/${f.id}/stream?after=15`, { headers: { authorization: `Bearer ${t.key}` } })
    await live.waitFor((connection) => connection.raw.includes('event: recovered') || connection.raw.includes('retry:'))

    const text = await scrape()
    const expected: [string, Record<string, string>, number][] = [
      ['jobwire_jobs_created_total', { type: 'render' }, 4],
      ['jobwire_jobs_created_total', { type: 'encode' }, 1],
      ['jobwire_jobs_created_total', { type: 'trim' }, 1],
      ['jobwire_jobs_started_total', { type: 'render' }, 3],
      ['jobwire_jobs_started_total', { type: 'encode' }, 2],
      ['jobwire_jobs_started_total', { type: 'trim' }, 1],
      ['jobwire_jobs_finished_total', { type: 'render', status: 'completed' }, 1],
      ['jobwire_jobs_finished_total', { type: 'render', status: 'failed' }, 1],
      ['jobwire_jobs_finished_total', { type: 'render', status: 'cancelled' }, 2],
      ['jobwire_jobs_finished_total', { type: 'encode', status: 'completed' }, 1],
      ['jobwire_jobs_requeued_total', { type: 'encode', reason: 'retry' }, 1],
      // C never started: it has no run time.
      ['jobwire_job_duration_seconds_count', { type: 'render', status: 'completed' }, 1],
      ['jobwire_job_duration_seconds_count', { type: 'render', status: 'failed' }, 1],
      ['jobwire_job_duration_seconds_count', { type: 'render', status: 'cancelled' }, 1],
      ['jobwire_job_duration_seconds_count', { type: 'encode', status: 'completed' }, 1],
      // Queue wait is measured to the first start only.
      ['jobwire_job_queue_wait_seconds_count', { type: 'render' }, 3],
      ['jobwire_job_queue_wait_seconds_count', { type: 'encode' }, 1],
      ['jobwire_subscription_starts_total', { start: 'initial' }, 1],
      ['jobwire_subscription_starts_total', { start: 'recovered' }, 2],
      ['jobwire_subscription_starts_total', { start: 'reset' }, 1],
      ['jobwire_open_connections', { transport: 'sse' }, 1],
      ['jobwire_open_connections', { transport: 'ws' }, 0],
    ]
    const actual = expected.map(([name, labels]) => [name, labels, value(text, name, labels)])
    expect(actual).toEqual(expected)
    expect(value(text, 'jobwire_jobs_finished_total', { type: 'encode', status: 'failed' })).toBeUndefined()
    expect(value(text, 'jobwire_job_duration_seconds_bucket', { type: 'render', status: 'completed', le: '+Inf' })).toBe(1)
    expect(value(text, 'jobwire_store_operation_seconds_count', { operation: 'append' })).toBeGreaterThan(0)
    expect(value(text, 'jobwire_store_operation_seconds_count', { operation: 'createJob' })).toBe(7)
    expect(value(text, 'jobwire_store_errors_total', { operation: 'append' }) ?? 0).toBe(0)
  })

  it('counts a stream closed for falling behind', async () => {
    const slow = await startTestServer({ sseMaxBuffer: 64 * 1024, maxBodyBytes: 8 * 1024 * 1024, maxEventsPerJob: 100 })
    try {
      const job = (await slow.api.call<JobState>('POST', '/v1/jobs', { type: 'flood', dispatch: false })).body
      const reader = await openSse(`${slow.url}/v1/jobs/${job.id}/stream`, { headers: { authorization: `Bearer ${slow.key}` } })
      reader.pause()
      // ~10 MB while the reader reads nothing: far past its 64 KiB allowance and any socket buffer.
      const events = Array.from({ length: 1000 }, (_, i) => ({ type: 'progress', percent: i % 100, message: 'm'.repeat(1900) }))
      for (let batch = 0; batch < 5; batch++) expect((await slow.api.call('POST', `/v1/jobs/${job.id}/events`, { events })).status).toBe(200)
      reader.resume()
      const messages = await collect(reader.messages())
      expect(messages.at(-1)).toMatchObject({ type: 'error', error: { code: 'slow_consumer' } })
      const response = await fetch(`${slow.url}/metrics`, { headers: { authorization: `Bearer ${slow.key}` } })
      expect(value(await response.text(), 'jobwire_slow_consumer_closes_total', { transport: 'sse' })).toBe(1)
    } finally {
      await slow.close()
    }
  })
})
