/**
 * A seeded fuzz run over every route and the WebSocket: a few thousand malformed requests (bad
 * paths, percent-escapes, repeated and absurd query parameters, wrong content types, broken,
 * deep, wide and mistyped JSON, garbage credentials), raw bytes that are not HTTP, and malformed
 * WebSocket frames. Nothing may answer 5xx or an `internal` error; every refusal carries
 * Jobwire's error body with a registry code and its registered status; the server stays up,
 * serves a real stream afterwards, and its memory stays bounded. Same seed, same run.
 */
import { connect } from 'node:net'
import { Agent, request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { errorRegistry, isErrorCode, type JobState, type WsServerMessage } from '@jobwire/protocol'
import { seededRandom, startTestServer, type TestServer } from './fixtures.js'
import { expectDocumentedAnswer } from './openapi-check.js'
import { openWs, wsUrl, type WsTestClient } from './ws-client.js'

const seed = Number(process.env.JOBWIRE_FUZZ_SEED ?? 1504)
const httpRequests = 2500
const rawRequests = 300
const wsFrames = 1200

const random = seededRandom(seed)
const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T
const chance = (p: number): boolean => random() < p
const int = (max: number): number => Math.floor(random() * max)

let server: TestServer
let realJob: JobState
let workerKey: string
let backendKey: string
let userToken: string
let jobToken: string
const agent = new Agent({ connections: 16, keepAliveTimeout: 1_000 })

beforeAll(async () => {
  server = await startTestServer({ demo: true, pollMaxWait: 100, createLimit: 1_000_000, streamsPerUser: 10_000, streamsPerIp: 10_000, wsMaxMessageBytes: 4096 })
  realJob = (await server.api.call<JobState>('POST', '/v1/jobs', { type: 'fuzz', owner: { tenant: 'acme', user: 'ann' } })).body
  workerKey = (await server.api.call<{ key: string }>('POST', '/v1/keys', { name: 'w', role: 'worker' })).body.key
  backendKey = (await server.api.call<{ key: string }>('POST', '/v1/keys', { name: 'b', role: 'backend', tenant: 'acme' })).body.key
  userToken = (await server.api.call<{ token: string }>('POST', '/v1/tokens', { tenant: 'acme', user: 'ann' })).body.token
  jobToken = (await server.api.call<{ token: string }>('POST', '/v1/tokens', { jobIds: [realJob.id], tenant: 'acme', user: 'ann' })).body.token
})

afterAll(async () => {
  await agent.destroy()
  await server?.close()
})

// ---------------------------------------------------------------------------------------------
// What gets sent

const routes: [method: string, path: string][] = [
  ['GET', '/'],
  ['GET', '/assets/:file'],
  ['GET', '/healthz'],
  ['GET', '/metrics'],
  ['GET', '/v1/jobs'],
  ['POST', '/v1/jobs'],
  ['GET', '/v1/jobs/:id'],
  ['POST', '/v1/jobs/:id/cancel'],
  ['POST', '/v1/jobs/:id/resume'],
  ['GET', '/v1/jobs/:id/stream'],
  ['GET', '/v1/jobs/:id/events'],
  ['POST', '/v1/jobs/:id/events'],
  ['POST', '/v1/events'],
  ['POST', '/v1/jobs/:id/heartbeat'],
  ['POST', '/v1/jobs/:id/release'],
  ['POST', '/v1/workers/claim'],
  ['POST', '/v1/workers/signals'],
  ['POST', '/v1/tokens'],
  ['GET', '/v1/keys'],
  ['POST', '/v1/keys'],
  ['DELETE', '/v1/keys/:id'],
  ['POST', '/demo/session'],
  ['POST', '/demo/jobs'],
  ['GET', '/demo/jobs'],
  ['GET', '/demo/jobs/:id'],
  ['POST', '/demo/jobs/:id/cancel'],
  ['POST', '/demo/jobs/:id/resume'],
  ['GET', '/demo/jobs/:id/stream'],
]

function segment(): string {
  return pick([
    () => realJob.id,
    () => `job_${int(1e9).toString(36)}`,
    () => '%zz',
    () => '%',
    () => '%00',
    () => '%2F..%2F',
    () => 'a'.repeat(int(400)),
    () => encodeURIComponent(String.fromCodePoint(0xe000 + int(0x10ffff - 0xe000))),
    () => '%F0%9F%98%80',
    () => '%C3%28',
    () => '..',
    () => 'main.js',
    () => '',
  ])()
}

const queryNames = ['after', 'wait', 'access_token', 'status', 'type', 'owner', 'tenant', 'user', 'limit', 'cursor', 'x', '__proto__', 'constructor']

function queryValue(): string {
  return pick([
    () => String(int(100)),
    () => String(-int(100)),
    () => '1e999',
    () => 'NaN',
    () => '9'.repeat(int(40) + 1),
    () => '0x10',
    () => ' 1',
    () => '',
    () => '%zz',
    () => encodeURIComponent('acme:ann'),
    () => encodeURIComponent('\u0000\u001f'),
    () => 'queued',
    () => 'x'.repeat(int(3000)),
    () => pick([userToken, jobToken, 'garbage', 'a.b.c']),
  ])()
}

function query(): string {
  if (chance(0.3)) return ''
  const parts: string[] = []
  for (let i = int(4) + 1; i > 0; i--) {
    const name = pick(queryNames)
    parts.push(`${name}=${queryValue()}`)
    if (chance(0.15)) parts.push(`${name}=${queryValue()}`)
  }
  return `?${parts.join('&')}`
}

function credential(): Record<string, string> {
  return pick<() => Record<string, string>>([
    () => ({}),
    () => ({ authorization: `Bearer ${server.key}` }),
    () => ({ authorization: `Bearer ${server.key}` }),
    () => ({ authorization: `Bearer ${workerKey}` }),
    () => ({ authorization: `Bearer ${backendKey}` }),
    () => ({ authorization: `Bearer ${userToken}` }),
    () => ({ authorization: `Bearer ${jobToken}` }),
    () => ({ authorization: 'Bearer ' }),
    () => ({ authorization: 'Basic YTpi' }),
    () => ({ authorization: 'Bearer eyJhbGciOiJub25lIn0.eyJpc3MiOiJqb2J3aXJlIn0.' }),
    () => ({ authorization: `Bearer jwk_${'A'.repeat(int(40))}.${'b'.repeat(int(200))}` }),
    () => ({ cookie: `jobwire_token=${encodeURIComponent(server.key)}`, origin: 'https://evil.example' }),
  ])()
}

/** A JSON value of random shape, now and then far too deep or too wide. */
function value(depth = 0): unknown {
  const roll = random()
  if (depth > 4 || roll < 0.35) {
    return pick<() => unknown>([
      () => int(1000) - 500,
      () => random() * 1e308 * 10,
      () => 'x'.repeat(int(50)),
      () => '\u0000\u2028\r\n',
      () => true,
      () => null,
      () => Number.MAX_SAFE_INTEGER + 2,
      () => String.fromCodePoint(int(0x10ffff)),
    ])()
  }
  if (roll < 0.65) return Array.from({ length: int(5) }, () => value(depth + 1))
  const out: Record<string, unknown> = {}
  for (let i = int(5); i > 0; i--) out[pick(['type', 'data', 'events', 'writes', 'jobId', 'lease', 'batch', 'owner', 'tenant', 'user', 'input', 'x', 'wait', 'types', 'jobs', 'name', 'role', 'result', 'percent', 'text', 'id'])] = value(depth + 1)
  return out
}

/** A body meant for a route, then broken one way or another. */
function body(): { text: string; type: string } | null {
  if (chance(0.15)) return null
  const plausible = pick<() => unknown>([
    () => ({ type: pick(['fuzz', '', 'a b', 'x'.repeat(200)]), input: value(), owner: { tenant: pick(['acme', 'a:b', 'a\u0000', '']), user: pick(['ann', 'x\n', '']) } }),
    () => ({ type: pick(['progress', 'started', 'item', 'chunk', 'checkpoint', 'completed', 'failed', 'requeued', 'cancelled', 'nope']), percent: value(), data: value(), text: value() }),
    () => ({ events: Array.from({ length: int(4) }, () => ({ type: pick(['progress', 'chunk', 'x']), text: value() })) }),
    () => ({ writes: [{ jobId: pick([realJob.id, 'nope', 5]), events: [value()] }] }),
    () => ({ types: [pick(['fuzz', 'demo', ''])], wait: value(), leaseMs: value() }),
    () => ({ jobs: [{ id: realJob.id, lease: value() }], wait: 0 }),
    () => ({ jobIds: [realJob.id], tenant: pick(['acme', 'a:b']), user: pick(['ann', '\u0007']), ttl: value() }),
    () => ({ name: 'k', role: pick(['admin', 'backend', 'worker', 'root']), tenant: value() }),
    () => ({ lease: value(), reason: value() }),
    () => value(),
  ])()
  const json = JSON.stringify(plausible) ?? 'null'
  const text = pick<() => string>([
    () => json,
    () => json,
    () => json.slice(0, int(json.length + 1)),
    () => `{"type":"checkpoint","data":${'['.repeat(4000 + int(3000))}${']'.repeat(4000)}}`,
    () => `{"type":"fuzz","input":${'{"a":'.repeat(70 + int(100))}1${'}'.repeat(70)}}`,
    () => `{"type":"fuzz","input":[${Array.from({ length: 10_001 + int(100) }, () => '0').join(',')}]}`,
    () => '{"__proto__":{"polluted":1}}',
    () => '{"constructor":{"prototype":{"polluted":1}}}',
    () => '',
    () => '\u0000\u0001\u0002',
    () => '{"a":"\\ud800"}',
    () => json.replace(/"/g, "'"),
    () => '1e999999',
  ])()
  const type = pick(['application/json', 'application/json', 'application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded', 'application/octet-stream', 'APPLICATION/JSON', 'application/json; charset=latin1'])
  return { text, type }
}

// ---------------------------------------------------------------------------------------------
// What must come back

interface Finding {
  what: string
  status: number
  text: string
}

function checkAnswer(what: string, status: number, contentType: string, text: string, findings: Finding[]): void {
  if (status >= 500) {
    findings.push({ what, status, text: text.slice(0, 300) })
    return
  }
  if (status < 400) return
  let code: unknown
  try {
    code = (JSON.parse(text) as { error?: { code?: unknown } }).error?.code
  } catch {
    code = undefined
  }
  if (!contentType.startsWith('application/json') || !isErrorCode(code) || errorRegistry[code].status !== status) {
    findings.push({ what, status, text: text.slice(0, 300) })
  }
}

async function sendOne(index: number, findings: Finding[]): Promise<void> {
  const [method, template] = pick(routes)
  const path = template.replace(':id', segment()).replace(':file', segment()) + query()
  const sent = body()
  const headers: Record<string, string> = { ...credential() }
  if (sent !== null) headers['content-type'] = sent.type
  if (chance(0.1)) headers['last-event-id'] = queryValue()
  const what = `#${index} ${method} ${path.slice(0, 120)} ${sent === null ? '' : `${sent.type} ${sent.text.slice(0, 80)}`}`
  let response: Awaited<ReturnType<typeof request>>
  try {
    response = await request(`${server.url}${path}`, { method: method as 'GET', headers, body: sent?.text, dispatcher: agent })
  } catch (error) {
    // The client itself refused to send it (an invalid header value): nothing reached the server.
    if ((error as { code?: string }).code === 'UND_ERR_INVALID_ARG' || error instanceof TypeError) return
    findings.push({ what, status: 0, text: String(error) })
    return
  }
  const contentType = String(response.headers['content-type'] ?? '')
  if (contentType.startsWith('text/event-stream')) {
    response.body.destroy()
    return
  }
  const text = await response.body.text()
  checkAnswer(what, response.statusCode, contentType, text, findings)
  checkDocumented(what, { method, url: path, status: response.statusCode, contentType, text }, findings)
}

/** Every JSON answer, refusals included, is one the OpenAPI document describes (non-JSON ones are checkAnswer's). */
function checkDocumented(what: string, answer: { method: string; url: string; status: number; contentType: string; text: string }, findings: Finding[]): void {
  let body: unknown = null
  if (answer.text !== '') {
    try {
      body = JSON.parse(answer.text)
    } catch {
      return
    }
  }
  try {
    expectDocumentedAnswer({ ...answer, body })
  } catch (error) {
    findings.push({ what, status: answer.status, text: (error as Error).message.slice(0, 300) })
  }
}

function rawRequest(): string {
  const line = pick<() => string>([
    () => `${pick(['GET', 'POST', 'TRACE', 'PUT', 'DELETE', 'OPTIONS', 'PATCH', 'CONNECT', 'G\u0001T', ''])} ${pick(['/v1/jobs', '/v1/jobs/%zz', '*', 'http://x/v1/jobs', '/v1/ws', '//', `/v1/jobs/${realJob.id}/events`])} ${pick(['HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', 'HTTP/1.1 extra', ''])}`,
    () => Array.from({ length: int(60) }, () => String.fromCharCode(int(256))).join(''),
  ])()
  const headers = pick<() => string>([
    () => `Host: x\r\nAuthorization: Bearer ${server.key}\r\n`,
    () => 'Host: x\r\nContent-Length: -1\r\n',
    () => 'Host: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n',
    () => 'Host: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n',
    () => `Host: x\r\nX-Big: ${'a'.repeat(20_000 + int(60_000))}\r\n`,
    () => 'Host: x\r\nBad Header\r\n',
    () => 'Host x\r\n',
    () => '',
  ])()
  return `${line}\r\n${headers}Connection: close\r\n\r\n${chance(0.3) ? '{"type":' : ''}`
}

function sendRaw(index: number, text: string, findings: Finding[]): Promise<void> {
  return new Promise((resolve) => {
    const socket = connect(Number(new URL(server.url).port), '127.0.0.1', () => socket.end(text))
    let answer = ''
    socket.setEncoding('latin1')
    socket.setTimeout(5_000, () => socket.destroy())
    socket.on('data', (chunk: string) => (answer += chunk))
    socket.on('error', () => undefined)
    socket.on('close', () => {
      // The server may close without a word only when there is nothing to answer (a reset); otherwise it answers in full.
      // Bytes after a complete request are read as the next one: there may be several answers, back to back.
      let rest = answer
      const what = `raw #${index} ${JSON.stringify(text.slice(0, 80))}`
      while (rest !== '') {
        const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(rest)?.[1] ?? 0)
        const end = rest.indexOf('\r\n\r\n')
        const head = end === -1 ? rest : rest.slice(0, end)
        const length = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? NaN)
        if (status === 0 || end === -1 || Number.isNaN(length)) {
          findings.push({ what, status, text: rest.slice(0, 200) })
          break
        }
        const contentType = /content-type: ([^\r\n]+)/i.exec(head)?.[1] ?? ''
        checkAnswer(what, status, contentType, rest.slice(end + 4, end + 4 + length), findings)
        rest = rest.slice(end + 4 + length)
      }
      resolve()
    })
  })
}

function wsFrame(): string | Buffer {
  return pick<() => string | Buffer>([
    () => JSON.stringify({ type: 'subscribe', jobId: pick([realJob.id, 'nope', 5, '']), after: value() }),
    () => JSON.stringify({ type: 'unsubscribe', jobId: value() }),
    () => JSON.stringify({ type: 'subscribe_user', owner: value(), positions: value(), since: value() }),
    () => JSON.stringify({ type: 'cancel', jobId: pick([realJob.id, 'nope']), ref: value(), reason: value() }),
    () => JSON.stringify({ type: 'refresh_token', token: pick([userToken, jobToken, 'garbage', 'a.b.c', '']), ref: 'r' }),
    () => JSON.stringify({ type: 'ping', ref: value() }),
    () => JSON.stringify({ type: pick(['nope', '', '__proto__', 'constructor']), x: value() }),
    () => JSON.stringify(value()),
    () => `{"type":"subscribe","jobId":${'['.repeat(5000)}`,
    () => `{"type":"ping","ref":${'['.repeat(100)}1${']'.repeat(100)}}`,
    () => '{"type":"ping"}\n{"type":\n\n',
    () => 'x'.repeat(int(9000)),
    () => Buffer.from([int(256), int(256), int(256)]),
  ])()
}

// ---------------------------------------------------------------------------------------------

describe(`fuzz (seed ${seed})`, () => {
  it(`${httpRequests} malformed requests on every route answer 4xx in Jobwire's body, never 5xx`, async () => {
    const findings: Finding[] = []
    const before = process.memoryUsage().rss
    let next = 0
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < httpRequests) await sendOne(next++, findings)
      }),
    )
    expect(findings).toEqual([])
    expect((await request(`${server.url}/healthz`, { dispatcher: agent })).statusCode).toBe(200)
    // Bounded: a few thousand requests leave no more than a little garbage behind.
    expect(process.memoryUsage().rss - before).toBeLessThan(400 * 1024 * 1024)
  }, 180_000)

  it(`${rawRequests} requests that are not valid HTTP get a 400 in Jobwire's body or nothing`, async () => {
    const findings: Finding[] = []
    for (let i = 0; i < rawRequests; i++) await sendRaw(i, rawRequest(), findings)
    expect(findings).toEqual([])
    expect((await request(`${server.url}/healthz`, { dispatcher: agent })).statusCode).toBe(200)
  }, 120_000)

  it(`${wsFrames} malformed WebSocket frames get registry errors, never internal, and the socket's streams keep working`, async () => {
    const errors: WsServerMessage[] = []
    const closes: number[] = []
    let client: WsTestClient | null = null
    let seen = 0
    const credentials = [server.key, userToken, jobToken, backendKey]
    for (let i = 0; i < wsFrames; i++) {
      if (client === null) {
        client = await openWs(wsUrl(server.url), { token: pick(credentials) })
        seen = 0
        const opened = client
        void opened.closed.then(({ code }) => closes.push(code))
      }
      const frame = wsFrame()
      client.send(frame as string)
      // Now and then, wait for the server to answer a ping so its answers arrive in step.
      if (i % 50 === 49) {
        const ref = `sync-${i}`
        client.send({ type: 'ping', ref })
        await client.next((m) => m.type === 'pong' && m.ref === ref).catch(() => undefined)
      }
      for (const message of client.received.slice(seen)) if (message.type === 'error') errors.push(message)
      seen = client.received.length
      if (client.socket.readyState !== client.socket.OPEN) {
        await client.closed
        for (const message of client.received.slice(seen)) if (message.type === 'error') errors.push(message)
        client = null
      }
    }
    client?.close()
    const codes = errors.map((m) => (m.type === 'error' ? m.error.code : 'none'))
    expect(codes.filter((code) => !isErrorCode(code) || code === 'internal')).toEqual([])
    // Closes are the protocol's own: message_too_large, rate_limited, or our terminate (1006).
    expect(closes.filter((code) => ![1009, 4429, 1006, 1000, 1005].includes(code))).toEqual([])
    // The server still serves a real stream.
    const after = await openWs(wsUrl(server.url), { token: server.key })
    after.send({ type: 'subscribe', jobId: realJob.id })
    expect(await after.next((m) => m.type === 'snapshot')).toMatchObject({ jobId: realJob.id })
    after.close()
  }, 120_000)
})
