import { readFile } from 'node:fs/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { JobState, PollResponse, WsServerMessage } from '@jobwire/protocol'
import { collect, openSse, readSse, sleep, startTestServer, type SseConnection, type TestServer } from './fixtures.js'
import { openWs, wsUrl } from './ws-client.js'
import { deletePrefix, redisReachable, redisUrl, testPrefix } from './redis-fixtures/redis.js'
import { startTcpProxy } from '../../../test/support/tcp-proxy.js'

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
      ['jobwire_subscription_starts_total', { start: 'initial', transport: 'sse' }, 1],
      ['jobwire_subscription_starts_total', { start: 'recovered', transport: 'sse' }, 2],
      ['jobwire_subscription_starts_total', { start: 'reset', transport: 'poll' }, 1],
      ['jobwire_open_connections', { transport: 'sse' }, 1],
      ['jobwire_open_connections', { transport: 'ws' }, 0],
      ['jobwire_open_subscriptions', { transport: 'sse' }, 1],
      ['jobwire_open_subscriptions', { transport: 'ws' }, 0],
      ['jobwire_open_subscriptions', { transport: 'poll' }, 0],
      ['jobwire_coalesced_events_total', { transport: 'ws' }, 0],
    ]
    const actual = expected.map(([name, labels]) => [name, labels, value(text, name, labels)])
    expect(actual).toEqual(expected)
    expect(value(text, 'jobwire_jobs_finished_total', { type: 'encode', status: 'failed' })).toBeUndefined()
    expect(value(text, 'jobwire_job_duration_seconds_bucket', { type: 'render', status: 'completed', le: '+Inf' })).toBe(1)
    expect(value(text, 'jobwire_store_operation_seconds_count', { operation: 'append' })).toBeGreaterThan(0)
    expect(value(text, 'jobwire_store_operation_seconds_count', { operation: 'createJob' })).toBe(7)
    expect(value(text, 'jobwire_store_errors_total', { operation: 'append' }) ?? 0).toBe(0)
    // Not on Redis: no gauge, rather than a 0 that would page someone.
    expect(value(text, 'jobwire_redis_up')).toBeUndefined()
    // The states this SQLite node keeps parsed: the six jobs it created and wrote, weighed (at least their stored JSON).
    expect(value(text, 'jobwire_state_cache_jobs')).toBe(6)
    expect(value(text, 'jobwire_state_cache_bytes')).toBeGreaterThan(6 * 200)
  })

  it('time live delivery on SSE, WebSocket and long-poll, count open subscriptions per transport, and count coalesced events exactly', async () => {
    const node = await startTestServer({ wsCoalesceAfter: 16 * 1024, wsMaxBuffer: 64 * 1024 * 1024, maxBodyBytes: 8 * 1024 * 1024, maxEventsPerJob: 100 })
    const sockets: { close(): void }[] = []
    try {
      const read = async (): Promise<string> => {
        const response = await fetch(`${node.url}/metrics`, { headers: { authorization: `Bearer ${node.key}` } })
        return response.text()
      }
      const jobs: JobState[] = []
      for (let i = 0; i < 3; i++) jobs.push((await node.api.call<JobState>('POST', '/v1/jobs', { type: 'watched', dispatch: false })).body)
      const [first, second] = jobs as [JobState, JobState, JobState]

      // One SSE stream, one WebSocket following all three jobs, one long-poll waiting on the first.
      const sse = await openSse(`${node.url}/v1/jobs/${first.id}/stream`, { headers: { authorization: `Bearer ${node.key}` } })
      sockets.push(sse)
      await sse.waitFor((connection) => connection.raw.includes('event: snapshot'))
      const ws = await openWs(wsUrl(node.url), { token: node.key })
      sockets.push(ws)
      for (const job of jobs) ws.send({ type: 'subscribe', jobId: job.id })
      for (const job of jobs) await ws.next((m) => m.type === 'snapshot' && m.jobId === job.id)
      const poll = node.api.call<PollResponse>('GET', `/v1/jobs/${first.id}/events?after=1&wait=30`)
      let text = await read()
      while (value(text, 'jobwire_open_subscriptions', { transport: 'poll' }) !== 1) {
        await sleep(10)
        text = await read()
      }
      const open: [string, Record<string, string>, number][] = [
        ['jobwire_open_connections', { transport: 'sse' }, 1],
        ['jobwire_open_connections', { transport: 'ws' }, 1],
        ['jobwire_open_subscriptions', { transport: 'sse' }, 1],
        // A WebSocket counts every job it follows.
        ['jobwire_open_subscriptions', { transport: 'ws' }, 3],
        ['jobwire_open_subscriptions', { transport: 'poll' }, 1],
        ['jobwire_subscription_starts_total', { start: 'initial', transport: 'sse' }, 1],
        ['jobwire_subscription_starts_total', { start: 'initial', transport: 'ws' }, 3],
      ]
      expect(open.map(([name, labels]) => [name, labels, value(text, name, labels)])).toEqual(open)
      for (const transport of ['sse', 'ws', 'poll']) {
        expect(value(text, 'jobwire_delivery_latency_seconds_count', { transport }), transport).toBe(0)
      }

      // A live batch (the implicit `started`, then the progress) reaches all three transports.
      expect((await node.api.call('POST', `/v1/jobs/${first.id}/events`, { type: 'progress', percent: 10 })).status).toBe(200)
      expect((await poll).body.events.map((e) => e.seq)).toEqual([2, 3])
      await sse.waitFor((connection) => connection.lastEventId === '3')
      await ws.next((m) => m.type === 'event' && m.event.jobId === first.id && m.event.seq === 3)

      // A stalled WebSocket reader of the second job gets its latest-wins events coalesced.
      ws.pause()
      for (let batch = 0; batch < 4; batch++) {
        const events = Array.from({ length: 1000 }, (_, i) =>
          i % 4 === 0 ? { type: 'item', id: `file-${i % 3}`, percent: i % 100, message: 'i'.repeat(1000) } : { type: 'progress', percent: i % 100, message: 'm'.repeat(1000) },
        )
        expect((await node.api.call('POST', `/v1/jobs/${second.id}/events`, { events })).status).toBe(200)
      }
      expect((await node.api.call('POST', `/v1/jobs/${second.id}/events`, { type: 'completed', result: 'ok' })).status).toBe(200)
      ws.resume()
      await ws.next((m) => m.type === 'event' && m.event.jobId === second.id && m.event.type === 'completed', 0, 30_000)
      // Each coalesced message stands for the seqs from..(highest seq in it): all but one were merged away.
      const merged = ws.received
        .filter((m): m is Extract<WsServerMessage, { type: 'coalesced' }> => m.type === 'coalesced')
        .reduce((sum, m) => sum + Math.max(...m.events.map((e) => e.seq)) - m.from, 0)
      expect(merged).toBeGreaterThan(0)

      text = await read()
      for (const transport of ['sse', 'ws', 'poll']) {
        expect(value(text, 'jobwire_delivery_latency_seconds_count', { transport }), transport).toBeGreaterThan(0)
        expect(value(text, 'jobwire_delivery_latency_seconds_bucket', { transport, le: '+Inf' }), transport).toBe(
          value(text, 'jobwire_delivery_latency_seconds_count', { transport }),
        )
      }
      // One long-poll was woken by an event: one observation.
      expect(value(text, 'jobwire_delivery_latency_seconds_count', { transport: 'poll' })).toBe(1)
      expect(value(text, 'jobwire_coalesced_events_total', { transport: 'ws' })).toBe(merged)
      // The finished job left the socket; the long-poll answered.
      expect(value(text, 'jobwire_open_subscriptions', { transport: 'ws' })).toBe(2)
      expect(value(text, 'jobwire_open_subscriptions', { transport: 'poll' })).toBe(0)

      // The count outlives the socket it happened on.
      ws.close()
      await ws.closed
      for (text = await read(); value(text, 'jobwire_open_connections', { transport: 'ws' }) !== 0; text = await read()) await sleep(10)
      expect(value(text, 'jobwire_coalesced_events_total', { transport: 'ws' })).toBe(merged)
      expect(value(text, 'jobwire_open_subscriptions', { transport: 'ws' })).toBe(0)
    } finally {
      for (const socket of sockets) socket.close()
      await node.close()
    }
  })

  it('docs/operating.md lists every metric a node exports, with its type and labels, and the Grafana dashboard uses only those', async () => {
    const page = await readFile(new URL('../../../docs/operating.md', import.meta.url), 'utf8')
    const section = /\n## Metrics\n([\s\S]*?)\n## /.exec(page)?.[1]
    expect(section, 'docs/operating.md has no "## Metrics" section').toBeDefined()
    // | `name` | type | `label` (`value`, …), `label` | what |
    const documented = new Map<string, { type: string; labels: string[] }>()
    for (const row of (section ?? '').matchAll(/^\| `(jobwire_[a-z_]+)` \| (\w*) \|([^|]*)\|/gm)) {
      const labels = [...(row[3] ?? '').replace(/\([^)]*\)/g, '').matchAll(/`(\w+)`/g)].map((m) => m[1] as string)
      documented.set(row[1] as string, { type: row[2] as string, labels: labels.sort() })
    }
    const text = await scrape()
    const exported = new Map<string, { type: string; labels: Set<string> }>()
    for (const [, name, type] of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
      if (/^jobwire_(process|nodejs)_/.test(name as string)) continue
      exported.set(name as string, { type: type as string, labels: new Set() })
    }
    for (const [, sample, labels] of text.matchAll(/^([a-z_]+)\{([^}]*)\} /gm)) {
      const metric = exported.get(sample as string) ?? exported.get((sample as string).replace(/_(bucket|sum|count)$/, ''))
      for (const [, label] of (labels as string).matchAll(/(\w+)="/g)) if (label !== 'le') metric?.labels.add(label as string)
    }
    // jobwire_redis_up exists on Redis nodes only (checked against a Redis node below).
    const onRedisOnly = new Set(['jobwire_redis_up'])
    expect(documented.has('jobwire_redis_up')).toBe(true)
    expect([...exported.keys()].filter((name) => !documented.has(name)), 'exported but not in docs/operating.md').toEqual([])
    expect([...documented.keys()].filter((name) => !exported.has(name) && !onRedisOnly.has(name)), 'in docs/operating.md but not exported').toEqual([])
    for (const [name, metric] of exported) {
      expect(documented.get(name)?.type, name).toBe(metric.type)
      if (metric.labels.size > 0) expect(documented.get(name)?.labels, name).toEqual([...metric.labels].sort())
    }
    const dashboard = await readFile(new URL('../../../deploy/grafana-dashboard.json', import.meta.url), 'utf8')
    const used = new Set([...dashboard.matchAll(/\b(jobwire_[a-z0-9_]+)/g)].map((m) => (m[1] as string).replace(/_(bucket|sum|count)$/, '')))
    const known = new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1] as string))
    expect([...used].filter((name) => !known.has(name) && !onRedisOnly.has(name)), 'the dashboard queries metrics nobody exports').toEqual([])
    for (const name of ['jobwire_delivery_latency_seconds', 'jobwire_open_subscriptions', 'jobwire_coalesced_events_total', 'jobwire_redis_up']) {
      expect(used.has(name), `the dashboard has no panel on ${name}`).toBe(true)
    }
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

if (redisReachable('metrics: Redis liveness')) {
  describe('metrics on Redis', () => {
    it('jobwire_redis_up is 1 while the pub/sub probe comes back, 0 while Redis is away, and 1 again after', async () => {
      const proxy = await startTcpProxy(redisUrl)
      const prefix = testPrefix('metrics')
      const node = await startTestServer({ redis: proxy.url, redisPrefix: prefix })
      try {
        /** Scrapes until the gauge reads `expected` (it follows the connections, not a timer here). */
        const until = async (expected: number): Promise<number | undefined> => {
          for (;;) {
            const response = await fetch(`${node.url}/metrics`, { headers: { authorization: `Bearer ${node.key}` } })
            const up = value(await response.text(), 'jobwire_redis_up')
            if (up === expected || up === undefined) return up
            await sleep(20)
          }
        }
        expect(await until(1)).toBe(1)
        await proxy.down()
        expect(await until(0)).toBe(0)
        await proxy.up()
        expect(await until(1)).toBe(1)
      } finally {
        await node.close()
        await proxy.close()
        // Its keys go with it (the node's generation key, at least).
        await deletePrefix(prefix)
      }
    })
  })
}
