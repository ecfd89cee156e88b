import { afterEach, describe, expect, it } from 'vitest'
import {
  applyCoalesced,
  applyEvent,
  closeCodeOf,
  type JobState,
  type WsServerMessage,
} from '@jobwire/protocol'
import { mintSubscriptionToken } from '@jobwire/backend'
import { startTestServer, type TestServer } from './fixtures.js'
import { openWs, wsUrl, type WsTestClient } from './ws-client.js'

const secret = 'ws-suite-token-secret-0123456789abcdefgh'
const servers: TestServer[] = []
const sockets: WsTestClient[] = []
afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.close()
  for (const server of servers.splice(0)) await server.close()
})

async function start(config: Parameters<typeof startTestServer>[0] = {}): Promise<TestServer> {
  const server = await startTestServer({ tokenSecret: secret, ...config })
  servers.push(server)
  return server
}

async function connect(server: TestServer, options: Parameters<typeof openWs>[1] = { token: server.key }, query = ''): Promise<WsTestClient> {
  const client = await openWs(wsUrl(server.url, query), options)
  sockets.push(client)
  return client
}

async function createJob(server: TestServer, body: Record<string, unknown> = {}): Promise<JobState> {
  const answer = await server.api.call<JobState>('POST', '/v1/jobs', { type: 'test', dispatch: false, ...body })
  expect(answer.status).toBe(201)
  return answer.body
}

async function append(server: TestServer, jobId: string, events: unknown[]): Promise<void> {
  const answer = await server.api.call('POST', `/v1/jobs/${jobId}/events`, { events })
  expect(answer.status, JSON.stringify(answer.body)).toBe(200)
}

const isType =
  <K extends WsServerMessage['type']>(type: K, jobId?: string) =>
  (message: WsServerMessage): boolean =>
    message.type === type && (jobId === undefined || ('jobId' in message && message.jobId === jobId) || (message.type === 'event' && message.event.jobId === jobId))

/** Folds one job's messages with the shared reducer, as a client would. */
function fold(messages: readonly WsServerMessage[], jobId: string): JobState | null {
  let state: JobState | null = null
  for (const message of messages) {
    if (message.type === 'snapshot' && message.jobId === jobId) state = message.job
    else if (message.type === 'event' && message.event.jobId === jobId) state = state !== null && message.event.seq <= state.seq ? state : applyEvent(state, message.event)
    else if (message.type === 'coalesced' && message.jobId === jobId && state !== null) state = applyCoalesced(state, message.from, message.events)
  }
  return state
}

function seqsOf(messages: readonly WsServerMessage[], jobId: string): number[] {
  return messages.flatMap((message) => (message.type === 'event' && message.event.jobId === jobId ? [message.event.seq] : []))
}

function withoutQueue(state: JobState | null): Omit<JobState, 'queuePosition'> | null {
  if (state === null) return null
  const { queuePosition: _queuePosition, ...rest } = state
  return rest
}

describe('upgrade and authentication', () => {
  it('welcomes a credential from the Authorization header, access_token or the cookie', async () => {
    const server = await start()
    for (const client of [
      await connect(server),
      await connect(server, {}, `?access_token=${server.key}`),
      await connect(server, { headers: { cookie: `jobwire_token=${server.key}` } }),
    ]) {
      const welcome = await client.next(isType('welcome'))
      expect(welcome).toMatchObject({ type: 'welcome', protocol: 1, heartbeatMs: 15_000, expiresAt: null, maxMessageBytes: 65_536, maxSubscriptions: 1000 })
    }
  })

  it('refuses a bad credential in band with 4401, and a cookie from a foreign origin with 4403', async () => {
    const server = await start()
    for (const [options, query, code] of [
      [{ token: 'jwk_nope12345.not-a-real-secret-at-all' }, '', 'unauthorized'],
      [{}, `?access_token=${mintSubscriptionToken({ secret: 'another-servers-secret-0123456789abcdef', jobIds: ['job_x'] }).token}`, 'invalid_token'],
      [{ headers: { cookie: `jobwire_token=${server.key}`, origin: 'https://evil.example' } }, '', 'forbidden'],
    ] as const) {
      const client = await connect(server, options, query)
      const error = await client.next(isType('error'))
      expect(error).toMatchObject({ error: { code } })
      const closed = await client.closed
      expect(closed).toEqual({ code: closeCodeOf(code), reason: code })
    }
  })

  it('answers 404 to an upgrade on another path', async () => {
    const server = await start()
    await expect(openWs(`${server.url.replace('http', 'ws')}/v1/nowhere`, { token: server.key })).rejects.toThrow('HTTP 404')
  })
})

describe('subscriptions', () => {
  it('streams several jobs on one socket: snapshot, then live events, ending each at its terminal event', async () => {
    const server = await start()
    const client = await connect(server)
    const [a, b] = [await createJob(server), await createJob(server)] as [JobState, JobState]
    client.send({ type: 'subscribe', jobId: a.id })
    client.send({ type: 'subscribe', jobId: b.id })
    await client.next(isType('snapshot', a.id))
    await client.next(isType('snapshot', b.id))
    await append(server, a.id, [{ type: 'progress', percent: 10 }, { type: 'chunk', text: 'a' }, { type: 'completed' }])
    await append(server, b.id, [{ type: 'chunk', text: 'b' }])
    await client.next((m) => m.type === 'event' && m.event.jobId === b.id && m.event.type === 'chunk')
    await client.next((m) => m.type === 'event' && m.event.jobId === a.id && m.event.type === 'completed')
    expect(client.received.find(isType('subscribed', a.id))).toEqual({ type: 'subscribed', jobId: a.id, via: 'job', recovered: false, after: null })
    expect(seqsOf(client.received, a.id)).toEqual([2, 3, 4, 5])
    expect(withoutQueue(fold(client.received, a.id))).toEqual(withoutQueue((await server.api.call<JobState>('GET', `/v1/jobs/${a.id}`)).body))
    // a ended; b goes on
    await append(server, b.id, [{ type: 'completed' }])
    await client.next((m) => m.type === 'event' && m.event.jobId === b.id && m.event.type === 'completed')
  })

  it('resumes from a held position with exactly the missing events, resets from a trimmed one, refuses one ahead', async () => {
    const server = await start({ maxEventsPerJob: 10 })
    const job = await createJob(server)
    await append(server, job.id, Array.from({ length: 6 }, (_, i) => ({ type: 'chunk', text: String(i) })))
    const client = await connect(server)
    client.send({ type: 'subscribe', jobId: job.id, after: 4 })
    expect(await client.next(isType('subscribed', job.id))).toMatchObject({ recovered: true, after: 4 })
    await client.next((m) => m.type === 'event' && m.event.seq === 8)
    expect(seqsOf(client.received, job.id)).toEqual([5, 6, 7, 8])
    await append(server, job.id, Array.from({ length: 10 }, (_, i) => ({ type: 'chunk', text: String(i) })))
    const mark = client.received.length
    client.send({ type: 'subscribe', jobId: job.id, after: 2 })
    expect(await client.next(isType('snapshot', job.id), mark)).toMatchObject({ reset: true, reason: 'trimmed', job: { seq: 18 } })
    client.send({ type: 'subscribe', jobId: job.id, after: 99 })
    expect(await client.next(isType('error', job.id), mark)).toMatchObject({ jobId: job.id, error: { code: 'position_ahead' } })
  })

  it('checks scope on every subscription: other jobs look missing, a job token has no user feed, other owners are forbidden', async () => {
    const server = await start()
    const mine = await createJob(server, { owner: { tenant: 'acme', user: 'ann' } })
    const theirs = await createJob(server, { owner: { tenant: 'acme', user: 'bob' } })
    const jobToken = mintSubscriptionToken({ secret, jobIds: [mine.id] }).token
    const client = await connect(server, { token: jobToken })
    client.send({ type: 'subscribe', jobId: theirs.id })
    client.send({ type: 'subscribe', jobId: 'job_does-not-exist' })
    client.send({ type: 'subscribe', jobId: mine.id })
    client.send({ type: 'subscribe_user' })
    expect(await client.next(isType('error', theirs.id))).toMatchObject({ error: { code: 'job_not_found' } })
    expect(await client.next(isType('error', 'job_does-not-exist'))).toMatchObject({ error: { code: 'job_not_found' } })
    await client.next(isType('snapshot', mine.id))
    expect(await client.next((m) => m.type === 'error' && m.feed === 'user')).toMatchObject({ error: { code: 'forbidden' } })
    const ann = await connect(server, { token: mintSubscriptionToken({ secret, tenant: 'acme', user: 'ann' }).token })
    ann.send({ type: 'subscribe_user', owner: { tenant: 'acme', user: 'bob' } })
    expect(await ann.next((m) => m.type === 'error' && m.feed === 'user')).toMatchObject({ error: { code: 'forbidden' } })
  })

  it("a job followed on its own, then taken over by the user feed, is announced as the user's and continues after what was sent", async () => {
    const server = await start()
    const owner = { tenant: 'acme', user: 'ann' }
    const job = await createJob(server, { owner })
    await append(server, job.id, [{ type: 'progress', percent: 10 }])
    const client = await connect(server, { token: mintSubscriptionToken({ secret, ...owner }).token })
    client.send({ type: 'subscribe', jobId: job.id })
    const snapshot = await client.next<Extract<WsServerMessage, { type: 'snapshot' }>>(isType('snapshot', job.id))
    client.send({ type: 'subscribe_user' })
    await client.next(isType('user_synced'))
    const subscribed = client.received.flatMap((m) => (m.type === 'subscribed' && m.jobId === job.id ? [[m.via, m.recovered, m.after]] : []))
    expect(subscribed).toEqual([
      ['job', false, null],
      ['user', true, snapshot.job.seq],
    ])
    await append(server, job.id, [{ type: 'chunk', text: 'x' }])
    await client.next((m) => m.type === 'event' && m.event.jobId === job.id && m.event.type === 'chunk')
    // Nothing was replayed: one snapshot, then only the new event.
    expect(client.received.filter(isType('snapshot', job.id))).toHaveLength(1)
    expect(seqsOf(client.received, job.id)).toEqual([snapshot.job.seq + 1])
  })

  it('refuses more streams than wsMaxSubscriptions on one socket', async () => {
    const server = await start({ wsMaxSubscriptions: 2 })
    const jobs = [await createJob(server), await createJob(server), await createJob(server)]
    const client = await connect(server)
    for (const job of jobs) client.send({ type: 'subscribe', jobId: job.id })
    expect(await client.next(isType('error'))).toMatchObject({ jobId: jobs[2]?.id, error: { code: 'too_many_streams', details: { scope: 'this connection', max: 2 } } })
    client.send({ type: 'unsubscribe', jobId: jobs[0]?.id as string })
    client.send({ type: 'subscribe', jobId: jobs[2]?.id as string })
    await client.next(isType('snapshot', jobs[2]?.id))
  })

  it('cancels over the socket with an ack, and refuses a token without the cancel right', async () => {
    const server = await start()
    const job = await createJob(server, { owner: { tenant: 'acme', user: 'ann' } })
    const reader = await connect(server, { token: mintSubscriptionToken({ secret, jobIds: [job.id] }).token })
    reader.send({ type: 'cancel', jobId: job.id, ref: 'c1' })
    expect(await reader.next((m) => m.type === 'error' && m.ref === 'c1')).toMatchObject({ error: { code: 'forbidden' } })
    const client = await connect(server, { token: mintSubscriptionToken({ secret, jobIds: [job.id], rights: ['read', 'cancel'] }).token })
    client.send({ type: 'subscribe', jobId: job.id })
    await client.next(isType('snapshot', job.id))
    client.send({ type: 'cancel', jobId: job.id, reason: 'changed my mind', ref: 'c2' })
    expect(await client.next(isType('ack'))).toEqual({ type: 'ack', ref: 'c2' })
    const cancelled = await client.next((m) => m.type === 'event' && m.event.type === 'cancelled')
    expect(cancelled).toMatchObject({ event: { data: { reason: 'changed my mind' } } })
  })
})

describe('bad input', () => {
  it('answers malformed frames, unknown types, bad fields and binary frames with clear codes and keeps serving', async () => {
    const server = await start()
    const client = await connect(server)
    const job = await createJob(server)
    client.send('this is not json')
    client.send('[1,2,3]')
    client.send(JSON.stringify({ type: 'teleport', ref: 'r1' }))
    client.send(JSON.stringify({ type: 'subscribe', jobId: job.id, after: -1 }))
    client.send(JSON.stringify({ type: 'subscribe', jobId: job.id, colour: 'red' }))
    client.send(JSON.stringify({ type: 'cancel', ref: 'r2' }))
    client.socket.send(Buffer.from([1, 2, 3]), { binary: true })
    client.send({ type: 'ping', ref: 'still-there' })
    await client.next(isType('pong'))
    const codes = client.received.filter((m) => m.type === 'error').map((m) => (m.type === 'error' ? [m.error.code, m.ref ?? m.jobId ?? null] : null))
    expect(codes).toEqual([
      ['malformed_message', null],
      ['malformed_message', null],
      ['unknown_message_type', 'r1'],
      ['invalid_position', job.id],
      ['invalid_request', job.id],
      ['invalid_request', 'r2'],
      ['malformed_message', null],
    ])
  })

  it('answers a message over wsMaxMessageBytes with message_too_large and closes with 1009; far larger ones are not even read', async () => {
    const server = await start({ wsMaxMessageBytes: 1024 })
    const client = await connect(server)
    await client.next(isType('welcome'))
    client.send({ type: 'refresh_token', token: 'x'.repeat(2000) })
    expect(await client.next(isType('error'))).toMatchObject({ error: { code: 'message_too_large', details: { limit: 1024 } } })
    expect(await client.closed).toEqual({ code: 1009, reason: 'message_too_large' })
    const huge = await connect(server)
    await huge.next(isType('welcome'))
    huge.send('x'.repeat(64 * 1024))
    expect((await huge.closed).code).toBe(1009)
  })

  it('closes a flooding client with rate_limited (4429)', async () => {
    const server = await start({ wsMessageBurst: 20, wsMessageRate: 1 })
    const client = await connect(server)
    for (let i = 0; i < 50; i++) client.send({ type: 'ping' })
    expect(await client.next(isType('error'))).toMatchObject({ error: { code: 'rate_limited' } })
    expect(await client.closed).toEqual({ code: 4429, reason: 'rate_limited' })
    // The server is fine.
    const other = await connect(server)
    await other.next(isType('welcome'))
  })

  it('survives a barrage of random garbage without crashing', async () => {
    const server = await start({ wsMessageBurst: 100_000, wsMessageRate: 100_000 })
    const client = await connect(server)
    const job = await createJob(server)
    const samples = [
      '{', '}', 'null', '""', '{"type":1}', '{"type":"subscribe"}', '{"type":"subscribe","jobId":""}', '{"type":"subscribe","jobId":[]}',
      '{"type":"subscribe_user","positions":{"a":"b"}}', '{"type":"subscribe_user","owner":"me"}', '{"type":"subscribe_user","since":"yesterday"}',
      '{"type":"refresh_token","token":""}', '{"type":"refresh_token","token":"a.b.c"}', '{"type":"cancel","jobId":"job_x"}',
      `{"type":"subscribe","jobId":"${job.id}","after":1e400}`, '{"type":"__proto__"}', '{"type":"constructor"}', '\u0000\u0001',
    ]
    for (let i = 0; i < 500; i++) client.send(samples[i % samples.length] as string)
    client.send({ type: 'ping', ref: 'alive' })
    await client.next((m) => m.type === 'pong' && m.ref === 'alive')
    expect((await server.api.call('GET', '/healthz')).status).toBe(200)
  })
})

describe('per-subscription credentials', () => {
  it('welcomes a socket without a credential; a subscription on it without a token is refused with unauthorized for that job alone', async () => {
    const server = await start()
    const job = await createJob(server)
    const client = await connect(server, {})
    expect(await client.next(isType('welcome'))).toMatchObject({ expiresAt: null })
    client.send({ type: 'subscribe', jobId: job.id })
    expect(await client.next(isType('error', job.id))).toMatchObject({ error: { code: 'unauthorized' } })
    client.send({ type: 'subscribe_user' })
    expect(await client.next((m) => m.type === 'error' && m.feed === 'user')).toMatchObject({ error: { code: 'unauthorized' } })
    client.send({ type: 'subscribe', jobId: job.id, token: mintSubscriptionToken({ secret, jobIds: [job.id] }).token })
    expect(await client.next(isType('snapshot', job.id))).toMatchObject({ job: { id: job.id } })
  })

  it('carries 50 jobs under 50 per-job tokens on one socket; a token reads only its own job', async () => {
    const server = await start()
    const jobs: JobState[] = []
    for (let i = 0; i < 50; i++) jobs.push(await createJob(server))
    const client = await connect(server, {})
    for (const job of jobs) client.send({ type: 'subscribe', jobId: job.id, token: mintSubscriptionToken({ secret, jobIds: [job.id] }).token })
    for (const job of jobs) await client.next(isType('snapshot', job.id))
    const [first, second] = jobs as [JobState, JobState]
    // Another job's token does not open this one, and does not disturb the stream already open.
    const other = await createJob(server)
    client.send({ type: 'subscribe', jobId: other.id, token: mintSubscriptionToken({ secret, jobIds: [first.id] }).token })
    expect(await client.next(isType('error', other.id))).toMatchObject({ error: { code: 'job_not_found' } })
    await append(server, second.id, [{ type: 'chunk', text: 'two' }])
    await client.next((m) => m.type === 'event' && m.event.jobId === second.id && m.event.type === 'chunk')
    expect(client.received.filter((m) => m.type === 'error').map((m) => 'jobId' in m && m.jobId)).toEqual([other.id])
  })

  it("a job's own token expires alone: token_expiring names the job, only its stream ends with token_expired, and refresh_token with jobId keeps a position", async () => {
    const server = await start({ tokenNotice: '2s' })
    const [a, b, c] = [await createJob(server), await createJob(server), await createJob(server)] as [JobState, JobState, JobState]
    const token = (jobId: string, ttlSeconds: number): string => mintSubscriptionToken({ secret, jobIds: [jobId], ttlSeconds }).token
    const client = await connect(server, {})
    client.send({ type: 'subscribe', jobId: a.id, token: token(a.id, 3) })
    client.send({ type: 'subscribe', jobId: b.id, token: token(b.id, 3) })
    client.send({ type: 'subscribe', jobId: c.id, token: token(c.id, 600) })
    for (const job of [a, b, c]) await client.next(isType('snapshot', job.id))
    await client.next(isType('token_expiring', a.id))
    await client.next(isType('token_expiring', b.id))
    expect(client.received.filter(isType('token_expiring', c.id))).toEqual([])
    // b is refreshed in time; a is not.
    client.send({ type: 'refresh_token', jobId: b.id, token: token(b.id, 600), ref: 'b' })
    expect(await client.next((m) => m.type === 'token_refreshed' && m.ref === 'b')).toMatchObject({ jobId: b.id })
    expect(await client.next(isType('error', a.id))).toMatchObject({ error: { code: 'token_expired' } })
    await append(server, a.id, [{ type: 'chunk', text: 'a' }])
    await append(server, b.id, [{ type: 'chunk', text: 'b' }])
    await append(server, c.id, [{ type: 'chunk', text: 'c' }])
    await client.next((m) => m.type === 'event' && m.event.jobId === b.id && m.event.type === 'chunk')
    await client.next((m) => m.type === 'event' && m.event.jobId === c.id && m.event.type === 'chunk')
    expect(seqsOf(client.received, a.id)).toEqual([])
    // a resumes from its position with a new token.
    client.send({ type: 'subscribe', jobId: a.id, after: 1, token: token(a.id, 600) })
    await client.next((m) => m.type === 'event' && m.event.jobId === a.id && m.event.type === 'chunk')
    expect(client.received.filter(isType('subscribed', a.id)).at(-1)).toMatchObject({ recovered: true, after: 1 })
    expect(seqsOf(client.received, a.id)).toEqual([2, 3])
    expect(client.received.some((m) => m.type === 'error' && m.jobId !== a.id)).toBe(false)
  })

  it("cancels with the job's own token on a socket without a credential, and refuses a read-only one", async () => {
    const server = await start()
    const [a, b] = [await createJob(server), await createJob(server)] as [JobState, JobState]
    const client = await connect(server, {})
    client.send({ type: 'subscribe', jobId: a.id, token: mintSubscriptionToken({ secret, jobIds: [a.id], rights: ['read', 'cancel'] }).token })
    client.send({ type: 'subscribe', jobId: b.id, token: mintSubscriptionToken({ secret, jobIds: [b.id] }).token })
    await client.next(isType('snapshot', b.id))
    client.send({ type: 'cancel', jobId: b.id, ref: 'b' })
    expect(await client.next((m) => m.type === 'error' && m.ref === 'b')).toMatchObject({ error: { code: 'forbidden' } })
    client.send({ type: 'cancel', jobId: a.id, ref: 'a' })
    await client.next((m) => m.type === 'ack' && m.ref === 'a')
    await client.next((m) => m.type === 'event' && m.event.jobId === a.id && m.event.type === 'cancelled')
  })

  it('a tenant-wide token reads every job of its tenant, of any user, and no other tenant\'s', async () => {
    const server = await start()
    const ann = await createJob(server, { owner: { tenant: 'acme', user: 'ann' } })
    const bob = await createJob(server, { owner: { tenant: 'acme', user: 'bob' } })
    const elsewhere = await createJob(server, { owner: { tenant: 'globex', user: 'ann' } })
    const client = await connect(server, { token: mintSubscriptionToken({ secret, tenant: 'acme', tenantWide: true }).token })
    for (const job of [ann, bob, elsewhere]) client.send({ type: 'subscribe', jobId: job.id })
    await client.next(isType('snapshot', ann.id))
    await client.next(isType('snapshot', bob.id))
    expect(await client.next(isType('error', elsewhere.id))).toMatchObject({ error: { code: 'job_not_found' } })
  })
})

describe('credentials over time', () => {
  it('sends token_expiring before exp, closes with token_expired at exp, and a refresh keeps every position', async () => {
    const server = await start({ tokenNotice: '2s' })
    const job = await createJob(server, { owner: { tenant: 'acme', user: 'ann' } })
    const token = (ttlSeconds: number): string => mintSubscriptionToken({ secret, jobIds: [job.id], ttlSeconds }).token
    const client = await connect(server, { token: token(3) })
    client.send({ type: 'subscribe', jobId: job.id })
    await client.next(isType('snapshot', job.id))
    const notice = await client.next(isType('token_expiring'))
    await append(server, job.id, [{ type: 'chunk', text: 'a' }])
    client.send({ type: 'refresh_token', token: token(600), ref: 'r' })
    expect(await client.next(isType('token_refreshed'))).toMatchObject({ ref: 'r' })
    await new Promise((resolve) => setTimeout(resolve, Date.parse((notice as { expiresAt: string }).expiresAt) - Date.now() + 500))
    await append(server, job.id, [{ type: 'chunk', text: 'b' }])
    await client.next((m) => m.type === 'event' && m.event.type === 'chunk' && m.event.data.text === 'b')
    expect(seqsOf(client.received, job.id)).toEqual([2, 3, 4])

    const expiring = await connect(server, { token: token(1) })
    await expiring.next(isType('token_expiring'))
    expect(await expiring.next(isType('error'))).toMatchObject({ error: { code: 'token_expired' } })
    expect(await expiring.closed).toEqual({ code: 4401, reason: 'token_expired' })
  })

  it('ends a refreshed socket\'s streams that the new token may not read', async () => {
    const server = await start()
    const [a, b] = [await createJob(server), await createJob(server)] as [JobState, JobState]
    const client = await connect(server, { token: mintSubscriptionToken({ secret, jobIds: [a.id, b.id] }).token })
    client.send({ type: 'subscribe', jobId: a.id })
    client.send({ type: 'subscribe', jobId: b.id })
    await client.next(isType('snapshot', b.id))
    client.send({ type: 'refresh_token', token: mintSubscriptionToken({ secret, jobIds: [a.id] }).token })
    expect(await client.next(isType('error', b.id))).toMatchObject({ error: { code: 'job_not_found' } })
    await append(server, a.id, [{ type: 'chunk', text: 'still here' }])
    await append(server, b.id, [{ type: 'chunk', text: 'gone' }])
    await client.next((m) => m.type === 'event' && m.event.jobId === a.id && m.event.type === 'chunk')
    expect(seqsOf(client.received, b.id)).toEqual([])
  })

  it('closes the sockets of a revoked API key at once', async () => {
    const server = await start()
    const created = await server.api.call<{ id: string; key: string }>('POST', '/v1/keys', { name: 'b', role: 'backend' })
    const client = await connect(server, { token: created.body.key })
    await client.next(isType('welcome'))
    await server.api.call('DELETE', `/v1/keys/${created.body.id}`)
    expect(await client.closed).toEqual({ code: 4401, reason: 'unauthorized' })
  })

  it('closes every socket with 1001 when the server shuts down', async () => {
    const server = await start()
    const client = await connect(server)
    await client.next(isType('welcome'))
    await server.close()
    expect((await client.closed).code).toBe(1001)
  })
})

describe('the user feed', () => {
  it('streams unfinished jobs, then new ones as they are created; finished ones end; a reconnect resumes by positions and since', async () => {
    const server = await start()
    const owner = { tenant: 'acme', user: 'ann' }
    const running = await createJob(server, { owner })
    const done = await createJob(server, { owner })
    await append(server, done.id, [{ type: 'completed' }])
    const bobs = await createJob(server, { owner: { tenant: 'acme', user: 'bob' } })
    const token = mintSubscriptionToken({ secret, tenant: 'acme', user: 'ann' }).token
    const client = await connect(server, { token })
    client.send({ type: 'subscribe_user' })
    const synced = await client.next<Extract<WsServerMessage, { type: 'user_synced' }>>(isType('user_synced'))
    expect(synced.owner).toEqual(owner)
    expect(client.received.filter((m) => m.type === 'subscribed').map((m) => (m.type === 'subscribed' ? [m.jobId, m.via] : null))).toEqual([[running.id, 'user']])
    const later = await createJob(server, { owner })
    await client.next(isType('snapshot', later.id))
    await append(server, later.id, [{ type: 'chunk', text: 'x' }, { type: 'completed' }])
    await client.next((m) => m.type === 'event' && m.event.jobId === later.id && m.event.type === 'completed')
    await append(server, running.id, [{ type: 'chunk', text: 'y' }])
    await client.next((m) => m.type === 'event' && m.event.jobId === running.id && m.event.type === 'chunk')
    expect(client.received.some((m) => 'jobId' in m && (m.jobId === bobs.id || m.jobId === done.id))).toBe(false)

    // Away: one job moves on, one is created and finished meanwhile.
    client.close()
    const position = fold(client.received, running.id)?.seq as number
    await append(server, running.id, [{ type: 'chunk', text: 'z' }])
    const whileAway = await createJob(server, { owner })
    await append(server, whileAway.id, [{ type: 'completed' }])
    const again = await connect(server, { token })
    again.send({ type: 'subscribe_user', positions: { [running.id]: position }, since: synced.at })
    await again.next(isType('user_synced'))
    expect(again.received.find(isType('subscribed', running.id))).toMatchObject({ recovered: true, after: position })
    expect(seqsOf(again.received, running.id)).toEqual([position + 1])
    expect(again.received.find(isType('snapshot', whileAway.id))).toMatchObject({ job: { status: 'completed' } })
  })

  it('needs an owner with an API key and keeps a bound key to its tenant', async () => {
    const server = await start()
    const client = await connect(server)
    client.send({ type: 'subscribe_user' })
    expect(await client.next((m) => m.type === 'error' && m.feed === 'user')).toMatchObject({ error: { code: 'invalid_request' } })
    const bound = await server.api.call<{ key: string }>('POST', '/v1/keys', { name: 'acme', role: 'backend', tenant: 'acme' })
    const backend = await connect(server, { token: bound.body.key })
    backend.send({ type: 'subscribe_user', owner: { tenant: 'other', user: 'x' } })
    expect(await backend.next((m) => m.type === 'error' && m.feed === 'user')).toMatchObject({ error: { code: 'forbidden' } })
    backend.send({ type: 'subscribe_user', owner: { tenant: 'acme', user: 'x' } })
    await backend.next(isType('user_synced'))
  })
})

/** A new job and a socket subscribed to it that has its snapshot and then stops reading. */
async function stalledReader(server: TestServer) {
  const job = await createJob(server)
  const client = await connect(server)
  client.send({ type: 'subscribe', jobId: job.id })
  await client.next(isType('snapshot', job.id))
  client.pause()
  return { job, client }
}

describe('backpressure', () => {
  it('coalesces latest-wins events for a stalled reader, keeping its buffer bounded, with a state equal to the server\'s', async () => {
    const server = await start({ wsCoalesceAfter: 16 * 1024, wsMaxBuffer: 256 * 1024, maxBodyBytes: 8 * 1024 * 1024, maxEventsPerJob: 100 })
    const { job, client } = await stalledReader(server)
    // ~20 MB of progress and item updates, far more than the 256 KiB the reader may lag.
    for (let batch = 0; batch < 10; batch++) {
      const events = Array.from({ length: 1000 }, (_, i) =>
        i % 3 === 0 ? { type: 'item', id: 'file-1', percent: i % 100, message: 'i'.repeat(1900) } : { type: 'progress', percent: i % 100, message: 'm'.repeat(1900) },
      )
      if (batch === 5) events[500] = { type: 'progress', stage: 'second half', message: 's' } as never
      await append(server, job.id, events)
    }
    await append(server, job.id, [{ type: 'chunk', text: 'end' }, { type: 'completed', result: 'ok' }])
    client.resume()
    await client.next((m) => m.type === 'event' && m.event.type === 'completed', 0, 30_000)
    const coalesced = client.received.filter((m) => m.type === 'coalesced')
    expect(coalesced.length).toBeGreaterThan(0)
    expect(client.bytes).toBeLessThan(10 * 1024 * 1024)
    const final = fold(client.received, job.id)
    expect(withoutQueue(final)).toEqual(withoutQueue((await server.api.call<JobState>('GET', `/v1/jobs/${job.id}`)).body))
    expect(final?.stages.map((s) => s.stage)).toEqual(['second half'])
  })

  it('cuts off a stalled reader of lossless events past wsMaxBuffer with slow_consumer (4503), which it resumes from', async () => {
    const server = await start({ wsCoalesceAfter: 16 * 1024, wsMaxBuffer: 256 * 1024, maxBodyBytes: 8 * 1024 * 1024, maxEventsPerJob: 100_000, maxTextLength: 64 * 1024 * 1024 })
    const { job, client } = await stalledReader(server)
    for (let batch = 0; batch < 10; batch++) {
      await append(server, job.id, Array.from({ length: 1000 }, () => ({ type: 'chunk', text: 'c'.repeat(1900) })))
    }
    client.resume()
    expect(await client.closed).toEqual({ code: 4503, reason: 'slow_consumer' })
    const seqs = seqsOf(client.received, job.id)
    expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => i + 2))
    const resumed = await connect(server)
    resumed.send({ type: 'subscribe', jobId: job.id, after: seqs.at(-1) ?? 1 })
    expect(await resumed.next(isType('subscribed', job.id))).toMatchObject({ recovered: true })
  })
})
