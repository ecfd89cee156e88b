import { readFile } from 'node:fs/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  applyEvent,
  errorCodes,
  errorRegistry,
  type ErrorBody,
  type ErrorCode,
  type JobEvent,
  type JobState,
  type PollResponse,
  type StreamMessage,
} from '@jobwire/protocol'
import { mintSubscriptionToken } from '@jobwire/backend'
import { MemoryStore } from '../src/stores/memory-store.js'
import { startServer } from '../src/server.js'
import { collect, openSse, readSse, startTestServer, testApiKey, type SseConnection, type TestServer } from './fixtures.js'
import { openWs, wsUrl } from './ws-client.js'
import { expectDocumentedAnswer } from './openapi-check.js'
import { holdRequest, untilBodyBytesInFlight } from './held-body.js'
import { within } from '../../../test/support/wait.js'

/** Small limits, so every "too large" answer is cheap to provoke. */
const limits = {
  heartbeat: 200,
  sseRetry: 1234,
  pollMaxWait: 300,
  maxBodyBytes: 16 * 1024,
  maxValueBytes: 4096,
  maxEventBytes: 1024,
  maxBatchEvents: 50,
  maxTextLength: 100,
  maxItemsPerJob: 5,
  maxEventsPerJob: 10,
}

let t: TestServer

beforeAll(async () => {
  t = await startTestServer(limits)
})

afterAll(async () => {
  await t.close()
})

interface Answer<T> {
  status: number
  headers: Record<string, string | string[] | number | undefined>
  body: T
}

interface InjectOptions {
  body?: unknown
  /** A raw payload instead of JSON. */
  payload?: string
  headers?: Record<string, string>
  /** The key sent as a bearer token; null sends none. */
  key?: string | null
}

async function inject<T = Record<string, unknown>>(method: 'GET' | 'POST' | 'DELETE', url: string, options: InjectOptions = {}): Promise<Answer<T>> {
  const key = options.key === undefined ? t.key : options.key
  const headers: Record<string, string> = { ...(key === null ? {} : { authorization: `Bearer ${key}` }) }
  if (options.body !== undefined) headers['content-type'] = 'application/json'
  const response = await t.server.app.inject({
    method,
    url,
    headers: { ...headers, ...options.headers },
    payload: options.payload ?? (options.body === undefined ? undefined : JSON.stringify(options.body)),
  })
  const body = (response.body === '' ? null : response.json()) as T
  expectDocumentedAnswer({ method, url, status: response.statusCode, contentType: response.headers['content-type'] as string | undefined, body })
  return { status: response.statusCode, headers: response.headers, body }
}

let typeCounter = 0
/** A job type no other test uses, so list filters see only this test's jobs. */
const uniqueType = (name: string): string => `${name}-${++typeCounter}-${Date.now().toString(36)}`

async function createJob(body: Record<string, unknown> = {}): Promise<JobState> {
  const answer = await inject<JobState>('POST', '/v1/jobs', { body: { type: 'test', ...body } })
  expect(answer.status).toBe(201)
  return answer.body
}

interface AppendAnswer {
  events: { seq: number; type: string }[]
  seq: number
  status: string
}

async function append(jobId: string, body: unknown): Promise<AppendAnswer> {
  const answer = await inject<AppendAnswer>('POST', `/v1/jobs/${jobId}/events`, { body })
  expect(answer.status, JSON.stringify(answer.body)).toBe(200)
  return answer.body
}

async function getJob(jobId: string): Promise<JobState> {
  const answer = await inject<JobState>('GET', `/v1/jobs/${jobId}`)
  expect(answer.status).toBe(200)
  return answer.body
}

/** Asserts the error shape every failing request answers with, and returns the error. */
function expectError(answer: Answer<unknown>, code: ErrorCode, status: number = errorRegistry[code].status): ErrorBody {
  const body = answer.body as { error?: ErrorBody }
  expect(body.error, JSON.stringify(body)).toBeDefined()
  const error = body.error as ErrorBody
  expect(error.code).toBe(code)
  expect(answer.status).toBe(status)
  expect(typeof error.message).toBe('string')
  expect(error.message.length).toBeGreaterThan(0)
  expect(Object.keys(error).every((k) => ['code', 'message', 'details'].includes(k))).toBe(true)
  return error
}

const streamUrl = (jobId: string, query = ''): string => `${t.url}/v1/jobs/${jobId}/stream${query}`
const auth = (): Record<string, string> => ({ authorization: `Bearer ${t.key}` })

/** Opens a stream and insists it is one. */
async function openStream(jobId: string, headers: Record<string, string> = {}, query = ''): Promise<SseConnection> {
  const connection = await openSse(streamUrl(jobId, query), { headers: { ...auth(), ...headers } })
  expect(connection.status, connection.body).toBe(200)
  return connection
}

/** Guards a wait that would otherwise hang the test on a regression (not a speed check). */
const seqsOf = (messages: StreamMessage[]): number[] =>
  messages.flatMap((m) => (m.type === 'event' ? [m.event.seq] : []))

describe('POST /v1/jobs', () => {
  it('creates a queued job at seq 1 and points Location at it', async () => {
    const answer = await inject<JobState>('POST', '/v1/jobs', {
      body: { type: 'transcription', input: { file: 'a.mp3' }, owner: { tenant: 'acme', user: 'ann' } },
    })
    expect(answer.status).toBe(201)
    expect(answer.headers.location).toBe(`/v1/jobs/${answer.body.id}`)
    expect(answer.headers['x-request-id']).toBeTruthy()
    expect(answer.body).toMatchObject({
      type: 'transcription',
      status: 'queued',
      seq: 1,
      attempt: 0,
      input: { file: 'a.mp3' },
      owner: { tenant: 'acme', user: 'ann' },
      text: '',
      finishedAt: null,
    })
  })

  it('answers 201 then 200 with the same job for a repeated idempotency key', async () => {
    const key = `idem-${Date.now()}`
    const first = await inject<JobState>('POST', '/v1/jobs', { body: { type: 'export', idempotencyKey: key } })
    const second = await inject<JobState>('POST', '/v1/jobs', { body: { type: 'export', idempotencyKey: key, input: { ignored: true } } })
    expect(first.status).toBe(201)
    expect(second.status).toBe(200)
    expect(second.body.id).toBe(first.body.id)
    expect(second.body.input).toBeNull()
  })

  it('refuses an idempotency key reused for another job type with idempotency_conflict', async () => {
    const key = `idem-conflict-${Date.now()}`
    const first = await inject<JobState>('POST', '/v1/jobs', { body: { type: 'export', idempotencyKey: key } })
    const conflict = await inject('POST', '/v1/jobs', { body: { type: 'import', idempotencyKey: key } })
    const error = expectError(conflict, 'idempotency_conflict')
    expect(error.details).toMatchObject({ key, jobId: first.body.id })
  })

  it('names the offending field of an invalid body in details.field', async () => {
    expect(expectError(await inject('POST', '/v1/jobs', { body: { type: 'has space' } }), 'invalid_request').details).toMatchObject({ field: 'type' })
    expect(expectError(await inject('POST', '/v1/jobs', { body: {} }), 'invalid_request').details).toMatchObject({ field: 'type' })
    expect(
      expectError(await inject('POST', '/v1/jobs', { body: { type: 'x', owner: { tenant: 't' } } }), 'invalid_request').details,
    ).toMatchObject({ field: 'owner.user' })
  })
})

describe('GET /v1/jobs/:id', () => {
  it('returns the job snapshot at its current seq', async () => {
    const job = await createJob({ input: { n: 1 } })
    await append(job.id, { type: 'progress', stage: 'download', percent: 40 })
    const state = await getJob(job.id)
    expect(state).toMatchObject({ id: job.id, status: 'running', seq: 3, progress: { stage: 'download', percent: 40 }, input: { n: 1 } })
  })

  it('answers job_not_found for an unknown id', async () => {
    const error = expectError(await inject('GET', '/v1/jobs/job_doesnotexist'), 'job_not_found')
    expect(error.details).toMatchObject({ jobId: 'job_doesnotexist' })
  })
})

describe('GET /v1/jobs (list)', () => {
  interface Summary extends Omit<JobState, 'text' | 'input' | 'result' | 'checkpoint'> {
    textLength: number
    finished: boolean
  }
  type Page = { jobs: Summary[]; nextCursor: string | null }

  let type: string
  let ids: string[] // newest first

  beforeAll(async () => {
    type = uniqueType('list')
    const owners = [
      { tenant: 'acme', user: 'ann' },
      { tenant: 'acme', user: 'bob' },
      { tenant: 'globex', user: 'ann' },
      { tenant: 'acme', user: 'ann' },
      null,
    ]
    const created: string[] = []
    for (const owner of owners) created.push((await createJob({ type, ...(owner === null ? {} : { owner }) })).id)
    // created[0] completes with text, created[1] is cancelled, created[3] runs.
    await append(created[0] as string, { events: [{ type: 'chunk', text: 'hello' }, { type: 'completed', result: { ok: 1 } }] })
    await inject('POST', `/v1/jobs/${created[1]}/cancel`, {})
    await append(created[3] as string, { type: 'progress', percent: 5 })
    ids = created.reverse()
  })

  const list = async (query: string): Promise<Page> => {
    const answer = await inject<Page>('GET', `/v1/jobs?type=${type}&${query}`)
    expect(answer.status, JSON.stringify(answer.body)).toBe(200)
    return answer.body
  }

  it('lists newest first as summaries without text, input, result or checkpoint', async () => {
    const page = await list('')
    expect(page.jobs.map((j) => j.id)).toEqual(ids)
    expect(page.nextCursor).toBeNull()
    const completed = page.jobs.find((j) => j.status === 'completed') as Summary & Record<string, unknown>
    expect(completed).toMatchObject({ textLength: 5, finished: true })
    for (const field of ['text', 'input', 'result', 'checkpoint']) expect(completed).not.toHaveProperty(field)
  })

  it('filters by status', async () => {
    expect((await list('status=completed')).jobs.map((j) => j.status)).toEqual(['completed'])
    expect((await list('status=cancelled')).jobs.map((j) => j.status)).toEqual(['cancelled'])
    expect((await list('status=running')).jobs).toHaveLength(1)
    expect((await list('status=queued')).jobs).toHaveLength(2)
  })

  it('filters by type', async () => {
    const other = await inject<Page>('GET', `/v1/jobs?type=${type}-none`)
    expect(other.body.jobs).toEqual([])
  })

  it('filters by owner=tenant:user, owner=tenant and tenant/user parameters', async () => {
    const annAtAcme = await list('owner=acme:ann')
    expect(annAtAcme.jobs).toHaveLength(2)
    expect(annAtAcme.jobs.every((j) => j.owner?.tenant === 'acme' && j.owner.user === 'ann')).toBe(true)
    expect((await list('owner=acme')).jobs).toHaveLength(3)
    expect((await list('user=ann')).jobs).toHaveLength(3)
    expect((await list('tenant=globex&user=ann')).jobs).toHaveLength(1)
  })

  it('pages with limit and an opaque cursor, without gaps or repeats', async () => {
    const seen: string[] = []
    let cursor: string | null = null
    let pages = 0
    do {
      const page: Page = await list(`limit=2${cursor === null ? '' : `&cursor=${cursor}`}`)
      expect(page.jobs.length).toBeLessThanOrEqual(2)
      seen.push(...page.jobs.map((j) => j.id))
      cursor = page.nextCursor
      pages++
    } while (cursor !== null)
    expect(pages).toBe(3)
    expect(seen).toEqual(ids)
  })

  it('accepts the key as ?access_token= like every other route', async () => {
    const answer = await inject<Page>('GET', `/v1/jobs?type=${type}&access_token=${t.key}`, { key: null })
    expect(answer.status, JSON.stringify(answer.body)).toBe(200)
    expect(answer.body.jobs).toHaveLength(ids.length)
  })

  it('refuses a bad status, limit or unknown parameter naming the field', async () => {
    expect(expectError(await inject('GET', '/v1/jobs?status=sleeping'), 'invalid_request').details).toMatchObject({ field: 'status' })
    expect(expectError(await inject('GET', '/v1/jobs?limit=0'), 'invalid_request').details).toMatchObject({ field: 'limit' })
    expect(expectError(await inject('GET', '/v1/jobs?limit=201'), 'invalid_request').details).toMatchObject({ field: 'limit' })
    expectError(await inject('GET', '/v1/jobs?colour=red'), 'invalid_request')
  })

  it('refuses a cursor it did not give, rather than answering the first page again', async () => {
    const first = await list('limit=2')
    const cursor = first.nextCursor as string
    // Garbage, a cursor padded as base64 is or with a character base64 decoding skips, one encoded
    // twice: a client paging with any of them would start over at the first page, every time.
    for (const bad of ['abc', '%25%25', `${cursor}=`, `${cursor}.`, encodeURIComponent(encodeURIComponent(`${cursor}=`))]) {
      const answer = await inject('GET', `/v1/jobs?type=${type}&limit=2&cursor=${bad}`)
      expect(expectError(answer, 'invalid_request').details, bad).toMatchObject({ field: 'cursor' })
    }
    // The cursor as it came still pages on.
    expect((await list(`limit=2&cursor=${cursor}`)).jobs.map((j) => j.id)).toEqual(ids.slice(2, 4))
  })
})

describe('POST /v1/jobs/:id/events', () => {
  it('appends a single event to a running job and answers its seq', async () => {
    const job = await createJob()
    await append(job.id, { type: 'started', worker: 'w-1' })
    const answer = await append(job.id, { type: 'progress', stage: 'upload', percent: 10, message: 'go' })
    expect(answer).toEqual({ events: [{ seq: 3, type: 'progress' }], seq: 3, status: 'running' })
    expect((await getJob(job.id)).progress).toEqual({ stage: 'upload', percent: 10, message: 'go' })
  })

  it('starts a queued job implicitly before its first work event', async () => {
    const job = await createJob()
    const answer = await append(job.id, { type: 'chunk', text: 'Hi' })
    expect(answer).toEqual({ events: [{ seq: 2, type: 'started' }, { seq: 3, type: 'chunk' }], seq: 3, status: 'running' })
    expect(await getJob(job.id)).toMatchObject({ status: 'running', attempt: 1, text: 'Hi' })
  })

  it('appends a batch in order and can finish the job in it', async () => {
    const job = await createJob()
    const answer = await append(job.id, {
      events: [
        { type: 'started' },
        { type: 'item', id: 'f1', label: 'a.txt', status: 'running' },
        { type: 'item', id: 'f1', status: 'completed', percent: 100 },
        { type: 'checkpoint', data: { cursor: 7 } },
        { type: 'completed', result: { files: 1 } },
      ],
    })
    expect(answer.events.map((e) => [e.seq, e.type])).toEqual([
      [2, 'started'],
      [3, 'item'],
      [4, 'item'],
      [5, 'checkpoint'],
      [6, 'completed'],
    ])
    expect(answer).toMatchObject({ seq: 6, status: 'completed' })
    expect(await getJob(job.id)).toMatchObject({ status: 'completed', result: { files: 1 }, checkpoint: { cursor: 7 }, items: [{ id: 'f1', status: 'completed' }] })
  })

  it('appends nothing when the third event of a batch is invalid', async () => {
    const job = await createJob()
    const bad = await inject('POST', `/v1/jobs/${job.id}/events`, {
      body: { events: [{ type: 'progress', percent: 1 }, { type: 'chunk', text: 'x' }, { type: 'progress', percent: 150 }] },
    })
    expect(expectError(bad, 'invalid_request').details).toMatchObject({ field: 'events.2.percent' })
    expect(await getJob(job.id)).toMatchObject({ seq: 1, status: 'queued', text: '' })
  })

  it('appends nothing when the third event of a batch breaks the state machine', async () => {
    const job = await createJob()
    const bad = await inject('POST', `/v1/jobs/${job.id}/events`, {
      body: { events: [{ type: 'progress', percent: 1 }, { type: 'completed' }, { type: 'progress', percent: 2 }] },
    })
    expect(expectError(bad, 'job_finished').details).toMatchObject({ index: 2 })
    expect(await getJob(job.id)).toMatchObject({ seq: 1, status: 'queued' })
  })

  it('refuses a second started with invalid_transition', async () => {
    const job = await createJob()
    await append(job.id, { type: 'started' })
    const error = expectError(await inject('POST', `/v1/jobs/${job.id}/events`, { body: { type: 'started' } }), 'invalid_transition')
    expect(error.details).toMatchObject({ status: 'running', type: 'started' })
  })

  it('refuses events after the terminal one with job_finished', async () => {
    const job = await createJob()
    await append(job.id, { type: 'failed', code: 'boom', message: 'it broke' })
    expect((await getJob(job.id)).status).toBe('failed')
    expectError(await inject('POST', `/v1/jobs/${job.id}/events`, { body: { type: 'progress', percent: 1 } }), 'job_finished')
  })

  it('refuses types a producer may not send and unknown ones with unknown_event_type', async () => {
    const job = await createJob()
    for (const type of ['created', 'cancelled', 'requeued', 'explode']) {
      const error = expectError(await inject('POST', `/v1/jobs/${job.id}/events`, { body: { type } }), 'unknown_event_type')
      expect(error.details).toMatchObject({ type, index: 0 })
      expect(error.details?.allowed).toContain('progress')
    }
    expect(expectError(await inject('POST', `/v1/jobs/${job.id}/events`, { body: { percent: 3 } }), 'invalid_request').details).toMatchObject({ field: 'type' })
  })

  it('refuses unknown fields and empty batches naming the field', async () => {
    const job = await createJob()
    expect(
      expectError(await inject('POST', `/v1/jobs/${job.id}/events`, { body: { type: 'progress', percnt: 3 } }), 'invalid_request'),
    ).toBeDefined()
    expect(expectError(await inject('POST', `/v1/jobs/${job.id}/events`, { body: { events: [] } }), 'invalid_request').details).toMatchObject({ field: 'events' })
    expect(
      expectError(await inject('POST', `/v1/jobs/${job.id}/events`, { body: { events: [{ type: 'started' }], extra: 1 } }), 'invalid_request').details,
    ).toMatchObject({ field: 'extra' })
  })

  it('answers job_not_found for events to an unknown job', async () => {
    expectError(await inject('POST', '/v1/jobs/job_nope/events', { body: { type: 'started' } }), 'job_not_found')
  })
})

describe('POST /v1/jobs/:id/cancel', () => {
  it('cancels a running job and answers 200 unchanged when cancelled again', async () => {
    const job = await createJob()
    await append(job.id, { type: 'progress', percent: 50 })
    const first = await inject<JobState>('POST', `/v1/jobs/${job.id}/cancel`, { body: { reason: 'user asked' } })
    expect(first.status).toBe(200)
    expect(first.body).toMatchObject({ status: 'cancelled', seq: 4 })
    const again = await inject<JobState>('POST', `/v1/jobs/${job.id}/cancel`)
    expect(again.status).toBe(200)
    expect(again.body).toEqual(first.body)
  })

  it('refuses to cancel a completed job with job_finished', async () => {
    const job = await createJob()
    await append(job.id, { type: 'completed' })
    expectError(await inject('POST', `/v1/jobs/${job.id}/cancel`), 'job_finished')
  })
})

describe('GET /v1/jobs/:id/stream (SSE over a real socket)', () => {
  it('sends event-stream headers, a retry hint and an initial snapshot carrying its seq as id', async () => {
    const job = await createJob()
    await append(job.id, { type: 'progress', stage: 'a' })
    const connection = await openStream(job.id)
    try {
      expect(connection.headers['content-type']).toMatch(/^text\/event-stream/)
      expect(connection.headers['cache-control']).toBe('no-cache, no-transform')
      expect(connection.headers['x-accel-buffering']).toBe('no')
      const [first] = await collect(connection.messages(), () => true)
      expect(first).toMatchObject({ type: 'snapshot', reset: false, reason: 'initial', job: { id: job.id, seq: 3, status: 'running' } })
      expect(connection.raw.startsWith('retry: 1234\n\n')).toBe(true)
      expect(connection.retry).toBe(1234)
      expect(connection.lastEventId).toBe('3')
    } finally {
      connection.close()
    }
  })

  it('delivers live events after the snapshot and closes the stream after the terminal event', async () => {
    const job = await createJob()
    const connection = await openStream(job.id)
    try {
      const messages = connection.messages()
      const [snapshot] = await collect(messages, () => true)
      expect(snapshot).toMatchObject({ type: 'snapshot', job: { seq: 1 } })
      await append(job.id, { type: 'progress', percent: 10 })
      await append(job.id, { events: [{ type: 'chunk', text: 'abc' }, { type: 'completed', result: 'done' }] })
      const rest = await within(collect(messages), 'the server to end the stream')
      expect(rest.map((m) => (m.type === 'event' ? m.event.type : m.type))).toEqual(['started', 'progress', 'chunk', 'completed'])
      expect(seqsOf(rest)).toEqual([2, 3, 4, 5])
      await within(connection.ended, 'the socket to close')
      // The events rebuild the job exactly.
      let state = (snapshot as Extract<StreamMessage, { type: 'snapshot' }>).job
      for (const m of rest) if (m.type === 'event') state = applyEvent(state, m.event)
      expect(state).toEqual(await getJob(job.id))
    } finally {
      connection.close()
    }
  })

  it('ends at once with only a snapshot when the job already finished', async () => {
    const job = await createJob()
    await append(job.id, { type: 'completed' })
    const messages = await within(collect(readSse(streamUrl(job.id), { headers: auth() })), 'the stream to end')
    expect(messages).toHaveLength(1)
    expect(messages[0]).toMatchObject({ type: 'snapshot', job: { status: 'completed', seq: 3 } })
  })

  it('resumes after Last-Event-ID with a recovered marker and exactly the missing events', async () => {
    const job = await createJob()
    await append(job.id, { events: [{ type: 'progress', percent: 1 }, { type: 'progress', percent: 2 }, { type: 'progress', percent: 3 }] })
    const connection = await openStream(job.id, { 'last-event-id': '2' })
    try {
      const messages = connection.messages()
      const replay = await collect(messages, (m) => m.type === 'event' && m.event.seq === 5)
      expect(replay[0]).toEqual({ type: 'recovered', after: 2 })
      expect(seqsOf(replay)).toEqual([3, 4, 5])
      await append(job.id, { type: 'completed' })
      expect(seqsOf(await within(collect(messages), 'the stream to end'))).toEqual([6])
    } finally {
      connection.close()
    }
  })

  it('resumes from ?after= and lets Last-Event-ID win over it', async () => {
    const job = await createJob()
    await append(job.id, { events: [{ type: 'progress', percent: 1 }, { type: 'progress', percent: 2 }, { type: 'completed' }] })
    const fromQuery = await collect(readSse(streamUrl(job.id, '?after=3'), { headers: auth() }))
    expect(fromQuery[0]).toEqual({ type: 'recovered', after: 3 })
    expect(seqsOf(fromQuery)).toEqual([4, 5])
    const fromHeader = await collect(readSse(streamUrl(job.id, '?after=1'), { headers: { ...auth(), 'last-event-id': '4' } }))
    expect(fromHeader[0]).toEqual({ type: 'recovered', after: 4 })
    expect(seqsOf(fromHeader)).toEqual([5])
    const fromZero = await collect(readSse(streamUrl(job.id, '?after=0'), { headers: auth() }))
    expect(seqsOf(fromZero)).toEqual([1, 2, 3, 4, 5])
  })

  it('answers a resume from a trimmed position with a reset snapshot', async () => {
    const job = await createJob()
    // 1 created + 1 started + 18 progress = seq 20; the log keeps the last 10.
    await append(job.id, { events: Array.from({ length: 18 }, (_, i) => ({ type: 'progress', percent: i })) })
    const connection = await openStream(job.id, { 'last-event-id': '2' })
    try {
      const messages = connection.messages()
      const [first] = await collect(messages, () => true)
      expect(first).toMatchObject({ type: 'snapshot', reset: true, reason: 'trimmed', job: { seq: 20, progress: { percent: 17 } } })
      expect(connection.lastEventId).toBe('20')
      await append(job.id, { type: 'completed' })
      expect(seqsOf(await within(collect(messages), 'the stream to end'))).toEqual([21])
    } finally {
      connection.close()
    }
    // A position the log still holds is recovered, not reset.
    const held = await collect(readSse(streamUrl(job.id), { headers: { ...auth(), 'last-event-id': '15' } }))
    expect(held[0]).toEqual({ type: 'recovered', after: 15 })
    expect(seqsOf(held)).toEqual([16, 17, 18, 19, 20, 21])
  })

  it('answers a position beyond the last event with a 409 position_ahead error, so EventSource stops', async () => {
    const job = await createJob()
    const connection = await openSse(streamUrl(job.id), { headers: { ...auth(), 'last-event-id': '99' } })
    expect(connection.status).toBe(409)
    expect(JSON.parse(connection.body)).toMatchObject({ error: { code: 'position_ahead', details: { position: 99, seq: 1 } } })
  })

  it('sends heartbeat comments while nothing happens', async () => {
    const job = await createJob()
    const connection = await openStream(job.id)
    try {
      await within(connection.waitFor((c) => c.comments.includes('heartbeat')), 'a heartbeat comment')
      expect(connection.raw).toContain('\n: heartbeat\n\n')
    } finally {
      connection.close()
    }
  })

  it('accepts the key as ?access_token= for browsers that cannot set headers', async () => {
    const job = await createJob()
    await append(job.id, { type: 'completed' })
    const messages = await collect(readSse(streamUrl(job.id, `?access_token=${encodeURIComponent(t.key)}`)))
    expect(messages[0]).toMatchObject({ type: 'snapshot', job: { id: job.id } })
    const resumed = await collect(readSse(streamUrl(job.id, `?after=1&access_token=${encodeURIComponent(t.key)}`)))
    expect(seqsOf(resumed)).toEqual([2, 3])
  })

  it('refuses a stream without a key, with a wrong key, for an unknown job or a bad position as plain JSON', async () => {
    const job = await createJob()
    const cases: [Record<string, string>, string, ErrorCode][] = [
      [{}, job.id, 'unauthorized'],
      [{ authorization: 'Bearer wrong-key-wrong-key' }, job.id, 'unauthorized'],
      [{ authorization: `Bearer ${t.key}` }, 'job_missing', 'job_not_found'],
      [{ authorization: `Bearer ${t.key}`, 'last-event-id': 'abc' }, job.id, 'invalid_position'],
    ]
    for (const [headers, id, code] of cases) {
      const connection = await openSse(streamUrl(id), { headers })
      expect(connection.headers['content-type']).toMatch(/^application\/json/)
      expectError({ status: connection.status, headers: {}, body: JSON.parse(connection.body) }, code)
    }
    const wrongToken = await openSse(streamUrl(job.id, '?access_token=nope-nope-nope-nope'))
    expectError({ status: wrongToken.status, headers: {}, body: JSON.parse(wrongToken.body) }, 'unauthorized')
  })
})

describe('GET /v1/jobs/:id/events (long-poll)', () => {
  it('answers at once with an initial snapshot when no position is given', async () => {
    const job = await createJob()
    await append(job.id, { type: 'progress', percent: 5 })
    const answer = await inject<PollResponse>('GET', `/v1/jobs/${job.id}/events?wait=10`)
    expect(answer.status).toBe(200)
    expect(answer.body).toMatchObject({ snapshot: { reset: false, reason: 'initial', job: { seq: 3 } }, events: [], next: 3, done: false })
  })

  it('returns the events after a position and the next position to ask for', async () => {
    const job = await createJob()
    await append(job.id, { events: [{ type: 'progress', percent: 1 }, { type: 'progress', percent: 2 }] })
    const answer = await inject<PollResponse>('GET', `/v1/jobs/${job.id}/events?after=1`)
    expect(answer.body.snapshot).toBeUndefined()
    expect(answer.body.events.map((e) => e.seq)).toEqual([2, 3, 4])
    expect(answer.body).toMatchObject({ next: 4, done: false, more: false })
  })

  it('waits at the head and wakes when the next event is appended', async () => {
    const job = await createJob()
    let settled = false
    const poll = t.api.call<PollResponse>('GET', `/v1/jobs/${job.id}/events?after=1&wait=20`).finally(() => (settled = true))
    // Give the poll time to reach the wait; it must still be open, then the append wakes it.
    await new Promise((resolve) => setTimeout(resolve, 150))
    expect(settled).toBe(false)
    await append(job.id, { type: 'progress', percent: 9 })
    const answer = await within(poll, 'the poll to wake')
    expect(answer.status).toBe(200)
    expect(answer.body.events.map((e: JobEvent) => [e.seq, e.type])).toEqual([
      [2, 'started'],
      [3, 'progress'],
    ])
    expect(answer.body).toMatchObject({ next: 3, done: false })
  })

  it('says done once the terminal event was delivered', async () => {
    const job = await createJob()
    await append(job.id, { events: [{ type: 'progress', percent: 1 }, { type: 'completed' }] })
    const last = await inject<PollResponse>('GET', `/v1/jobs/${job.id}/events?after=2`)
    expect(last.body).toMatchObject({ next: 4, done: true })
    expect(last.body.events.map((e) => e.type)).toEqual(['progress', 'completed'])
    const atHead = await inject<PollResponse>('GET', `/v1/jobs/${job.id}/events?after=4&wait=30`)
    expect(atHead.body).toEqual({ events: [], next: 4, done: true, more: false })
    const snapshot = await inject<PollResponse>('GET', `/v1/jobs/${job.id}/events`)
    expect(snapshot.body).toMatchObject({ done: true, next: 4, snapshot: { job: { status: 'completed' } } })
  })

  it('caps a long wait at pollMaxWait and answers empty', async () => {
    const job = await createJob()
    // wait=3600 s would outlive the test; the server's 300 ms cap answers instead.
    const answer = await within(t.api.call<PollResponse>('GET', `/v1/jobs/${job.id}/events?after=1&wait=3600`), 'the capped poll')
    expect(answer.status).toBe(200)
    expect(answer.body).toEqual({ events: [], next: 1, done: false, more: false })
  })

  it('answers a trimmed position with a reset snapshot', async () => {
    const job = await createJob()
    await append(job.id, { events: Array.from({ length: 18 }, (_, i) => ({ type: 'progress', percent: i })) })
    const answer = await inject<PollResponse>('GET', `/v1/jobs/${job.id}/events?after=3`)
    expect(answer.body).toMatchObject({ snapshot: { reset: true, reason: 'trimmed', job: { seq: 20 } }, events: [], next: 20, done: false })
  })

  it('refuses a position beyond the last event, a bad position and a bad wait', async () => {
    const job = await createJob()
    expect(expectError(await inject('GET', `/v1/jobs/${job.id}/events?after=5`), 'position_ahead').details).toMatchObject({ position: 5, seq: 1 })
    expectError(await inject('GET', `/v1/jobs/${job.id}/events?after=-1`), 'invalid_position')
    expectError(await inject('GET', `/v1/jobs/${job.id}/events?after=1.5`), 'invalid_position')
    expect(expectError(await inject('GET', `/v1/jobs/${job.id}/events?after=1&wait=soon`), 'invalid_request').details).toMatchObject({ field: 'wait' })
    expectError(await inject('GET', '/v1/jobs/job_nope/events?after=0'), 'job_not_found')
  })
})

describe('health', () => {
  it('answers /healthz and /readyz without a key', async () => {
    const health = await inject('GET', '/healthz', { key: null })
    expect(health).toMatchObject({ status: 200, body: { ok: true } })
    const ready = await inject('GET', '/readyz', { key: null })
    expect(ready).toMatchObject({ status: 200, body: { ok: true, store: 'memory' } })
  })

  it('reports not ready with 503 once the store stops answering', async () => {
    const other = await startTestServer()
    try {
      await other.server.service.store.close()
      const ready = await other.server.app.inject({ method: 'GET', url: '/readyz' })
      expect(ready.statusCode).toBe(503)
      expect(ready.json()).toMatchObject({ ok: false, store: 'memory' })
    } finally {
      await other.close()
    }
  })
})

/**
 * One way to provoke each registry code. Typed as a Record over ErrorCode, so adding a code to
 * the registry does not compile until it gets a trigger here.
 */
type Trigger = () => Promise<Answer<unknown>>
const inBandOnly = new Set<ErrorCode>(['slow_consumer'])
/** Codes only a WebSocket message can provoke: they arrive in band on the open socket (upgrade: 101). */
const overWebSocket = new Set<ErrorCode>(['malformed_message', 'unknown_message_type', 'message_too_large'])
const triggers: Record<ErrorCode, Trigger> = {
  invalid_request: () => inject('POST', '/v1/jobs', { body: { type: 'x', colour: 'red' } }),
  malformed_json: () => inject('POST', '/v1/jobs', { payload: '{"type":', headers: { 'content-type': 'application/json' } }),
  unknown_event_type: async () => inject('POST', `/v1/jobs/${(await createJob()).id}/events`, { body: { type: 'teleport' } }),
  invalid_position: async () => inject('GET', `/v1/jobs/${(await createJob()).id}/events?after=x`),
  unauthorized: () => inject('GET', '/v1/jobs', { key: null }),
  invalid_token: () => inject('GET', '/v1/jobs', { key: mintSubscriptionToken({ secret: 'not-this-servers-token-secret-at-all', jobIds: ['job_x'] }).token }),
  token_expired: () =>
    inject('GET', '/v1/jobs', {
      key: mintSubscriptionToken({ secret: new TextDecoder().decode(t.server.auth.tokenSecret), jobIds: ['job_x'], ttlSeconds: 60, now: Date.now() - 3_600_000 }).token,
    }),
  forbidden: async () => {
    const token = await inject<{ token: string }>('POST', '/v1/tokens', { body: { jobIds: [(await createJob()).id] } })
    return inject('POST', '/v1/jobs', { key: token.body.token, body: { type: 'x' } })
  },
  job_not_found: () => inject('GET', '/v1/jobs/job_missing'),
  route_not_found: () => inject('GET', '/v1/nothing-here'),
  job_finished: async () => {
    const job = await createJob()
    await append(job.id, { type: 'completed' })
    return inject('POST', `/v1/jobs/${job.id}/events`, { body: { type: 'chunk', text: 'late' } })
  },
  invalid_transition: async () => {
    const job = await createJob()
    await append(job.id, { type: 'started' })
    return inject('POST', `/v1/jobs/${job.id}/events`, { body: { type: 'started' } })
  },
  lease_lost: async () => {
    const job = await createJob({ type: 'leased-trigger' })
    const claim = await inject<{ lease: { token: string } }>('POST', '/v1/workers/claim', { body: { types: ['leased-trigger'] } })
    expect(claim.status).toBe(200)
    return inject('POST', `/v1/jobs/${job.id}/events`, { body: { lease: 'lease_not-the-one', events: [{ type: 'progress', percent: 1 }] } })
  },
  idempotency_conflict: async () => {
    await inject('POST', '/v1/jobs', { body: { type: 'a', idempotencyKey: 'trigger-conflict' } })
    return inject('POST', '/v1/jobs', { body: { type: 'b', idempotencyKey: 'trigger-conflict' } })
  },
  position_ahead: async () => inject('GET', `/v1/jobs/${(await createJob()).id}/events?after=2`),
  payload_too_large: async () => inject('POST', '/v1/events', { body: { writes: [{ jobId: (await createJob()).id, events: [{ type: 'chunk', text: 'x'.repeat(limits.maxBodyBytes) }] }] } }),
  event_too_large: async () =>
    inject('POST', `/v1/jobs/${(await createJob()).id}/events`, { body: { type: 'progress', message: 'x'.repeat(1500) } }),
  value_too_large: async () => inject('POST', `/v1/jobs/${(await createJob()).id}/events`, { body: { type: 'completed', result: 'x'.repeat(5000) } }),
  batch_too_large: async () =>
    inject('POST', `/v1/jobs/${(await createJob()).id}/events`, {
      body: { events: Array.from({ length: limits.maxBatchEvents + 1 }, () => ({ type: 'progress' })) },
    }),
  item_limit_exceeded: async () => {
    const job = await createJob()
    await append(job.id, { events: Array.from({ length: limits.maxItemsPerJob }, (_, i) => ({ type: 'item', id: `file-${i}` })) })
    return inject('POST', `/v1/jobs/${job.id}/events`, { body: { type: 'item', id: 'one-too-many' } })
  },
  text_limit_exceeded: async () => {
    const job = await createJob()
    await append(job.id, { type: 'chunk', text: 'a'.repeat(60) })
    return inject('POST', `/v1/jobs/${job.id}/events`, { body: { type: 'chunk', text: 'b'.repeat(60) } })
  },
  rate_limited: async () => {
    // createLimit is 10 per owner per minute.
    const owner = { tenant: 'trigger', user: uniqueType('rate') }
    for (let i = 0; i < 10; i++) await createJob({ owner })
    return inject('POST', '/v1/jobs', { body: { type: 'test', owner } })
  },
  too_many_streams: () => triggerStreamLimit({ streamsPerUser: 1 }),
  key_not_found: () => inject('DELETE', '/v1/keys/no-such-key'),
  server_busy: () => triggerStreamLimit({ maxConnections: 1 }),
  overloaded: triggerBodiesInFlight,
  unsupported_media_type: () => inject('POST', '/v1/jobs', { payload: '<job/>', headers: { 'content-type': 'application/xml' } }),
  slow_consumer: triggerSlowConsumer,
  unavailable: async () => {
    const other = await startTestServer()
    try {
      await other.server.service.store.close()
      const response = await other.server.app.inject({ method: 'GET', url: '/v1/jobs', headers: { authorization: `Bearer ${other.key}` } })
      return { status: response.statusCode, headers: response.headers, body: response.json() }
    } finally {
      await other.close()
    }
  },
  internal: triggerInternal,
  malformed_message: () => triggerOverWebSocket('this is not JSON'),
  unknown_message_type: () => triggerOverWebSocket('{"type":"teleport"}'),
  message_too_large: () => triggerOverWebSocket(JSON.stringify({ type: 'ping', ref: 'x'.repeat(70 * 1024) })),
}

/** Sends one raw frame on a real WebSocket and answers the `error` message it gets back. */
async function triggerOverWebSocket(frame: string): Promise<Answer<unknown>> {
  const client = await openWs(wsUrl(t.url), { token: t.key })
  try {
    client.send(frame)
    const message = await client.next((m) => m.type === 'error')
    return { status: 101, headers: {}, body: message.type === 'error' ? { error: message.error } : null }
  } finally {
    client.close()
  }
}

/**
 * A reader that stops reading while a producer pours ~10 MB of events: the server cuts it off
 * with an in-band `slow_consumer` error once more than 64 KiB sit unsent. Answers the stream's
 * status and the error it ended with.
 */
async function triggerSlowConsumer(): Promise<Answer<unknown>> {
  const server = await startTestServer({ sseMaxBuffer: 64 * 1024, maxBodyBytes: 8 * 1024 * 1024, maxEventsPerJob: 100 })
  let connection: SseConnection | null = null
  try {
    const job = (await server.api.call<JobState>('POST', '/v1/jobs', { type: 'flood' })).body
    connection = await openSse(`${server.url}/v1/jobs/${job.id}/stream`, { headers: { authorization: `Bearer ${server.key}` } })
    connection.pause()
    const events = Array.from({ length: 1000 }, (_, i) => ({ type: 'progress', percent: i % 100, message: 'm'.repeat(1900) }))
    for (let batch = 0; batch < 5; batch++) {
      const answer = await server.api.call('POST', `/v1/jobs/${job.id}/events`, { events })
      expect(answer.status).toBe(200)
    }
    connection.resume()
    const messages = await within(collect(connection.messages()), 'the slow reader to be cut off', 30_000)
    const last = messages.at(-1)
    expect(last?.type).toBe('error')
    // Everything before the error is still a gap-free prefix the reader can resume after.
    const seqs = seqsOf(messages)
    expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => i + 2))
    return { status: connection.status, headers: connection.headers, body: { error: last?.type === 'error' ? last.error : null } }
  } finally {
    connection?.close()
    await server.close()
  }
}

/**
 * A server that allows one stream (per user, or in all): a person's first stream opens, the
 * second is refused before it starts. Answers the refusal.
 */
async function triggerStreamLimit(limit: { streamsPerUser: 1 } | { maxConnections: 1 }): Promise<Answer<unknown>> {
  const server = await startTestServer(limit)
  const open: SseConnection[] = []
  try {
    const owner = { tenant: 'acme', user: 'ann' }
    const job = (await server.api.call<JobState>('POST', '/v1/jobs', { type: 'watched', owner })).body
    const token = (await server.api.call<{ token: string }>('POST', '/v1/tokens', owner)).body.token
    const url = `${server.url}/v1/jobs/${job.id}/stream?access_token=${encodeURIComponent(token)}`
    open.push(await openSse(url))
    expect(open[0]?.status).toBe(200)
    const refused = await openSse(url)
    open.push(refused)
    expect(refused.headers['retry-after']).toMatch(/^\d+$/)
    return { status: refused.status, headers: refused.headers, body: refused.body === '' ? null : JSON.parse(refused.body) }
  } finally {
    for (const connection of open) connection.close()
    await server.close()
  }
}

/** A node reading as many body bytes as `--max-body-bytes-in-flight` allows: the next request is refused before its body is read. */
async function triggerBodiesInFlight(): Promise<Answer<unknown>> {
  const server = await startTestServer({ maxBodyBytesInFlight: 64 * 1024 })
  const held = holdRequest(server.url, server.key, '/v1/jobs', JSON.stringify({ type: 'held', input: { blob: 'x'.repeat(70_000) } }))
  try {
    await untilBodyBytesInFlight(server.url, server.key, 70_035)
    const refused = await server.api.call('POST', '/v1/jobs', { type: 'refused', input: { blob: 'y'.repeat(70_000) } })
    expect(refused.headers['retry-after']).toBe('1')
    return refused
  } finally {
    held.abort()
    await server.close()
  }
}

/** A store that throws something unknown: the boundary must answer `internal` and leak nothing. */
async function triggerInternal(): Promise<Answer<unknown>> {
  class BrokenStore extends MemoryStore {
    override async getJob(): Promise<JobState | null> {
      throw new Error('disk on fire at /var/secret/path')
    }
  }
  const server = await startServer({ logger: false, store: new BrokenStore(), config: { port: 0, memory: true, apiKey: testApiKey } })
  try {
    const response = await server.app.inject({ method: 'GET', url: '/v1/jobs/job_x', headers: { authorization: `Bearer ${testApiKey}` } })
    expect(response.body).not.toContain('disk on fire')
    expect(response.body).not.toContain('/var/secret')
    const body = response.json() as { error: ErrorBody }
    expect(body.error.details).toEqual({ requestId: response.headers['x-request-id'] })
    expect(body.error.message).toContain(String(response.headers['x-request-id']))
    return { status: response.statusCode, headers: response.headers, body }
  } finally {
    await server.close()
  }
}

describe('every registry error code', () => {
  it.for(errorCodes)('answers %s with its registered status and {error: {code, message}}', async (code) => {
    const answer = await triggers[code]()
    // slow_consumer only happens on an open stream (HTTP 200), as its last event.
    expectError(answer, code, inBandOnly.has(code) ? 200 : overWebSocket.has(code) ? 101 : errorRegistry[code].status)
  })

  it('answers unauthorized for a wrong key and for a non-bearer Authorization header', async () => {
    expectError(await inject('GET', '/v1/jobs', { key: 'not-the-admin-key' }), 'unauthorized')
    expectError(await inject('GET', '/v1/jobs', { key: null, headers: { authorization: `Basic ${t.key}` } }), 'unauthorized')
    expectError(await inject('GET', `/v1/jobs?access_token=wrong`, { key: null }), 'unauthorized')
  })

  it('answers route_not_found outside /v1 too, naming method and path without the query', async () => {
    const error = expectError(await inject('POST', '/nope?secret=1', { key: null }), 'route_not_found')
    expect(error.details).toEqual({ method: 'POST', url: '/nope' })
  })

  it('answers malformed_json for an empty body sent as JSON', async () => {
    expectError(await inject('POST', '/v1/jobs', { payload: '', headers: { 'content-type': 'application/json' } }), 'malformed_json')
  })

  it('answers invalid_request, not malformed_json, for JSON with a prototype-polluting key, creating nothing', async () => {
    for (const payload of ['{"type":"polluted","input":{"__proto__":{"admin":true}}}', '{"type":"polluted","input":{"constructor":{"prototype":{"admin":true}}}}']) {
      const error = expectError(await inject('POST', '/v1/jobs', { payload, headers: { 'content-type': 'application/json' } }), 'invalid_request')
      expect(error.details?.reason).toContain('__proto__')
    }
    expect((await inject<{ jobs: unknown[] }>('GET', '/v1/jobs?type=polluted')).body.jobs).toEqual([])
    // A key that only names a constructor is data like any other.
    expect((await inject('POST', '/v1/jobs', { body: { type: 'named', input: { constructor: 'Ada' } } })).status).toBe(201)
  })

  it('answers unsupported_media_type for a text/plain body', async () => {
    expectError(await inject('POST', '/v1/jobs', { payload: '{"type":"x"}', headers: { 'content-type': 'text/plain' } }), 'unsupported_media_type')
  })

  it('answers payload_too_large with the configured limit', async () => {
    const error = expectError(await triggers.payload_too_large(), 'payload_too_large')
    expect(error.details).toEqual({ limit: limits.maxBodyBytes })
  })

  it('answers event_too_large naming the event index, size and limit, appending nothing', async () => {
    const job = await createJob()
    const answer = await inject('POST', `/v1/jobs/${job.id}/events`, {
      body: { events: [{ type: 'progress', percent: 1 }, { type: 'progress', message: 'x'.repeat(1500) }] },
    })
    expect(expectError(answer, 'event_too_large').details).toMatchObject({ index: 1, limit: limits.maxEventBytes })
    expect((await getJob(job.id)).seq).toBe(1)
  })

  it('answers text_limit_exceeded appending nothing of the batch', async () => {
    const job = await createJob()
    await append(job.id, { type: 'chunk', text: 'a'.repeat(60) })
    const answer = await inject('POST', `/v1/jobs/${job.id}/events`, {
      body: { events: [{ type: 'progress', percent: 1 }, { type: 'chunk', text: 'b'.repeat(41) }] },
    })
    expect(expectError(answer, 'text_limit_exceeded').details).toMatchObject({ limit: limits.maxTextLength, index: 1 })
    expect(await getJob(job.id)).toMatchObject({ seq: 3, text: 'a'.repeat(60) })
    await append(job.id, { type: 'chunk', text: 'b'.repeat(40) })
  })
})

describe('docs/errors.md', () => {
  it('documents every registry error code with its status and retryability', async () => {
    const section = await readFile(new URL('../../../docs/errors.md', import.meta.url), 'utf8')
    const missing: string[] = []
    for (const code of errorCodes) {
      const row = new RegExp(`^\\|\\s*\`${code}\`\\s*\\|\\s*(\\d+)\\s*\\|\\s*(yes|no)\\s*\\|`, 'm').exec(section as string)
      const { status, retryable } = errorRegistry[code]
      if (row === null) missing.push(`${code}: no table row`)
      else if (Number(row[1]) !== status || (row[2] === 'yes') !== retryable) {
        missing.push(`${code}: docs/errors.md says ${row[1]}/${row[2]}, registry says ${status}/${retryable ? 'yes' : 'no'}`)
      }
    }
    expect(missing).toEqual([])
  })
})
