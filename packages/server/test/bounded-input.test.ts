/**
 * Nothing a client sends breaks a stream or gets a 500: JSON depth and width are bounded before
 * anything is stored, repeated query parameters and requests Fastify or Node refuse answer in
 * Jobwire's error body, a transport that cannot encode an event ends its stream with an error the
 * watcher resumes from, and a client aborting mid-body is logged at debug.
 */
import { connect } from 'node:net'
import { Writable } from 'node:stream'
import { SignJWT } from 'jose'
import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mintSubscriptionToken } from '@jobwire/backend'
import { errorRegistry, type ErrorBody, type JobState, type StreamMessage, type WsServerMessage } from '@jobwire/protocol'
import { checkJsonShape } from '../src/core/json-shape.js'
import { startServer } from '../src/server.js'
import { collect, createJsonClient, openSse, startTestServer, testApiKey, type TestServer } from './fixtures.js'
import { adminClient, deleteKeys, redisReachable, redisUrl, testPrefix } from './redis-fixtures/redis.js'
import { openWs, wsUrl } from './ws-client.js'
import { bodyBytesInFlight, holdRequest, untilBodyBytesInFlight } from './held-body.js'

const nested = (depth: number, leaf = '0'): string => '['.repeat(depth) + leaf + ']'.repeat(depth)

/** Sends raw bytes on a fresh socket and returns everything the server answered before closing. */
function rawExchange(url: string, text: string): Promise<string> {
  const { port } = new URL(url)
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), '127.0.0.1', () => socket.write(text))
    let answer = ''
    socket.setEncoding('utf8')
    socket.on('data', (chunk: string) => (answer += chunk))
    socket.on('close', () => resolve(answer))
    socket.on('error', reject)
  })
}

function bodyOf(answer: string): { status: number; error: ErrorBody | undefined } {
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1] ?? 0)
  const body = answer.slice(answer.indexOf('\r\n\r\n') + 4)
  return { status, error: (JSON.parse(body) as { error?: ErrorBody }).error }
}

interface LogLine {
  level: number
  msg: string
  [field: string]: unknown
}

/** A real pino logger whose lines land in `lines`. */
function capturingLogger(lines: LogLine[], level: 'debug' | 'info'): pino.Logger {
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n')) if (line !== '') lines.push(JSON.parse(line) as LogLine)
      done()
    },
  })
  return pino({ level }, sink)
}

describe('checkJsonShape', () => {
  it('accepts JSON up to the limits, strings full of brackets and escaped quotes included', () => {
    expect(() => checkJsonShape(nested(64), { maxDepth: 64, maxWidth: 10 })).not.toThrow()
    expect(() => checkJsonShape(JSON.stringify({ a: '[[[[{{{{"\\"]]]', b: [1, 2, 3] }), { maxDepth: 2, maxWidth: 3 })).not.toThrow()
    expect(() => checkJsonShape(JSON.stringify(Array.from({ length: 10 }, (_, i) => i)), { maxDepth: 2, maxWidth: 10 })).not.toThrow()
  })

  it('names the path of the container that goes too deep or too wide, and the limit', () => {
    const deep = `{"type":"checkpoint","data":{"a":[1,{"b":${nested(10)}}]}}`
    try {
      checkJsonShape(deep, { maxDepth: 8, maxWidth: 100 })
      expect.unreachable()
    } catch (error) {
      expect((error as { details: unknown }).details).toMatchObject({ field: 'data.a.1.b.0.0.0.0', limit: 8 })
    }
    try {
      checkJsonShape(JSON.stringify({ input: { list: Array.from({ length: 11 }, () => 'x') } }), { maxDepth: 8, maxWidth: 10 })
      expect.unreachable()
    } catch (error) {
      expect((error as { details: unknown }).details).toMatchObject({ field: 'input.list', limit: 10 })
    }
  })
})

const redisUp = redisReachable('bounded JSON on Redis')
const redisPrefix = testPrefix('bounded-input')
const stores: [string, () => Promise<TestServer>][] = [
  ['memory', () => startTestServer({ storage: 'memory' })],
  ['sqlite', () => startTestServer({ storage: 'sqlite' })],
  ...(redisUp ? [['redis', () => startTestServer({ redis: redisUrl, redisPrefix })] as [string, () => Promise<TestServer>]] : []),
]
afterAll(async () => {
  if (!redisUp) return
  const admin = adminClient()
  await deleteKeys(admin, redisPrefix)
  await admin.quit()
})

describe.each(stores)('bounded JSON on %s', (_store, start) => {
  let t: TestServer
  beforeAll(async () => {
    t = await start()
  })
  afterAll(() => t.close())

  const raw = (method: string, path: string, body: string) =>
    rawExchange(
      t.url,
      `${method} ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${t.key}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    )

  it('a job whose input nests 6,000 deep answers 400 naming the path and the limit, and nothing is stored (no poison job)', async () => {
    const before = await t.api.call<{ jobs: unknown[] }>('GET', '/v1/jobs?limit=200')
    const answer = bodyOf(await raw('POST', '/v1/jobs', `{"type":"deep","input":{"tree":${nested(6000)}}}`))
    expect(answer.status).toBe(400)
    expect(answer.error?.code).toBe('invalid_request')
    expect(answer.error?.details).toMatchObject({ limit: 64 })
    expect(String(answer.error?.details?.field)).toMatch(/^input\.tree\.0\.0/)
    expect(answer.error?.message).toContain('64 levels')
    const after = await t.api.call<{ jobs: unknown[] }>('GET', '/v1/jobs?limit=200')
    expect(after.body.jobs.length).toBe(before.body.jobs.length)
  })

  it('events nested past the limit answer 400 on both write routes, append nothing, and the job streams on', async () => {
    const created = await t.api.call<JobState>('POST', '/v1/jobs', { type: 'shape', dispatch: false })
    const id = created.body.id
    await t.api.call('POST', `/v1/jobs/${id}/events`, { type: 'started' })
    const one = bodyOf(await raw('POST', `/v1/jobs/${id}/events`, `{"type":"checkpoint","data":${nested(4100)}}`))
    expect(one.status).toBe(400)
    expect(one.error?.code).toBe('invalid_request')
    expect(one.error?.details?.field).toMatch(/^data\.0\.0/)
    const bulk = bodyOf(await raw('POST', '/v1/events', `{"writes":[{"jobId":"${id}","events":[{"type":"completed","result":${nested(5000)}}]}]}`))
    expect(bulk.status).toBe(400)
    expect(bulk.error?.details?.field).toMatch(/^writes\.0\.events\.0\.result\.0/)
    const wide = bodyOf(await raw('POST', `/v1/jobs/${id}/events`, JSON.stringify({ type: 'checkpoint', data: { rows: Array.from({ length: 10_001 }, (_, i) => i) } })))
    expect(wide.status).toBe(400)
    expect(wide.error?.details).toMatchObject({ field: 'data.rows', limit: 10_000 })
    const job = await t.api.call<JobState>('GET', `/v1/jobs/${id}`)
    expect(job.status).toBe(200)
    expect(job.body.seq).toBe(2)
    // Within the limits everything still goes through.
    const fine = await t.api.call('POST', `/v1/jobs/${id}/events`, { type: 'checkpoint', data: JSON.parse(nested(60)) })
    expect(fine.status).toBe(200)
    const events = await t.api.call<{ events: unknown[] }>('GET', `/v1/jobs/${id}/events?after=0`)
    expect(events.body.events.length).toBe(3)
  })

  it('a lone surrogate in a name answers 400 naming the field and stores nothing; in free text it becomes U+FFFD, stored as sent to watchers (500, or text and names changed by the store, before)', async () => {
    // JSON carries "\ud800" (half of a UTF-16 pair, alone); SQLite and Redis keep text as UTF-8, which cannot hold it.
    const refused = async (method: string, path: string, body: unknown, field: string) => {
      const answer = await t.api.call<{ error: ErrorBody }>(method, path, body)
      expect(answer.status, `${path} ${field}`).toBe(400)
      expect(answer.body.error).toMatchObject({ code: 'invalid_request', details: { field } })
      expect(answer.body.error.message).toContain('lone surrogate')
    }
    const before = await t.api.call<{ jobs: unknown[] }>('GET', '/v1/jobs?limit=200')
    await refused('POST', '/v1/jobs', { type: 'lone', owner: { tenant: 'acme', user: 'ann\ud800' } }, 'owner.user')
    await refused('POST', '/v1/jobs', { type: 'lone', owner: { tenant: '\udc00acme', user: 'ann' } }, 'owner.tenant')
    await refused('POST', '/v1/jobs', { type: 'lone', idempotencyKey: 'key\ud800' }, 'idempotencyKey')
    expect((await t.api.call<{ jobs: unknown[] }>('GET', '/v1/jobs?limit=200')).body.jobs.length).toBe(before.body.jobs.length)
    await refused('POST', '/v1/tokens', { tenant: 'acme', user: 'ann\ud800' }, 'user')
    await refused('POST', '/v1/keys', { name: 'key\ud800', role: 'worker' }, 'name')

    const id = (await t.api.call<JobState>('POST', '/v1/jobs', { type: 'lone', dispatch: false })).body.id
    // Names: refused, on both write routes.
    await refused('POST', '/v1/events', { writes: [{ jobId: id, events: [{ type: 'progress', stage: 's\ud800' }] }] }, 'writes.0.events.0.stage')
    await refused('POST', `/v1/jobs/${id}/events`, { type: 'item', id: 'i\udfff' }, 'id')
    await t.api.call('POST', `/v1/jobs/${id}/events`, { type: 'chunk', text: 'A😀' })
    // Free text: a pair split over two chunks (a producer slicing a string mid-pair) is two lone
    // halves, each U+FFFD, as a browser or TextEncoder makes them; the job goes on.
    expect((await t.api.call('POST', `/v1/jobs/${id}/events`, { type: 'chunk', text: 'B\ud83d' })).status).toBe(200)
    expect((await t.api.call('POST', '/v1/events', { writes: [{ jobId: id, events: [{ type: 'progress', percent: 1, message: 'm\udc00' }, { type: 'chunk', text: '\ude00C' }] }] })).status).toBe(200)
    // JSON values are stored as JSON and kept as sent, lone surrogates and all.
    expect((await t.api.call('POST', `/v1/jobs/${id}/events`, { type: 'checkpoint', data: { path: 'x\udc80' } })).status).toBe(200)
    const job = (await t.api.call<JobState>('GET', `/v1/jobs/${id}`)).body
    expect(job.text).toBe('A😀B\ufffd\ufffdC')
    expect(job.progress.message).toBe('m\ufffd')
    expect(job.checkpoint).toEqual({ path: 'x\udc80' })
    expect(job.seq).toBe(7)
    // What watchers replay is what was stored.
    const log = await t.api.call<{ events: { type: string; data: { text?: string } }[] }>('GET', `/v1/jobs/${id}/events?after=0`)
    expect(log.body.events.filter((e) => e.type === 'chunk').map((e) => e.data.text).join('')).toBe(job.text)
  })

  it('repeated query parameters answer 400 invalid_request naming the parameter, credentials included', async () => {
    const created = await t.api.call<JobState>('POST', '/v1/jobs', { type: 'query', dispatch: false })
    for (const path of [`/v1/jobs/${created.body.id}/events?after=1&after=2`, `/v1/jobs/${created.body.id}/stream?after=0&after=0`, '/v1/jobs?status=queued&status=running']) {
      const answer = await t.api.call<{ error: ErrorBody }>('GET', path)
      expect(answer.status, path).toBe(400)
      expect(answer.body.error.code).toBe('invalid_request')
    }
    const tokens = await t.api.call<{ error: ErrorBody }>('GET', `/v1/jobs?access_token=a&access_token=b`, undefined, { authorization: '' })
    expect(tokens.status).toBe(400)
    expect(tokens.body.error.details).toMatchObject({ field: 'access_token' })
  })
})

describe('request timeout', () => {
  it('a request whose body stops coming is answered 400 at --request-timeout, not up to 30 s later (Node checks every second)', async () => {
    const t = await startTestServer({ requestTimeout: 1_000 })
    try {
      const started = performance.now()
      // The body announced is 100 bytes; 7 come. Before, Node looked for late requests every 30 s.
      const answer = rawExchange(t.url, `POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nauthorization: Bearer ${t.key}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"type"`)
      const bound = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no answer within 10 s of a 1 s request timeout')), 10_000))
      const { status, error } = bodyOf(await Promise.race([answer, bound]))
      expect(status).toBe(400)
      expect(error).toMatchObject({ code: 'invalid_request' })
      expect(performance.now() - started).toBeGreaterThanOrEqual(900)
    } finally {
      await t.close()
    }
  })
})

describe('request bodies in flight (--max-body-bytes-in-flight)', () => {
  const budget = 256 * 1024
  const body = (type: string): string => JSON.stringify({ type, input: { blob: 'x'.repeat(100_000) } })
  const size = Buffer.byteLength(body('held'))

  it('past the budget a request is refused 503 overloaded before its body is read, nothing is created, and the same request passes once the bodies in flight are answered', async () => {
    const t = await startTestServer({ maxBodyBytesInFlight: budget })
    const held = [holdRequest(t.url, t.key, '/v1/jobs', body('held')), holdRequest(t.url, t.key, '/v1/jobs', body('held'))]
    try {
      await untilBodyBytesInFlight(t.url, t.key, 2 * size)
      const refused = await t.api.call<{ error: ErrorBody }>('POST', '/v1/jobs', JSON.parse(body('third')))
      expect(refused.status).toBe(503)
      expect(refused.headers['retry-after']).toBe('1')
      expect(refused.body.error).toMatchObject({ code: 'overloaded', details: { bytes: 2 * size, size: Buffer.byteLength(body('third')), limit: budget, retryAfter: 1 } })
      expect((await t.api.call<{ jobs: unknown[] }>('GET', '/v1/jobs?type=third')).body.jobs).toEqual([])
      for (const request of held) request.finish()
      for (const answer of await Promise.all(held.map((request) => request.answer))) expect(answer).toMatch(/^HTTP\/1\.1 201 /)
      await untilBodyBytesInFlight(t.url, t.key, 0)
      expect((await t.api.call('POST', '/v1/jobs', JSON.parse(body('third')))).status).toBe(201)
      expect((await t.api.call<{ jobs: unknown[] }>('GET', '/v1/jobs?type=held')).body.jobs).toHaveLength(2)
      expect(await bodyBytesInFlight(t.url, t.key)).toBe(0)
    } finally {
      for (const request of held) request.abort()
      await t.close()
    }
  })

  it('a body is admitted whatever its size when none is in flight; a chunked one counts its route\'s limit; bodies under 64 KiB are never refused', async () => {
    // 1 MiB bodies (the default --max-body-bytes) on a node whose budget is a quarter of that.
    const t = await startTestServer({ maxBodyBytesInFlight: budget })
    const chunked = holdRequest(t.url, t.key, '/v1/jobs', body('chunked'), { chunked: true })
    try {
      await untilBodyBytesInFlight(t.url, t.key, 1024 * 1024)
      const large = await t.api.call<{ error: ErrorBody }>('POST', '/v1/jobs', JSON.parse(body('large')))
      expect(large.body.error).toMatchObject({ code: 'overloaded', details: { bytes: 1024 * 1024, size: Buffer.byteLength(body('large')) } })
      // A progress tick, a claim, a small job: the budget is spent, and they pass.
      expect((await t.api.call('POST', '/v1/jobs', { type: 'small', input: { note: 'x'.repeat(60_000) } })).status).toBe(201)
      chunked.finish()
      expect(await chunked.answer).toMatch(/^HTTP\/1\.1 201 /)
      await untilBodyBytesInFlight(t.url, t.key, 0)
      expect((await t.api.call('POST', '/v1/jobs', JSON.parse(body('large')))).status).toBe(201)
    } finally {
      chunked.abort()
      await t.close()
    }
  })

  it('a body counts until it is parsed, not while its request waits: a long-poll does not hold the budget', async () => {
    const t = await startTestServer({ maxBodyBytesInFlight: budget })
    // A claim that will long-poll an empty queue for 10 s, its last byte held back: counted while it comes.
    const claimBody = JSON.stringify({ types: ['nothing-queued'], wait: 10 })
    const claim = holdRequest(t.url, t.key, '/v1/workers/claim', claimBody)
    try {
      await untilBodyBytesInFlight(t.url, t.key, Buffer.byteLength(claimBody))
      // Parsed, and waiting for a job: given back.
      claim.finish()
      await untilBodyBytesInFlight(t.url, t.key, 0)
      // So a body larger than the whole budget is admitted alone while the claim waits.
      const large = holdRequest(t.url, t.key, '/v1/jobs', body('large'), { chunked: true })
      await untilBodyBytesInFlight(t.url, t.key, 1024 * 1024)
      large.finish()
      expect(await large.answer).toMatch(/^HTTP\/1\.1 201 /)
      expect((await t.api.call('POST', '/v1/jobs', { type: 'nothing-queued' })).status).toBe(201)
      expect(await claim.answer).toMatch(/^HTTP\/1\.1 200 /)
    } finally {
      claim.abort()
      await t.close()
    }
  })

  it('a client that goes away mid-body gives its bytes back; a request refused 401 never counted', async () => {
    const t = await startTestServer({ maxBodyBytesInFlight: budget })
    try {
      const gone = holdRequest(t.url, t.key, '/v1/jobs', body('gone'))
      await untilBodyBytesInFlight(t.url, t.key, size)
      gone.abort()
      await untilBodyBytesInFlight(t.url, t.key, 0)
      const stranger = holdRequest(t.url, 'not-a-key-of-this-node', '/v1/jobs', body('stranger'))
      expect(bodyOf(await stranger.answer)).toMatchObject({ status: 401, error: { code: 'unauthorized' } })
      expect(await bodyBytesInFlight(t.url, t.key)).toBe(0)
      expect((await t.api.call<{ jobs: unknown[] }>('GET', '/v1/jobs?type=gone')).body.jobs).toEqual([])
    } finally {
      await t.close()
    }
  })
})

describe('owners', () => {
  it('a user with a ":" in their name is addressable by owner=tenant:user; a tenant with one is refused', async () => {
    const t = await startTestServer()
    try {
      const created = await t.api.call<JobState>('POST', '/v1/jobs', { type: 'owned', owner: { tenant: 'acme', user: 'ann:admin' } })
      expect(created.status).toBe(201)
      const listed = await t.api.call<{ jobs: { id: string }[] }>('GET', `/v1/jobs?owner=${encodeURIComponent('acme:ann:admin')}`)
      expect(listed.body.jobs.map((job) => job.id)).toEqual([created.body.id])
      const refused = await t.api.call<{ error: ErrorBody }>('POST', '/v1/jobs', { type: 'owned', owner: { tenant: 'acme:ann', user: 'admin' } })
      expect(refused.status).toBe(400)
      expect(refused.body.error.details).toMatchObject({ field: 'owner.tenant' })
      for (const user of ['ann\u0000', 'ann\nbob', 'ann\u007f']) {
        const control = await t.api.call<{ error: ErrorBody }>('POST', '/v1/jobs', { type: 'owned', owner: { tenant: 'acme', user } })
        expect(control.status, JSON.stringify(user)).toBe(400)
      }
    } finally {
      await t.close()
    }
  })
})

describe('WebSocket messages', () => {
  it('one nested past the depth limit is refused with invalid_request naming the limit, and the socket carries on', async () => {
    const t = await startTestServer({ maxJsonDepth: 16 })
    try {
      const client = await openWs(wsUrl(t.url), { token: t.key })
      client.send(`{"type":"ping","ref":${nested(5000)}}`)
      const refusal = await client.next((m) => m.type === 'error')
      expect(refusal).toMatchObject({ type: 'error', error: { code: 'invalid_request', details: { field: 'ref.0.0.0.0.0.….0.0.0.0', limit: 16 } } })
      client.send({ type: 'ping', ref: 'still here' })
      expect(await client.next((m) => m.type === 'pong')).toMatchObject({ ref: 'still here' })
      client.close()
    } finally {
      await t.close()
    }
  })
})

describe('WebSocket handshakes ws refuses', () => {
  it("answer in Jobwire's error body with a registry code and status (text/html, and 405 for a method, before), and give their stream slot back", async () => {
    const t = await startTestServer({ maxConnections: 1 })
    try {
      const upgrade = (method: string, headers: string) =>
        rawExchange(t.url, `${method} /v1/ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${t.key}\r\nConnection: Upgrade\r\n${headers}\r\n`)
      const key = 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n'
      const cases: [method: string, headers: string, status: number, code: string][] = [
        ['POST', `Upgrade: websocket\r\n${key}Sec-WebSocket-Version: 13\r\nContent-Length: 0\r\n`, 404, 'route_not_found'],
        ['GET', 'Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n', 400, 'invalid_request'],
        ['GET', `Upgrade: websocket\r\nSec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n`, 400, 'invalid_request'],
        ['GET', `Upgrade: websocket\r\n${key}Sec-WebSocket-Version: 99\r\n`, 400, 'invalid_request'],
        ['GET', `Upgrade: h2c\r\n${key}Sec-WebSocket-Version: 13\r\n`, 400, 'invalid_request'],
        ['GET', `Upgrade: websocket\r\n${key}Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: a,,b\r\n`, 400, 'invalid_request'],
      ]
      for (const [method, headers, status, code] of cases) {
        const answer = await upgrade(method, headers)
        expect(answer, headers).toMatch(/content-type: application\/json/i)
        const { status: got, error } = bodyOf(answer)
        expect([got, error?.code], headers).toEqual([status, code])
        expect(errorRegistry[code as keyof typeof errorRegistry].status).toBe(status)
        if (headers.includes('Version: 99')) expect(answer).toMatch(/sec-websocket-version: 13, 8/i)
      }
      // The node holds one stream at most: the refused handshakes gave theirs back.
      const client = await openWs(wsUrl(t.url), { token: t.key })
      expect(await client.next((m) => m.type === 'welcome')).toMatchObject({ protocol: 1 })
      client.close()
    } finally {
      await t.close()
    }
  })
})

describe('credentials and feeds naming a person with a lone surrogate', () => {
  const tokenSecret = 'bounded-input-token-secret-0123456789abcdef'
  const jwtSecret = 'bounded-input-jwt-secret-0123456789'

  it('are refused 401 invalid_token, on HTTP streams and WebSockets (500 internal before), and a feed for one is invalid_request', async () => {
    const t = await startTestServer({ tokenSecret, jwtSecret })
    try {
      const job = (await t.api.call<JobState>('POST', '/v1/jobs', { type: 'lone', owner: { tenant: 'acme', user: 'ann' } })).body
      const token = mintSubscriptionToken({ secret: tokenSecret, jobIds: [job.id], tenant: 'acme', user: 'ann\ud800', ttlSeconds: 600 }).token
      const appJwt = await new SignJWT({ tenant: 'acme' }).setProtectedHeader({ alg: 'HS256' }).setSubject('\udc00ann').setExpirationTime('10m').sign(new TextEncoder().encode(jwtSecret))
      for (const credential of [token, appJwt]) {
        const client = createJsonClient(t.url, credential)
        try {
          for (const path of [`/v1/jobs/${job.id}/stream`, `/v1/jobs/${job.id}/events?after=1&wait=1`, `/v1/jobs/${job.id}`]) {
            const answer = await client.call<{ error: ErrorBody }>('GET', path)
            expect(answer.status, path).toBe(401)
            expect(answer.body.error.code).toBe('invalid_token')
            expect(answer.body.error.message).toContain('lone surrogate')
          }
        } finally {
          await client.close()
        }
        const socket = await openWs(wsUrl(t.url), { token: credential })
        expect(await socket.closed).toMatchObject({ code: 4401 })
        expect(socket.received.find((m) => m.type === 'error')).toMatchObject({ error: { code: 'invalid_token' } })
      }
      // A per-job token on a socket opened without a credential: that subscription alone is refused.
      const open = await openWs(wsUrl(t.url))
      open.send({ type: 'subscribe', jobId: job.id, token })
      expect(await open.next((m) => m.type === 'error')).toMatchObject({ jobId: job.id, error: { code: 'invalid_token' } })
      open.close()
      const admin = await openWs(wsUrl(t.url), { token: t.key })
      admin.send({ type: 'subscribe_user', owner: { tenant: 'acme', user: 'ann\ud800' } })
      expect(await admin.next((m) => m.type === 'error')).toMatchObject({ error: { code: 'invalid_request', details: { field: 'owner' } } })
      admin.send({ type: 'ping', ref: 'still here' })
      expect(await admin.next((m) => m.type === 'pong')).toMatchObject({ ref: 'still here' })
      admin.close()
    } finally {
      await t.close()
    }
  })
})

describe('requests Fastify or Node refuse', () => {
  let t: TestServer
  beforeAll(async () => {
    t = await startTestServer()
  })
  afterAll(() => t.close())

  const get = (path: string, extra = '') => `GET ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${t.key}\r\n${extra}Connection: close\r\n\r\n`

  it.each([
    ['a malformed percent-escape', () => get('/v1/jobs/%zz')],
    ['an over-long path parameter', () => get(`/v1/jobs/${'a'.repeat(300)}`)],
    ['a header line without a colon', () => get('/v1/jobs', 'Bad Header\r\n')],
    ['an unknown method token', () => `FOO\x01 /v1/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`],
    ['a body shorter than its Content-Length', () => `POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${t.key}\r\nContent-Type: application/json\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n`],
  ])('%s answers 400 in Jobwire error body', async (_name, request) => {
    const answer = bodyOf(await rawExchange(t.url, request()))
    expect(answer.status).toBe(400)
    expect(answer.error?.code).toBe('invalid_request')
    expect(answer.error?.message).toMatch(/^The request is invalid: /)
    expect(errorRegistry[answer.error?.code ?? 'internal'].status).toBe(400)
  })

  it('TRACE and DELETE with a JSON body answer in Jobwire error body', async () => {
    const trace = bodyOf(await rawExchange(t.url, `TRACE /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${t.key}\r\nConnection: close\r\n\r\n`))
    expect(trace).toMatchObject({ status: 404, error: { code: 'route_not_found' } })
    const body = '{"why":"no"}'
    const del = bodyOf(
      await rawExchange(
        t.url,
        `DELETE /v1/keys/nope HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${t.key}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
      ),
    )
    expect(del).toMatchObject({ status: 404, error: { code: 'key_not_found' } })
  })
})

describe('a client aborting mid-body', () => {
  it('is logged at debug, never at error', async () => {
    const lines: LogLine[] = []
    const server = await startServer({ logger: capturingLogger(lines, 'debug'), config: { apiKey: 'test-admin-key-123456', port: 0, host: '127.0.0.1', memory: true } })
    try {
      const socket = connect(server.port, '127.0.0.1')
      await new Promise<void>((resolve) => socket.once('connect', () => resolve()))
      socket.write(`POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${server.adminKey.key}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"type":"half`)
      // The server has read the head once it answers nothing yet but holds the socket; then the client goes away.
      await new Promise((resolve) => setTimeout(resolve, 100))
      socket.destroy()
      await expect.poll(() => lines.some((line) => line.msg === 'request aborted by the client')).toBe(true)
      expect(lines.filter((line) => line.level >= 50)).toEqual([])
      expect(lines.find((line) => line.msg === 'request aborted by the client')?.level).toBe(20)
    } finally {
      await server.close()
    }
  })
})

describe('a transport that cannot encode an event', () => {
  it('ends the SSE stream with a retryable error naming the last seq sent, logged with the job id, and the watcher resumes with no gap', async () => {
    const lines: LogLine[] = []
    const server = await startServer({ logger: capturingLogger(lines, 'info'), config: { apiKey: testApiKey, port: 0, host: '127.0.0.1', memory: true } })
    const t = { url: server.url, key: server.adminKey.key, server, api: createJsonClient(server.url, server.adminKey.key) }
    try {
      const created = await t.api.call<JobState>('POST', '/v1/jobs', { type: 'encode', dispatch: false })
      const id = created.body.id
      await t.api.call('POST', `/v1/jobs/${id}/events`, { type: 'started' })
      const first = await openSse(`${t.url}/v1/jobs/${id}/stream?after=0`, { headers: { authorization: `Bearer ${t.key}` } })
      const messages = first.messages()
      await collect(messages, (m) => m.type === 'event' && m.event.seq === 2)
      // An event value that fails to encode once (as a value nested past the stack would, before inputs were bounded).
      let failures = 1
      const poisoned = {
        toJSON() {
          if (failures-- > 0) throw new RangeError('Maximum call stack size exceeded')
          return { step: 3 }
        },
      }
      await t.server.service.appendEvents(id, [
        { type: 'progress', data: { percent: 50 } },
        { type: 'checkpoint', data: { data: poisoned } },
      ])
      await t.api.call('POST', `/v1/jobs/${id}/events`, { type: 'completed', result: { ok: true } })
      const tail = await collect(messages)
      const error = tail.find((m): m is Extract<StreamMessage, { type: 'error' }> => m.type === 'error')
      expect(error?.error.code).toBe('internal')
      expect(errorRegistry.internal.retryable).toBe(true)
      const after = Number(error?.error.details?.after)
      expect(after).toBe(2)
      // Nothing after the failure went out on the broken stream.
      expect(tail.filter((m) => m.type === 'event')).toEqual([])
      const resumed = await openSse(`${t.url}/v1/jobs/${id}/stream`, { headers: { authorization: `Bearer ${t.key}`, 'last-event-id': String(after) } })
      const rest = await collect(resumed.messages())
      const seqs = rest.flatMap((m) => (m.type === 'event' ? [m.event.seq] : []))
      expect(seqs).toEqual([3, 4, 5])
      expect(rest.at(-1)).toMatchObject({ type: 'event', event: { type: 'completed' } })
      const logged = lines.find((line) => line.level === 50 && line.jobId === id)
      expect(logged).toMatchObject({ after: 2, seq: 3, reqId: error?.error.details?.requestId })
    } finally {
      await t.api.close()
      await server.close()
    }
  })

  it('ends the WebSocket subscription with an error naming the last seq sent, and a resubscribe from there misses nothing', async () => {
    const t = await startTestServer()
    try {
      const created = await t.api.call<JobState>('POST', '/v1/jobs', { type: 'encode', dispatch: false })
      const id = created.body.id
      await t.api.call('POST', `/v1/jobs/${id}/events`, { type: 'started' })
      const client = await openWs(wsUrl(t.url), { token: t.key })
      client.send({ type: 'subscribe', jobId: id, after: 0 })
      await client.next((m) => m.type === 'event' && m.event.seq === 2)
      let failures = 1
      const poisoned = {
        toJSON() {
          if (failures-- > 0) throw new RangeError('Maximum call stack size exceeded')
          return { step: 3 }
        },
      }
      await t.server.service.appendEvents(id, [{ type: 'checkpoint', data: { data: poisoned } }])
      const error = await client.next<Extract<WsServerMessage, { type: 'error' }>>((m) => m.type === 'error')
      expect(error).toMatchObject({ jobId: id, error: { code: 'internal', details: { after: 2 } } })
      await t.api.call('POST', `/v1/jobs/${id}/events`, { type: 'completed' })
      const from = client.received.length
      client.send({ type: 'subscribe', jobId: id, after: 2 })
      await client.next((m) => m.type === 'event' && m.event.type === 'completed', from)
      const seqs = client.received.flatMap((m) => (m.type === 'event' ? [m.event.seq] : []))
      expect(seqs).toEqual([1, 2, 3, 4])
      client.close()
    } finally {
      await t.close()
    }
  })
})
