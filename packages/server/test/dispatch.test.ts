import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { applyEvent, isTerminalEvent, type ErrorBody, type ErrorCode, type JobEvent, type JobState, type PollResponse, type StreamMessage } from '@jobwire/protocol'
import {
  collect,
  createJsonClient,
  openSse,
  sleep,
  startTestServer,
  type JsonClient,
  type JsonResponse,
  type SseConnection,
  type TestServer,
} from './fixtures.js'
import { until, within } from '../../../test/support/wait.js'
import { connect } from 'node:net'

/**
 * Dispatch over real HTTP: claims, leases, heartbeats, signals, lapsed-lease recovery, retries,
 * release and resume, against one SQLite-backed server. Leases default to 10 s so a test's own
 * steps never race them; tests that want a lease to lapse claim with the 1 s minimum, and the
 * sweep looks every 50 ms.
 */
let t: TestServer

beforeAll(async () => {
  t = await startTestServer({
    storage: 'sqlite',
    leaseTime: 10_000,
    leaseSweepInterval: 50,
    maxAttempts: 2,
    retryBackoff: '500ms',
    pollMaxWait: 10_000,
    heartbeat: 500,
  })
})

afterAll(async () => {
  await t.close()
})

interface Claimed {
  job: JobState
  lease: { token: string; expiresAt: string; leaseMs: number }
}

interface WriteAnswer {
  events: { seq: number; type: string }[]
  seq: number
  status: string
  duplicate?: true
}

let typeCounter = 0
/** A job type no other test uses, so each test's claims see only its own jobs. */
const uniqueType = (name: string): string => `${name}-${++typeCounter}-${Date.now().toString(36)}`

async function create(body: Record<string, unknown>): Promise<JobState> {
  const answer = await t.api.call<JobState>('POST', '/v1/jobs', body)
  expect(answer.status, JSON.stringify(answer.body)).toBe(201)
  return answer.body
}

function claim(body: Record<string, unknown>, client: JsonClient = t.api): Promise<JsonResponse<Claimed | null>> {
  return client.call<Claimed | null>('POST', '/v1/workers/claim', body)
}

/** Claims a job of `types`, waiting up to 5 s for one, and insists it got one. */
async function claimJob(types: string[], extra: Record<string, unknown> = {}): Promise<Claimed> {
  const answer = await claim({ types, wait: 5, ...extra })
  expect(answer.status, JSON.stringify(answer.body)).toBe(200)
  return answer.body as Claimed
}

function write(jobId: string, body: unknown): Promise<JsonResponse<WriteAnswer>> {
  return t.api.call<WriteAnswer>('POST', `/v1/jobs/${jobId}/events`, body)
}

async function written(jobId: string, body: unknown): Promise<WriteAnswer> {
  const answer = await write(jobId, body)
  expect(answer.status, JSON.stringify(answer.body)).toBe(200)
  return answer.body
}

async function getJob(jobId: string): Promise<JobState> {
  const answer = await t.api.call<JobState>('GET', `/v1/jobs/${jobId}`)
  expect(answer.status).toBe(200)
  return answer.body
}

async function readLog(jobId: string): Promise<JobEvent[]> {
  const answer = await t.api.call<PollResponse>('GET', `/v1/jobs/${jobId}/events?after=0`)
  expect(answer.status).toBe(200)
  return answer.body.events
}

/** Long-polls the job's log until an event of `type` arrives after `after`, and returns it. */
function nextEvent(jobId: string, type: JobEvent['type'], after = 0): Promise<JobEvent> {
  return within(
    (async () => {
      for (let position = after; ; ) {
        const page = await t.api.call<PollResponse>('GET', `/v1/jobs/${jobId}/events?after=${position}&wait=5`)
        expect(page.status).toBe(200)
        const found = page.body.events.find((event) => event.type === type)
        if (found !== undefined) return found
        if (page.body.done) throw new Error(`job ${jobId} ended without a ${type} event`)
        position = page.body.next
      }
    })(),
    `a ${type} event on ${jobId}`,
  )
}

function post<T = unknown>(path: string, body: unknown): Promise<JsonResponse<T>> {
  return t.api.call<T>('POST', path, body)
}

function expectError(answer: JsonResponse<unknown>, code: ErrorCode, status: number): ErrorBody {
  const error = (answer.body as { error?: ErrorBody } | null)?.error
  expect(error, JSON.stringify(answer.body)).toBeDefined()
  expect(error?.code).toBe(code)
  expect(answer.status).toBe(status)
  return error as ErrorBody
}

async function openStream(jobId: string, query = ''): Promise<SseConnection> {
  const connection = await openSse(`${t.url}/v1/jobs/${jobId}/stream${query}`, { headers: { authorization: `Bearer ${t.key}` } })
  expect(connection.status, connection.body).toBe(200)
  return connection
}

/** Guards a wait that would otherwise hang the test on a regression (not a speed check). */
const progress = (percent: number) => ({ type: 'progress', percent })
const checkpoint = (step: number) => ({ type: 'checkpoint', data: { step } })

describe('POST /v1/workers/claim', () => {
  it('holds 30 claim long-polls at once without a listener-leak warning (each listens for the node shutting down)', async () => {
    const warnings: string[] = []
    const onWarning = (warning: Error): void => {
      warnings.push(`${warning.name}: ${warning.message}`)
    }
    process.on('warning', onWarning)
    try {
      const type = uniqueType('many-waiting')
      // The test client keeps 16 connections; a second client gives every claim its own.
      const more = createJsonClient(t.url, t.key)
      try {
        const answers = await Promise.all(Array.from({ length: 30 }, (_, i) => claim({ types: [type], wait: 1 }, i % 2 === 0 ? t.api : more)))
        expect(answers.map((a) => a.status)).toEqual(Array.from({ length: 30 }, () => 204))
      } finally {
        await more.close()
      }
      await sleep(10) // warnings are emitted on the next tick
    } finally {
      process.off('warning', onWarning)
    }
    expect(warnings.filter((w) => w.includes('MaxListenersExceeded'))).toEqual([])
  })

  it('answers 200 with the started job and its lease, then 204 once nothing of its types is queued', async () => {
    const type = uniqueType('claim')
    const job = await create({ type, input: { n: 1 } })
    const answer = await claim({ types: ['nothing-here', type], worker: 'w-1', leaseMs: 5_000 })
    expect(answer.status).toBe(200)
    const claimed = answer.body as Claimed
    expect(claimed.job).toMatchObject({ id: job.id, status: 'running', attempt: 1, worker: 'w-1', input: { n: 1 }, queuePosition: null })
    expect(claimed.lease).toMatchObject({ token: expect.stringMatching(/^lease_/), leaseMs: 5_000 })
    expect(Date.parse(claimed.lease.expiresAt)).toBe(Date.parse(claimed.job.startedAt as string) + 5_000)
    expect((await readLog(job.id)).map((e) => [e.seq, e.type, e.data])).toEqual([
      [1, 'created', expect.anything()],
      [2, 'started', { attempt: 1, worker: 'w-1' }],
    ])

    const empty = await claim({ types: [type] })
    expect(empty.status).toBe(204)
    expect(empty.body).toBeNull()
  })

  it('with max: answers {claims} with up to max of the oldest jobs, each under its own lease, then {claims: []} when none came', async () => {
    const type = uniqueType('batch')
    const jobs: JobState[] = []
    for (let i = 0; i < 5; i++) jobs.push(await create({ type, input: { n: i } }))
    const first = await t.api.call<{ claims: Claimed[] }>('POST', '/v1/workers/claim', { types: [type], worker: 'w-b', leaseMs: 5_000, max: 3 })
    expect(first.status).toBe(200)
    expect(first.body.claims.map((c) => c.job.id)).toEqual(jobs.slice(0, 3).map((job) => job.id))
    for (const claimed of first.body.claims) {
      expect(claimed.job).toMatchObject({ status: 'running', attempt: 1, worker: 'w-b' })
      expect(claimed.lease).toMatchObject({ token: expect.stringMatching(/^lease_/), leaseMs: 5_000 })
    }
    expect(new Set(first.body.claims.map((c) => c.lease.token)).size).toBe(3)
    // A token writes only to its own job.
    const [a, b] = first.body.claims as [Claimed, Claimed]
    const crossed = await t.api.call('POST', `/v1/jobs/${a.job.id}/events`, { lease: b.lease.token, events: [{ type: 'completed' }] })
    expect(crossed.status).toBe(409)
    const rest = await t.api.call<{ claims: Claimed[] }>('POST', '/v1/workers/claim', { types: [type], max: 10 })
    expect(rest.body.claims.map((c) => c.job.id)).toEqual(jobs.slice(3).map((job) => job.id))
    const none = await t.api.call<{ claims: Claimed[] }>('POST', '/v1/workers/claim', { types: [type], max: 10 })
    expect(none).toMatchObject({ status: 200, body: { claims: [] } })
  })

  it('with done: completes the finished jobs and claims the next in one request; a refused completion refuses neither the others nor the claim', async () => {
    const type = uniqueType('done')
    const jobs: JobState[] = []
    for (let i = 0; i < 4; i++) jobs.push(await create({ type, input: { n: i } }))
    const stranger = await create({ type: uniqueType('done-other') })
    const first = await t.api.call<{ claims: Claimed[] }>('POST', '/v1/workers/claim', { types: [type], worker: 'w-d', max: 2 })
    const [a, b] = first.body.claims as [Claimed, Claimed]
    expect(await post(`/v1/jobs/${b.job.id}/cancel`, {})).toMatchObject({ status: 200 })
    const done = [
      { jobId: a.job.id, lease: a.lease.token, batch: 1, events: [progress(90), { type: 'completed', result: { n: 0 } }] },
      { jobId: b.job.id, lease: b.lease.token, batch: 1, events: [{ type: 'completed', result: { n: 1 } }] },
      { jobId: stranger.id, lease: a.lease.token, batch: 1, events: [{ type: 'failed', code: 'boom', message: 'no' }] },
    ]
    const answer = await t.api.call<{ claims: Claimed[]; done: (WriteAnswer & { jobId: string; error?: ErrorBody })[] }>('POST', '/v1/workers/claim', {
      types: [type],
      worker: 'w-d',
      max: 2,
      done,
    })
    expect(answer.status, JSON.stringify(answer.body)).toBe(200)
    expect(answer.body.claims.map((c) => c.job.id)).toEqual([jobs[2]?.id, jobs[3]?.id])
    expect(answer.body.done).toHaveLength(3)
    expect(answer.body.done[0]).toMatchObject({ jobId: a.job.id, status: 'completed', events: [{ type: 'progress' }, { type: 'completed' }] })
    expect(answer.body.done[1]).toMatchObject({ jobId: b.job.id, error: { code: 'job_finished' } })
    expect(answer.body.done[2]).toMatchObject({ jobId: stranger.id, error: { code: 'lease_lost' } })
    expect(await getJob(a.job.id)).toMatchObject({ status: 'completed', result: { n: 0 } })
    expect(await getJob(b.job.id)).toMatchObject({ status: 'cancelled' })
    expect(await getJob(stranger.id)).toMatchObject({ status: 'queued' })

    // The same write again (a worker that did not hear the answer) is recognized, not applied twice.
    const again = await t.api.call<{ claims: Claimed[]; done: WriteAnswer[] }>('POST', '/v1/workers/claim', { types: [type], done: done.slice(0, 1) })
    expect(again.body).toMatchObject({ claims: [], done: [{ jobId: a.job.id, duplicate: true, status: 'completed' }] })
  })

  it('with done: answers at once when no job is ready, instead of holding the claim for wait', async () => {
    const type = uniqueType('done-wait')
    const job = await create({ type })
    const claimed = await claimJob([type])
    const answer = await within(
      t.api.call<{ claims: Claimed[]; done: WriteAnswer[] }>('POST', '/v1/workers/claim', {
        types: [type],
        wait: 30,
        done: [{ jobId: job.id, lease: claimed.lease.token, events: [{ type: 'completed' }] }],
      }),
      'the claim that carried a completion',
      5_000,
    )
    expect(answer.body).toMatchObject({ claims: [], done: [{ jobId: job.id, status: 'completed' }] })
  })

  it('a long-poll claim waits, and wakes with the job as soon as one of its type is created', async () => {
    const type = uniqueType('wake')
    let settled = false
    const pending = claim({ types: [type], wait: 10 }).finally(() => (settled = true))
    await sleep(150)
    expect(settled).toBe(false)
    await create({ type: uniqueType('other') })
    await sleep(50)
    expect(settled).toBe(false)
    const job = await create({ type })
    const answer = await within(pending, 'the waiting claim')
    expect(answer.status).toBe(200)
    expect((answer.body as Claimed).job).toMatchObject({ id: job.id, attempt: 1 })
  })

  it('the jobs of a claim whose answer cannot reach its worker go back to the queue at once, not at lease expiry', async () => {
    // A stopping worker aborts its waiting claim; a job created just then can be claimed for it
    // before the node has read the connection's end, and then the answer cannot go out. Here the
    // client ends its side right after the claim: the node mostly reads that end while the claim's
    // commit is synced to disk, before the answer is written. Either way each claimed job must be
    // delivered (the client, which can still read, got the answer) or given back.
    for (let round = 0; round < 5; round++) {
      const type = uniqueType('undelivered')
      const jobs = [await create({ type }), await create({ type })]
      const body = JSON.stringify({ types: [type], max: 2, wait: 0, leaseMs: 60_000, worker: 'gone' })
      const socket = connect(Number(new URL(t.url).port), '127.0.0.1')
      let received = ''
      socket.on('data', (chunk: Buffer) => (received += chunk.toString()))
      socket.on('error', () => {})
      const closed = new Promise((resolve) => socket.once('close', resolve))
      await new Promise((resolve) => socket.once('connect', resolve))
      socket.end(`POST /v1/workers/claim HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${t.key}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
      await within(closed, 'the node to close the connection')
      const logs = async (): Promise<JobEvent[][]> => Promise.all(jobs.map(async (job) => (await t.api.call<PollResponse>('GET', `/v1/jobs/${job.id}/events?after=0`)).body.events))
      if (received.startsWith('HTTP/1.1 200')) {
        expect((await logs()).map((log) => log.map((event) => event.type))).toEqual([
          ['created', 'started'],
          ['created', 'started'],
        ])
        continue
      }
      expect(received).toBe('')
      await until(async () => (await logs()).every((log) => log.at(-1)?.type === 'requeued'), 'the claimed jobs back in the queue')
      for (const log of await logs()) {
        expect(log.map((event) => event.type)).toEqual(['created', 'started', 'requeued'])
        // No handler ran it: the attempt does not count.
        expect(log[2]?.data).toMatchObject({ reason: 'the claiming worker went away before the answer', attempt: 1, counted: false })
      }
      // The next worker gets them at once, as their first attempt.
      const next = await t.api.call<{ claims: Claimed[] }>('POST', '/v1/workers/claim', { types: [type], max: 2, wait: 0 })
      expect(next.body.claims.map((one) => one.job.id).sort()).toEqual(jobs.map((job) => job.id).sort())
      expect(next.body.claims.map((one) => one.job.attempt)).toEqual(jobs.map(() => 1))
    }
  })

  it('the jobs of a claim answered whole but never read (the worker closed the connection on it) go back to the queue at once', async () => {
    // The answer reaches the worker's socket, which it then closes without reading (a stop that
    // aborts the claim just as the answer lands): its system resets the connection, and the node,
    // whose write had gone out, hears of it only then. The claim takes both jobs at once.
    for (let round = 0; round < 3; round++) {
      const type = uniqueType('unread')
      const jobs = [await create({ type, input: 'x'.repeat(48_000) }), await create({ type, input: 'y'.repeat(48_000) })]
      const body = JSON.stringify({ types: [type], max: 2, wait: 10, leaseMs: 60_000, worker: 'stopping' })
      const socket = connect(Number(new URL(t.url).port), '127.0.0.1')
      socket.on('error', () => {})
      await new Promise((resolve) => socket.once('connect', resolve))
      // Nothing is read from here on: the stream takes in its 16 KiB, then stops reading, and the
      // rest of the answer (two jobs with 48 KB inputs) stays in the system's socket buffer.
      socket.pause()
      socket.write(`POST /v1/workers/claim HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${t.key}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
      const logs = async (): Promise<JobEvent[][]> => Promise.all(jobs.map(async (job) => (await t.api.call<PollResponse>('GET', `/v1/jobs/${job.id}/events?after=0`)).body.events))
      await until(async () => (await logs()).every((log) => log.some((event) => event.type === 'started')), 'the claim to take the jobs')
      // The answer is written in the turn after the claim's commit; let it reach the socket.
      await sleep(200)
      socket.destroy()
      await until(async () => (await logs()).every((log) => log.at(-1)?.type === 'requeued'), 'the jobs back in the queue')
      for (const log of await logs()) expect(log.at(-1)?.data).toMatchObject({ reason: 'the claiming worker never read the answer', attempt: 1, counted: false })
      const next = await t.api.call<{ claims: Claimed[] }>('POST', '/v1/workers/claim', { types: [type], max: 2, wait: 0 })
      expect(next.body.claims.map((one) => [one.job.id, one.job.attempt]).sort()).toEqual(jobs.map((job) => [job.id, 1]).sort())
    }
  })

  it('a worker that reads its claim and closes the connection keeps its jobs (a close without a reset)', async () => {
    const type = uniqueType('read')
    const job = await create({ type })
    const body = JSON.stringify({ types: [type], max: 1, wait: 0, leaseMs: 60_000, worker: 'reader' })
    const socket = connect(Number(new URL(t.url).port), '127.0.0.1')
    let received = ''
    socket.on('data', (chunk: Buffer) => (received += chunk.toString()))
    await new Promise((resolve) => socket.once('connect', resolve))
    socket.write(`POST /v1/workers/claim HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${t.key}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
    await until(async () => received.includes('"claims"') && received.endsWith('}'), 'the answer')
    socket.end()
    await new Promise((resolve) => socket.once('close', resolve))
    await sleep(300)
    expect((await t.api.call<PollResponse>('GET', `/v1/jobs/${job.id}/events?after=0`)).body.events.map((event) => event.type)).toEqual(['created', 'started'])
  })

  it('a long-poll claim with nothing to take answers 204 when its wait runs out', async () => {
    expect((await claim({ types: [uniqueType('idle')], wait: 0.2 })).status).toBe(204)
  })

  it('8 competing HTTP claimers get each of 160 jobs exactly once, and none is lost', async () => {
    const type = uniqueType('race')
    const total = 160
    const clients = Array.from({ length: 8 }, () => createJsonClient(t.url, t.key))
    try {
      const created: string[] = []
      for (let i = 0; i < total / 2; i++) created.push((await create({ type })).id)
      const owners = new Map<string, number>()
      const twice: string[] = []
      const giveUpAt = Date.now() + 30_000
      const claimers = clients.map(async (client, w) => {
        while (owners.size < total && Date.now() < giveUpAt) {
          const answer = await claim({ types: [type], worker: `w${w}`, wait: 0.3 }, client)
          if (answer.status === 204) continue
          expect(answer.status, JSON.stringify(answer.body)).toBe(200)
          const { job } = answer.body as Claimed
          if (owners.has(job.id)) twice.push(job.id)
          owners.set(job.id, w)
        }
      })
      // The other half arrives while they compete.
      for (let i = total / 2; i < total; i++) created.push((await create({ type })).id)
      await Promise.all(claimers)

      expect(twice).toEqual([])
      expect([...owners.keys()].sort()).toEqual([...created].sort())
      expect(new Set(owners.values()).size).toBeGreaterThan(1)
      const queued = await t.api.call<{ jobs: unknown[] }>('GET', `/v1/jobs?type=${type}&status=queued`)
      expect(queued.body.jobs).toEqual([])
      const running = await t.api.call<{ jobs: JobState[] }>('GET', `/v1/jobs?type=${type}&status=running&limit=200`)
      expect(running.body.jobs).toHaveLength(total)
      expect(running.body.jobs.every((job) => job.attempt === 1)).toBe(true)
    } finally {
      await Promise.all(clients.map((client) => client.close()))
    }
  })
})

describe('leases guard a claimed job', () => {
  it('a write with a stale lease, after the job was re-queued and claimed by another worker, is refused with lease_lost and appends nothing', async () => {
    const type = uniqueType('stale')
    const job = await create({ type })
    const first = await claimJob([type], { worker: 'first', leaseMs: 1_000 })
    await written(job.id, { lease: first.lease.token, batch: 1, events: [progress(10)] })
    await nextEvent(job.id, 'requeued')
    const second = await claimJob([type], { worker: 'second' })
    expect(second.job).toMatchObject({ id: job.id, attempt: 2 })
    const before = await getJob(job.id)

    const stale = await write(job.id, { lease: first.lease.token, batch: 2, events: [progress(99), { type: 'completed', result: 'zombie' }] })
    expect(expectError(stale, 'lease_lost', 409).details).toMatchObject({ jobId: job.id })
    expectError(await post(`/v1/jobs/${job.id}/heartbeat`, { lease: first.lease.token }), 'lease_lost', 409)
    expectError(await post(`/v1/jobs/${job.id}/release`, { lease: first.lease.token }), 'lease_lost', 409)
    expect(await getJob(job.id)).toEqual(before)

    expect(await written(job.id, { lease: second.lease.token, batch: 1, events: [progress(50)] })).toMatchObject({ seq: before.seq + 1 })
  })

  it('a write without a lease to a job a worker holds is refused with lease_lost and appends nothing', async () => {
    const type = uniqueType('nolease')
    const job = await create({ type })
    await claimJob([type])
    const seq = (await getJob(job.id)).seq
    expectError(await write(job.id, { events: [progress(5)] }), 'lease_lost', 409)
    expectError(await write(job.id, { type: 'completed', result: 1 }), 'lease_lost', 409)
    expect((await getJob(job.id)).seq).toBe(seq)
    // The admin can still cancel it: that needs no lease.
    expect((await post<JobState>(`/v1/jobs/${job.id}/cancel`, {})).body.status).toBe('cancelled')
  })

  it('a repeated write batch answers duplicate: true and appends nothing', async () => {
    const type = uniqueType('dup')
    const job = await create({ type })
    const { lease } = await claimJob([type])
    const batch1 = { lease: lease.token, batch: 1, events: [{ type: 'chunk', text: 'ab' }, checkpoint(1)] }
    const first = await written(job.id, batch1)
    expect(first).toEqual({ events: [{ seq: 3, type: 'chunk' }, { seq: 4, type: 'checkpoint' }], seq: 4, status: 'running' })
    expect(await written(job.id, batch1)).toEqual({ events: [], seq: 4, status: 'running', duplicate: true })
    await written(job.id, { lease: lease.token, batch: 2, events: [{ type: 'chunk', text: 'c' }] })
    expect(await written(job.id, batch1)).toMatchObject({ events: [], seq: 5, duplicate: true })
    expect(await getJob(job.id)).toMatchObject({ seq: 5, text: 'abc' })
    expect((await readLog(job.id)).map((e) => e.type)).toEqual(['created', 'started', 'chunk', 'checkpoint', 'chunk'])
  })

  it('heartbeats keep a job past its first lease; after a cancel the heartbeat answers cancelled and writes are refused', async () => {
    const type = uniqueType('beat')
    const job = await create({ type })
    const { lease } = await claimJob([type], { leaseMs: 1_000 })
    const beat = await post<{ status: string; cancelled: boolean; expiresAt: string }>(`/v1/jobs/${job.id}/heartbeat`, {
      lease: lease.token,
      leaseMs: 4_000,
    })
    expect(beat.status).toBe(200)
    expect(beat.body).toMatchObject({ status: 'running', cancelled: false })
    expect(Date.parse(beat.body.expiresAt)).toBeGreaterThan(Date.parse(lease.expiresAt))
    // Past the first lease, with the sweep looking every 50 ms: the extended lease holds.
    await sleep(1_300)
    expect(await getJob(job.id)).toMatchObject({ status: 'running', attempt: 1 })
    await written(job.id, { lease: lease.token, batch: 1, events: [progress(40)] })

    expect((await post<JobState>(`/v1/jobs/${job.id}/cancel`, { reason: 'stop' })).status).toBe(200)
    const after = await post(`/v1/jobs/${job.id}/heartbeat`, { lease: lease.token })
    expect(after).toMatchObject({ status: 200, body: { status: 'cancelled', cancelled: true, expiresAt: null } })
    expectError(await write(job.id, { lease: lease.token, batch: 2, events: [progress(50)] }), 'job_finished', 409)
    expect((await readLog(job.id)).map((e) => e.type)).toEqual(['created', 'started', 'progress', 'cancelled'])
  })

  it('a cancel reaches the worker\'s waiting signals call with reason cancelled', async () => {
    const type = uniqueType('signal')
    const job = await create({ type })
    const { lease } = await claimJob([type])
    const held = { jobs: [{ id: job.id, lease: lease.token }] }
    expect(await post('/v1/workers/signals', { ...held, wait: 0.2 })).toMatchObject({ status: 200, body: { signals: [] } })

    const waiting = post<{ signals: unknown[] }>('/v1/workers/signals', { ...held, wait: 10 })
    const answeredAt = waiting.then(() => performance.now())
    await sleep(100)
    const cancelSentAt = performance.now()
    expect((await post(`/v1/jobs/${job.id}/cancel`, { reason: 'user pressed stop' })).status).toBe(200)
    const answer = await within(waiting, 'the signals answer')
    expect(answer).toMatchObject({ status: 200, body: { signals: [{ jobId: job.id, reason: 'cancelled' }] } })
    console.log(`[dispatch] cancel → signals answer: ${((await answeredAt) - cancelSentAt).toFixed(1)} ms (cancel sent → waiting signals call answered)`)

    // Asked again, it answers at once.
    expect((await post('/v1/workers/signals', { ...held, wait: 10 })).body).toEqual({ signals: [{ jobId: job.id, reason: 'cancelled' }] })
  })

  it('a signals request listing no jobs is refused with 400 invalid_request, not held for its wait', async () => {
    // Before: answered 200 {signals: []} after holding the connection for the whole wait.
    const answer = await post('/v1/workers/signals', { jobs: [], wait: 1 })
    const error = expectError(answer, 'invalid_request', 400)
    expect(error.details).toMatchObject({ field: 'jobs' })
    expect(error.message).toMatch(/jobs: list at least one job/)
  })
})

describe('lapsed leases', () => {
  it('a lapsed lease re-queues the job with worker_lost; the next claimer gets attempt 2 with the checkpoint; after maxAttempts it fails with worker_lost', async () => {
    const type = uniqueType('lapse')
    const job = await create({ type })
    expect(job.maxAttempts).toBe(2)
    const first = await claimJob([type], { worker: 'first', leaseMs: 1_000 })
    await written(job.id, { lease: first.lease.token, batch: 1, events: [progress(20), checkpoint(2)] })

    const requeued = await nextEvent(job.id, 'requeued')
    expect(requeued).toMatchObject({ seq: 5, data: { reason: 'worker_lost', attempt: 1, retryAt: null } })
    expect(await getJob(job.id)).toMatchObject({ status: 'queued', attempt: 1, worker: null, checkpoint: { step: 2 }, queuePosition: 1 })
    const signals = await post('/v1/workers/signals', { jobs: [{ id: job.id, lease: first.lease.token }] })
    expect(signals.body).toEqual({ signals: [{ jobId: job.id, reason: 'lease_lost' }] })

    const second = await claimJob([type], { worker: 'second', leaseMs: 1_000 })
    expect(second.job).toMatchObject({ id: job.id, attempt: 2, worker: 'second', checkpoint: { step: 2 }, progress: { percent: 20 } })

    const failed = await nextEvent(job.id, 'failed', requeued.seq)
    expect(failed.data).toMatchObject({ code: 'worker_lost', retryable: false })
    expect(await getJob(job.id)).toMatchObject({ status: 'failed', attempt: 2, error: { code: 'worker_lost' }, checkpoint: { step: 2 } })
    expect((await claim({ types: [type] })).status).toBe(204)
    expect((await readLog(job.id)).map((e) => e.type)).toEqual(['created', 'started', 'progress', 'checkpoint', 'requeued', 'started', 'failed'])
  })

  it('a watcher\'s stream across the lapse, the requeue and the second attempt is one gapless history', async () => {
    const type = uniqueType('watched')
    const job = await create({ type })
    const stream = await openStream(job.id, '?after=0')
    const messages = stream.messages()
    try {
      const first = await claimJob([type], { worker: 'first', leaseMs: 1_000 })
      await written(job.id, { lease: first.lease.token, batch: 1, events: [progress(30), checkpoint(3)] })
      await written(job.id, { lease: first.lease.token, batch: 2, events: [{ type: 'chunk', text: 'abc' }] })
      await nextEvent(job.id, 'requeued')
      const second = await claimJob([type], { worker: 'second' })
      await written(job.id, { lease: second.lease.token, batch: 1, events: [{ type: 'chunk', text: 'def' }, { type: 'completed', result: 'ok' }] })

      const got = await within(
        collect(messages, (m) => m.type === 'event' && isTerminalEvent(m.event.type)),
        'the terminal event on the stream',
      )
      await within(stream.ended, 'the end of the stream')
      expect(got[0]).toEqual({ type: 'recovered', after: 0 })
      const events = got.flatMap((m) => (m.type === 'event' ? [m.event] : []))
      expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1))
      expect(events.map((e) => e.type)).toEqual([
        'created', 'started', 'progress', 'checkpoint', 'chunk', 'requeued', 'started', 'chunk', 'completed',
      ])
      expect(events.filter((e) => e.type === 'started').map((e) => e.data)).toEqual([
        { attempt: 1, worker: 'first' },
        { attempt: 2, worker: 'second' },
      ])
      // Anything else on the stream is a queue position, and only while the job waited.
      const requeuedAt = got.findIndex((m) => m.type === 'event' && m.event.type === 'requeued')
      const restartedAt = got.findIndex((m, i) => i > requeuedAt && m.type === 'event' && m.event.type === 'started')
      got.forEach((m, i) => {
        if (m.type === 'queue') expect(i > requeuedAt && i < restartedAt, JSON.stringify(m)).toBe(true)
        else if (i > 0) expect(m.type).toBe('event')
      })
      // What the watcher rebuilt is the job.
      let state: JobState | null = null
      for (const event of events) state = applyEvent(state, event)
      expect(state).toEqual(await getJob(job.id))
    } finally {
      stream.close()
    }
  })
})

describe('retries, release and resume', () => {
  it('a retryable failure re-queues with retryAt, is not claimable before it, and is claimed after it with the checkpoint', async () => {
    const type = uniqueType('retry')
    const job = await create({ type })
    const { lease } = await claimJob([type])
    const failure = { type: 'failed', code: 'rate_limited', message: 'slow down', retryable: true }
    const answer = await written(job.id, { lease: lease.token, batch: 1, events: [checkpoint(7), failure] })
    expect(answer).toMatchObject({ status: 'queued', events: [{ type: 'checkpoint' }, { type: 'requeued' }] })
    const requeued = (await readLog(job.id)).at(-1)
    expect(requeued).toMatchObject({ type: 'requeued', data: { reason: 'rate_limited', attempt: 1, error: { code: 'rate_limited', message: 'slow down' } } })
    const retryAt = Date.parse((requeued?.data as { retryAt: string }).retryAt)
    // The backoff runs from when the service took the write; the event's time is stamped at the
    // commit, a moment (often the next millisecond) later.
    const failedAt = Date.parse(requeued?.at as string)
    expect(retryAt).toBeLessThanOrEqual(failedAt + 500)
    expect(retryAt).toBeGreaterThan(failedAt + 400)
    expect(await getJob(job.id)).toMatchObject({ status: 'queued', error: { code: 'rate_limited', retryable: true }, queuePosition: 1 })

    expect((await claim({ types: [type], wait: 0 })).status).toBe(204)
    const later = await claimJob([type], { worker: 'retrier' })
    expect(later.job).toMatchObject({ id: job.id, attempt: 2, checkpoint: { step: 7 }, error: null })
    expect(Date.parse(later.job.startedAt as string)).toBeGreaterThanOrEqual(retryAt)
    // The failing worker's lease is spent.
    expectError(await write(job.id, { lease: lease.token, batch: 2, events: [progress(1)] }), 'lease_lost', 409)

    // On the last attempt a retryable failure is final.
    const last = await written(job.id, { lease: later.lease.token, batch: 1, events: [failure] })
    expect(last).toMatchObject({ status: 'failed', events: [{ type: 'failed' }] })
  })

  it('release re-queues at once with the checkpoint, and the next claim gets it', async () => {
    const type = uniqueType('release')
    const job = await create({ type })
    const { lease } = await claimJob([type], { worker: 'leaving' })
    await written(job.id, { lease: lease.token, batch: 1, events: [checkpoint(4)] })
    const released = await post<JobState>(`/v1/jobs/${job.id}/release`, { lease: lease.token, reason: 'deploy' })
    expect(released.status).toBe(200)
    expect(released.body).toMatchObject({ status: 'queued', queuePosition: 1, checkpoint: { step: 4 }, worker: null })
    expect((await readLog(job.id)).at(-1)).toMatchObject({ type: 'requeued', data: { reason: 'deploy', attempt: 1, retryAt: null } })
    expectError(await post(`/v1/jobs/${job.id}/release`, { lease: lease.token }), 'lease_lost', 409)

    const next = await claim({ types: [type], wait: 0, worker: 'arriving' })
    expect(next.status).toBe(200)
    expect((next.body as Claimed).job).toMatchObject({ id: job.id, attempt: 2, worker: 'arriving', checkpoint: { step: 4 } })
  })

  it('a release of a job no handler ran (ran: false) gives its attempt back: the retries it had are still there', async () => {
    const type = uniqueType('unrun')
    const job = await create({ type, maxAttempts: 2 })
    const first = await claimJob([type], { worker: 'prefetching' })
    const released = await post<JobState>(`/v1/jobs/${job.id}/release`, { lease: first.lease.token, reason: 'worker stopping', ran: false })
    expect(released.status).toBe(200)
    expect(released.body).toMatchObject({ status: 'queued', attempt: 0, maxAttempts: 2 })
    expect((await readLog(job.id)).at(-1)).toMatchObject({ type: 'requeued', data: { reason: 'worker stopping', attempt: 1, counted: false } })

    // Attempt 1 again, and its retryable failure is retried (attempt 2 of 2 would have failed for good).
    const second = await claimJob([type], { worker: 'arriving' })
    expect(second.job).toMatchObject({ id: job.id, attempt: 1 })
    const failure = { type: 'failed', code: 'flaky', message: 'try again', retryable: true } as const
    await written(job.id, { lease: second.lease.token, batch: 1, events: [failure] })
    expect((await readLog(job.id)).at(-1)).toMatchObject({ type: 'requeued', data: { reason: 'flaky', attempt: 1 } })
    expect(await getJob(job.id)).toMatchObject({ status: 'queued', attempt: 1, maxAttempts: 2 })
  })

  it('resume puts a failed job back in the queue with its checkpoint and a renewed attempt budget', async () => {
    const type = uniqueType('resume')
    const job = await create({ type, maxAttempts: 1 })
    const { lease } = await claimJob([type])
    await written(job.id, { lease: lease.token, batch: 1, events: [checkpoint(5), { type: 'failed', code: 'oom', message: 'killed', retryable: true }] })
    expect(await getJob(job.id)).toMatchObject({ status: 'failed', attempt: 1, maxAttempts: 1 })

    const resumed = await post<JobState>(`/v1/jobs/${job.id}/resume`, {})
    expect(resumed.status).toBe(200)
    // The budget is renewed from the server's maxAttempts (2) on top of the attempts made.
    expect(resumed.body).toMatchObject({ status: 'queued', attempt: 1, maxAttempts: 3, checkpoint: { step: 5 }, error: null, queuePosition: 1 })
    expect((await readLog(job.id)).at(-1)).toMatchObject({ type: 'requeued', data: { reason: 'resumed', attempt: 1, maxAttempts: 3 } })
    const again = await claimJob([type])
    expect(again.job).toMatchObject({ id: job.id, attempt: 2, checkpoint: { step: 5 } })

    expectError(await post(`/v1/jobs/${job.id}/resume`, {}), 'invalid_transition', 409)
    await written(job.id, { lease: again.lease.token, batch: 1, events: [{ type: 'completed', result: 'done' }] })
    expectError(await post(`/v1/jobs/${job.id}/resume`, {}), 'job_finished', 409)
    expectError(await post('/v1/jobs/job_nope/resume', {}), 'job_not_found', 404)
  })

  it('resume puts a cancelled job back in the queue, and refuses a queued one', async () => {
    const type = uniqueType('resume-cancelled')
    const job = await create({ type })
    await post(`/v1/jobs/${job.id}/cancel`, {})
    const resumed = await post<JobState>(`/v1/jobs/${job.id}/resume`, {})
    expect(resumed.body).toMatchObject({ status: 'queued', queuePosition: 1, finishedAt: null })
    expectError(await post(`/v1/jobs/${job.id}/resume`, {}), 'invalid_transition', 409)
    expect((await claimJob([type])).job).toMatchObject({ id: job.id, attempt: 1 })
  })
})

describe('jobs created with dispatch: false', () => {
  it('are never claimed, have no queue position, and take writes without a lease', async () => {
    const type = uniqueType('own')
    const job = await create({ type, dispatch: false })
    expect(job).toMatchObject({ dispatch: false, queuePosition: null })
    expect((await claim({ types: [type], wait: 0.2 })).status).toBe(204)
    expect((await getJob(job.id)).queuePosition).toBeNull()
    expect(await written(job.id, { events: [progress(50)] })).toMatchObject({ status: 'running', events: [{ type: 'started' }, { type: 'progress' }] })
    expect((await claim({ types: [type], wait: 0 })).status).toBe(204)
    expect(await written(job.id, { type: 'completed', result: 'mine' })).toMatchObject({ status: 'completed' })
  })
})

describe('queue position', () => {
  it('is in the create answer, GET, the list and the stream snapshot, and a live `event: queue` frame follows when a job ahead is claimed', async () => {
    const type = uniqueType('line')
    const jobs = [await create({ type }), await create({ type }), await create({ type })]
    expect(jobs.map((j) => j.queuePosition)).toEqual([1, 2, 3])
    expect((await getJob(jobs[1]?.id as string)).queuePosition).toBe(2)
    const list = await t.api.call<{ jobs: { id: string; queuePosition: number | null }[] }>('GET', `/v1/jobs?type=${type}`)
    expect(list.body.jobs.map((j) => j.queuePosition)).toEqual([3, 2, 1])

    const last = jobs[2] as JobState
    const stream = await openStream(last.id)
    const messages = stream.messages()
    const next = async (): Promise<StreamMessage[]> => within(collect(messages, () => true), 'the next stream message')
    try {
      expect(await next()).toMatchObject([{ type: 'snapshot', job: { id: last.id, queuePosition: 3 } }])
      await claimJob([type])
      expect(await next()).toEqual([{ type: 'queue', position: 2 }])
      expect(stream.raw).toMatch(/event: queue\ndata: \{"position":2\}\n/)
      await claimJob([type])
      expect(await next()).toEqual([{ type: 'queue', position: 1 }])
      expect((await claimJob([type])).job.id).toBe(last.id)
      expect(await next()).toMatchObject([{ type: 'event', event: { type: 'started', seq: 2 } }])
      expect((await getJob(last.id)).queuePosition).toBeNull()
    } finally {
      stream.close()
    }
  })
})

describe('validation of the dispatch routes', () => {
  it('answers every malformed body with 400 invalid_request naming the field', async () => {
    const job = await create({ type: uniqueType('valid') })
    const cases: [string, unknown, string][] = [
      ['/v1/workers/claim', {}, 'types'],
      ['/v1/workers/claim', { types: 'render' }, 'types'],
      ['/v1/workers/claim', { types: [] }, 'types'],
      ['/v1/workers/claim', { types: [''] }, 'types.0'],
      ['/v1/workers/claim', { types: ['ok', 42] }, 'types.1'],
      ['/v1/workers/claim', { types: Array.from({ length: 51 }, (_, i) => `t${i}`) }, 'types'],
      ['/v1/workers/claim', { types: ['x'], leaseMs: 999 }, 'leaseMs'],
      ['/v1/workers/claim', { types: ['x'], leaseMs: 600_001 }, 'leaseMs'],
      ['/v1/workers/claim', { types: ['x'], leaseMs: 1500.5 }, 'leaseMs'],
      ['/v1/workers/claim', { types: ['x'], wait: -1 }, 'wait'],
      ['/v1/workers/claim', { types: ['x'], worker: '' }, 'worker'],
      ['/v1/workers/claim', { types: ['x'], leaseMS: 5000 }, 'leaseMS'],
      ['/v1/workers/claim', { types: ['x'], max: 0 }, 'max'],
      ['/v1/workers/claim', { types: ['x'], max: 1001 }, 'max'],
      ['/v1/workers/claim', { types: ['x'], max: 2.5 }, 'max'],
      ['/v1/workers/claim', { types: ['x'], done: 'all' }, 'done'],
      ['/v1/workers/claim', { types: ['x'], done: [{ jobId: job.id, lease: 'lease_x', events: [] }] }, 'done.0.events'],
      ['/v1/workers/claim', { types: ['x'], done: [{ jobId: job.id, lease: 'lease_x', events: [progress(5)] }] }, 'done.0.events'],
      ['/v1/workers/claim', { types: ['x'], done: [{ jobId: job.id, events: [{ type: 'completed' }] }] }, 'done.0.lease'],
      ['/v1/workers/claim', { types: ['x'], done: [{ jobId: job.id, lease: 'lease_x', events: [progress(101), { type: 'completed' }] }] }, 'done.0.events.0.percent'],
      ['/v1/workers/claim', { types: ['x'], done: [{ jobId: job.id, lease: 'lease_x', events: [{ type: 'completed' }], extra: 1 }] }, 'done.0.extra'],
      [`/v1/jobs/${job.id}/heartbeat`, {}, 'lease'],
      [`/v1/jobs/${job.id}/heartbeat`, { lease: '' }, 'lease'],
      [`/v1/jobs/${job.id}/heartbeat`, { lease: 'lease_x', leaseMs: 10 }, 'leaseMs'],
      [`/v1/jobs/${job.id}/heartbeat`, { lease: 'lease_x', leaseMs: 600_001 }, 'leaseMs'],
      [`/v1/jobs/${job.id}/release`, {}, 'lease'],
      [`/v1/jobs/${job.id}/release`, { lease: 'lease_x', reason: 'r'.repeat(201) }, 'reason'],
      [`/v1/jobs/${job.id}/release`, { lease: 'lease_x', ran: 'no' }, 'ran'],
      ['/v1/workers/signals', {}, 'jobs'],
      ['/v1/workers/signals', { jobs: 'all' }, 'jobs'],
      ['/v1/workers/signals', { jobs: [{ id: job.id }] }, 'jobs.0.lease'],
      ['/v1/workers/signals', { jobs: [] }, 'jobs'],
      ['/v1/workers/signals', { jobs: [{ id: job.id, lease: 'lease_x' }], wait: -1 }, 'wait'],
      [`/v1/jobs/${job.id}/events`, { lease: '', events: [progress(1)] }, 'lease'],
      [`/v1/jobs/${job.id}/events`, { batch: 0, events: [progress(1)] }, 'batch'],
      [`/v1/jobs/${job.id}/events`, { batch: 1.5, events: [progress(1)] }, 'batch'],
      ['/v1/jobs', { type: 'x', maxAttempts: 0 }, 'maxAttempts'],
      ['/v1/jobs', { type: 'x', maxAttempts: 101 }, 'maxAttempts'],
      ['/v1/jobs', { type: 'x', dispatch: 'yes' }, 'dispatch'],
    ]
    for (const [path, body, field] of cases) {
      const answer = await post(path, body)
      const error = expectError(answer, 'invalid_request', 400)
      expect(error.details, `${path} ${JSON.stringify(body)}`).toMatchObject({ field })
    }
    // None of that touched the job.
    expect((await getJob(job.id)).seq).toBe(1)
  })
})
