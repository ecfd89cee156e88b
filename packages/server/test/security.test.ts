/**
 * The security suite. Every case is a named attack scenario against real servers over real
 * sockets; every unauthorized attempt is written to a ledger, and the summary line
 * `security: N attempts, M got through` is printed at the end and must say M = 0. Positive
 * controls (the same credential doing what it may) are asserted but not counted, so a refusal
 * can never come from a credential that does not work at all.
 */
import { randomBytes } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { connect } from 'node:net'
import { Readable } from 'node:stream'
import { join } from 'node:path'
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose'
import pino from 'pino'
import { Agent, request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mintSubscriptionToken } from '@jobwire/backend'
import { errorRegistry, eventTypes, type ErrorBody, type ErrorCode, type JobState, type StreamMessage } from '@jobwire/protocol'
import { startServer, type RunningServer } from '../src/server.js'
import { MemoryStore } from '../src/stores/memory-store.js'
import { openWs, wsUrl } from './ws-client.js'
import {
  collect,
  makeTempDir,
  openSse,
  sleep,
  startTestServer,
  testApiKey,
  type SseConnection,
  type TestServer,
} from './fixtures.js'
import { within } from '../../../test/support/wait.js'

// ---------------------------------------------------------------------------------------------
// The ledger

interface Attempt {
  scenario: string
  what: string
  through: boolean
  evidence: string
}

const ledger: Attempt[] = []

/** Records one unauthorized attempt; `through` means the server let it do what it must not. */
function attempt(what: string, through: boolean, evidence: string): void {
  ledger.push({ scenario: expect.getState().currentTestName ?? '(outside a test)', what, through, evidence })
}

// ---------------------------------------------------------------------------------------------
// HTTP over real sockets

const agent = new Agent({ connections: 64, keepAliveTimeout: 1_000 })

afterAll(async () => {
  await agent.destroy()
  const through = ledger.filter((a) => a.through)
  console.log(`security: ${ledger.length} attempts, ${through.length} got through`)
  for (const a of through) console.log(`  got through: ${a.scenario} / ${a.what}: ${a.evidence.slice(0, 200)}`)
  expect(through.map((a) => `${a.scenario} / ${a.what}`)).toEqual([])
})

/** Where a credential rides: the Authorization header, the session cookie, or `?access_token=`. */
type Via = 'header' | 'query' | 'cookie'
const everyVia: Via[] = ['header', 'query', 'cookie']

interface Carried {
  url: string
  headers: Record<string, string>
}

function carry(url: string, credential: string | null, via: Via = 'header', headers: Record<string, string> = {}): Carried {
  if (credential === null) return { url, headers }
  switch (via) {
    case 'header':
      return { url, headers: { authorization: `Bearer ${credential}`, ...headers } }
    case 'cookie':
      return { url, headers: { cookie: `jobwire_token=${encodeURIComponent(credential)}`, ...headers } }
    case 'query':
      return { url: `${url}${url.includes('?') ? '&' : '?'}access_token=${encodeURIComponent(credential)}`, headers }
  }
}

interface Answer {
  status: number
  headers: Record<string, string | string[] | undefined>
  text: string
  body: unknown
}

interface SendOptions {
  credential?: string | null
  via?: Via
  /** Sent as JSON. */
  body?: unknown
  /** Sent as is (with the content type from `headers`, default JSON). */
  raw?: string | Readable
  headers?: Record<string, string>
}

async function send(method: string, url: string, options: SendOptions = {}): Promise<Answer> {
  const carried = carry(url, options.credential ?? null, options.via, options.headers)
  const hasBody = options.body !== undefined || options.raw !== undefined
  const response = await request(carried.url, {
    method: method as 'GET',
    dispatcher: agent,
    headers: { ...(hasBody ? { 'content-type': 'application/json' } : {}), ...carried.headers },
    body: options.raw ?? (options.body === undefined ? undefined : JSON.stringify(options.body)),
  })
  const text = await response.body.text()
  return { status: response.statusCode, headers: response.headers as Answer['headers'], text, body: parseJson(text) }
}

/** The body as JSON, or null (an empty body, or /metrics text). */
function parseJson(text: string): unknown {
  try {
    return text === '' ? null : JSON.parse(text)
  } catch {
    return null
  }
}

function errorOf(answer: { body: unknown }): ErrorBody | undefined {
  return (answer.body as { error?: ErrorBody } | null)?.error
}

/** Records an attempt that must be refused with `code` (and its registered status). */
function refused(what: string, answer: Answer, code: ErrorCode): ErrorBody {
  attempt(what, answer.status < 400, `HTTP ${answer.status} ${answer.text.slice(0, 160)}`)
  const error = errorOf(answer)
  expect(error?.code, `${what}: HTTP ${answer.status} ${answer.text.slice(0, 300)}`).toBe(code)
  expect(answer.status, what).toBe(errorRegistry[code].status)
  return error as ErrorBody
}

/** A positive control: this must work (not counted). */
function allowed(what: string, answer: Answer, status = 200): void {
  expect(answer.status, `${what}: ${answer.text.slice(0, 300)}`).toBe(status)
}

/** Guards a wait that would otherwise hang on a regression (not a speed check). */
// ---------------------------------------------------------------------------------------------
// Streams over real sockets

/** Runs `body` on a server of its own; closes what it pushed onto `open`, then the server. */
async function withStreams(options: Parameters<typeof startTestServer>[0], body: (server: TestServer, open: { close(): void }[]) => Promise<void>): Promise<void> {
  const server = await startTestServer(options)
  const open: { close(): void }[] = []
  try {
    await body(server, open)
  } finally {
    for (const connection of open) connection.close()
    await server.close()
  }
}

const streamPath = (base: string, jobId: string): string => `${base}/v1/jobs/${jobId}/stream`

async function stream(url: string, credential: string | null, via: Via = 'header', headers: Record<string, string> = {}): Promise<SseConnection> {
  const carried = carry(url, credential, via, headers)
  return within(openSse(carried.url, { headers: carried.headers }), `a stream from ${url}`)
}

/** Opens a stream that must be refused before it starts, with `code`. */
async function refusedStream(
  what: string,
  url: string,
  credential: string | null,
  via: Via,
  code: ErrorCode,
  headers: Record<string, string> = {},
): Promise<{ error: ErrorBody | undefined; headers: SseConnection['headers'] }> {
  const connection = await stream(url, credential, via, headers)
  attempt(what, connection.status === 200, `HTTP ${connection.status} ${(connection.status === 200 ? connection.raw : connection.body).slice(0, 160)}`)
  if (connection.status === 200) {
    connection.close()
    expect.fail(`${what}: the stream opened`)
  }
  const error = (JSON.parse(connection.body) as { error?: ErrorBody }).error
  expect(error?.code, `${what}: ${connection.body}`).toBe(code)
  expect(connection.status, what).toBe(errorRegistry[code].status)
  return { error, headers: connection.headers }
}

/** An open stream that must work (a positive control); the caller closes it. */
async function openStream(url: string, credential: string | null, via: Via = 'header', headers: Record<string, string> = {}): Promise<SseConnection> {
  const connection = await stream(url, credential, via, headers)
  expect(connection.status, `stream ${url}: ${connection.body}`).toBe(200)
  return connection
}

const seqsOf = (messages: StreamMessage[]): number[] => messages.flatMap((m) => (m.type === 'event' ? [m.event.seq] : []))

// ---------------------------------------------------------------------------------------------
// Jobs, keys and tokens through the admin API

const tokenSecret = 'security-suite-token-secret-0123456789abcdef'
const appJwtSecret = 'security-suite-app-jwt-secret-0123456789'
const appIssuer = 'https://auth.example'
const appAudience = 'jobwire-app'
const allowedOrigin = 'https://app.example'

interface Owner {
  tenant: string
  user: string
}

let typeCounter = 0
const uniqueType = (name: string): string => `${name}-${++typeCounter}`

async function createJob(base: string, owner: Owner | null, type = uniqueType('job'), credential = testApiKey): Promise<JobState> {
  const answer = await send('POST', `${base}/v1/jobs`, { credential, body: { type, ...(owner === null ? {} : { owner }), dispatch: false } })
  expect(answer.status, answer.text).toBe(201)
  return answer.body as JobState
}

async function append(base: string, jobId: string, events: Record<string, unknown>[]): Promise<number> {
  const answer = await send('POST', `${base}/v1/jobs/${jobId}/events`, { credential: testApiKey, body: { events } })
  expect(answer.status, answer.text).toBe(200)
  return (answer.body as { seq: number }).seq
}

async function mint(base: string, scope: Record<string, unknown>, credential = testApiKey): Promise<string> {
  const answer = await send('POST', `${base}/v1/tokens`, { credential, body: scope })
  expect(answer.status, answer.text).toBe(200)
  return (answer.body as { token: string }).token
}

async function createKey(base: string, body: Record<string, unknown>): Promise<{ id: string; key: string }> {
  const answer = await send('POST', `${base}/v1/keys`, { credential: testApiKey, body })
  expect(answer.status, answer.text).toBe(201)
  return answer.body as { id: string; key: string }
}

/** A subscription token signed here with the server's secret, for claims the API would not mint (a 2 s ttl). */
async function signSubscription(claims: JWTPayload, expiresAt: number, secret = tokenSecret): Promise<string> {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuer('jobwire')
    .setAudience('jobwire:subscription')
    .setIssuedAt()
    .setExpirationTime(expiresAt)
    .setJti(randomBytes(9).toString('base64url'))
    .sign(new TextEncoder().encode(secret))
}

/** Ann's JWT as the app's own identity provider signs it (issuer and audience the main server trusts, 5 min). */
async function signAppJwt(claims: JWTPayload): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setSubject('ann').setIssuer(appIssuer).setAudience(appAudience).setExpirationTime('5m').sign(new TextEncoder().encode(appJwtSecret))
}

const nowSeconds = (): number => Math.floor(Date.now() / 1000)
const b64url = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url')

/** A subscription token with `alg: none` and no signature. */
function unsignedSubscription(payload: Record<string, unknown>): string {
  return `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url(payload)}.`
}

/** Replaces one character in the middle of a JWT segment (the last character may be only padding bits). */
function tamper(token: string, segment: 1 | 2): string {
  const parts = token.split('.')
  const part = parts[segment] as string
  const middle = Math.floor(part.length / 2)
  parts[segment] = `${part.slice(0, middle)}${part[middle] === 'A' ? 'B' : 'A'}${part.slice(middle + 1)}`
  return parts.join('.')
}

// ---------------------------------------------------------------------------------------------
// The main server: SQLite, app JWTs with a shared secret, CORS allow-list

let main: TestServer
let base: string

beforeAll(async () => {
  main = await startTestServer({
    storage: 'sqlite',
    tokenSecret,
    jwtSecret: appJwtSecret,
    jwtIssuer: appIssuer,
    jwtAudience: appAudience,
    corsOrigins: allowedOrigin,
    createLimit: 100_000,
    pollMaxWait: 500,
    heartbeat: 1_000,
  })
  base = main.url
})

afterAll(async () => {
  await main.close()
})

describe('job-scoped subscription tokens', () => {
  let jobA: JobState
  let jobB: JobState
  let tokenA: string

  beforeAll(async () => {
    // Same tenant and user: only the job list in the token tells them apart.
    jobA = await createJob(base, { tenant: 'acme', user: 'ann' }, 'scoped')
    jobB = await createJob(base, { tenant: 'acme', user: 'ann' }, 'scoped')
    await append(base, jobA.id, [{ type: 'progress', percent: 10 }])
    await append(base, jobB.id, [{ type: 'progress', percent: 20, message: 'B only' }])
    tokenA = await mint(base, { jobIds: [jobA.id], rights: ['read', 'cancel'] })
  })

  it('a token for job A reads job A on every path (the control)', async () => {
    for (const via of everyVia) {
      allowed(`GET A via ${via}`, await send('GET', `${base}/v1/jobs/${jobA.id}`, { credential: tokenA, via }))
      const connection = await openStream(streamPath(base, jobA.id), tokenA, via)
      connection.close()
    }
    allowed('poll A', await send('GET', `${base}/v1/jobs/${jobA.id}/events?after=0`, { credential: tokenA }))
  })

  it('a token for job A gets 404 for job B on every read path, by header, query and cookie', async () => {
    for (const via of everyVia) {
      refused(`GET B via ${via}`, await send('GET', `${base}/v1/jobs/${jobB.id}`, { credential: tokenA, via }), 'job_not_found')
      refused(`long-poll B via ${via}`, await send('GET', `${base}/v1/jobs/${jobB.id}/events?after=1&wait=1`, { credential: tokenA, via }), 'job_not_found')
      refused(`poll B snapshot via ${via}`, await send('GET', `${base}/v1/jobs/${jobB.id}/events`, { credential: tokenA, via }), 'job_not_found')
      await refusedStream(`SSE B via ${via}`, streamPath(base, jobB.id), tokenA, via, 'job_not_found')
      await refusedStream(`SSE B replay ?after=0 via ${via}`, `${streamPath(base, jobB.id)}?after=0`, tokenA, via, 'job_not_found')
      await refusedStream(`SSE B replay Last-Event-ID via ${via}`, streamPath(base, jobB.id), tokenA, via, 'job_not_found', { 'last-event-id': '1' })
      refused(`cancel B via ${via}`, await send('POST', `${base}/v1/jobs/${jobB.id}/cancel`, { credential: tokenA, via, body: {} }), 'job_not_found')
      refused(`resume B via ${via}`, await send('POST', `${base}/v1/jobs/${jobB.id}/resume`, { credential: tokenA, via, body: {} }), 'job_not_found')
      refused(`write events to B via ${via}`, await send('POST', `${base}/v1/jobs/${jobB.id}/events`, { credential: tokenA, via, body: { type: 'progress' } }), 'job_not_found')
    }
    expect((await send('GET', `${base}/v1/jobs/${jobB.id}`, { credential: testApiKey })).body).toMatchObject({ status: 'running', seq: 3 })
  })

  it('a token for job A lists only job A, whatever the filters ask for', async () => {
    const filters = ['', '?tenant=acme', '?owner=acme:ann', '?owner=acme', '?user=ann', '?type=scoped', '?status=running', '?limit=200']
    for (const filter of filters) {
      const answer = await send('GET', `${base}/v1/jobs${filter}`, { credential: tokenA })
      expect(answer.status, answer.text).toBe(200)
      const ids = (answer.body as { jobs: { id: string }[] }).jobs.map((j) => j.id)
      const foreign = ids.filter((id) => id !== jobA.id)
      attempt(`list ${filter || '(no filter)'}`, foreign.length > 0, `listed ${foreign.join(', ')}`)
      expect(foreign).toEqual([])
    }
  })

  it('out-of-scope job B answers exactly like a job that does not exist', async () => {
    const missing = 'job_AAAAAAAAAAAAAAAAAAAAAA'
    const paths = (id: string): [string, string][] => [
      ['GET', `/v1/jobs/${id}`],
      ['GET', `/v1/jobs/${id}/events?after=0`],
      ['POST', `/v1/jobs/${id}/cancel`],
    ]
    for (const [index, [method, path]] of paths(jobB.id).entries()) {
      const outOfScope = await send(method, `${base}${path}`, { credential: tokenA, ...(method === 'POST' ? { body: {} } : {}) })
      const [, missingPath] = paths(missing)[index] as [string, string]
      const nonexistent = await send(method, `${base}${missingPath}`, { credential: tokenA, ...(method === 'POST' ? { body: {} } : {}) })
      refused(`${method} ${path} (out of scope)`, outOfScope, 'job_not_found')
      const scrub = (text: string, id: string): string => text.replaceAll(id, '<id>')
      const same = scrub(outOfScope.text, jobB.id) === scrub(nonexistent.text, missing) && outOfScope.status === nonexistent.status
      attempt(`${method} ${path} tells out-of-scope from missing`, !same, `${outOfScope.text} vs ${nonexistent.text}`)
      expect(scrub(outOfScope.text, jobB.id)).toBe(scrub(nonexistent.text, missing))
    }
  })

  it('a subscription token never writes events, resumes, creates jobs or mints tokens, even for its own job', async () => {
    const before = (await send('GET', `${base}/v1/jobs/${jobA.id}`, { credential: testApiKey })).body as JobState
    refused('write events to its own job', await send('POST', `${base}/v1/jobs/${jobA.id}/events`, { credential: tokenA, body: { type: 'chunk', text: 'forged' } }), 'forbidden')
    refused('resume its own job', await send('POST', `${base}/v1/jobs/${jobA.id}/resume`, { credential: tokenA, body: {} }), 'forbidden')
    refused('create a job', await send('POST', `${base}/v1/jobs`, { credential: tokenA, body: { type: 'x', owner: { tenant: 'acme', user: 'ann' } } }), 'forbidden')
    refused('mint a wider token', await send('POST', `${base}/v1/tokens`, { credential: tokenA, body: { jobIds: [jobA.id, jobB.id] } }), 'forbidden')
    refused('create an API key', await send('POST', `${base}/v1/keys`, { credential: tokenA, body: { name: 'x', role: 'admin' } }), 'forbidden')
    refused('list API keys', await send('GET', `${base}/v1/keys`, { credential: tokenA }), 'forbidden')
    refused('claim work', await send('POST', `${base}/v1/workers/claim`, { credential: tokenA, body: { types: ['scoped'] } }), 'forbidden')
    expect((await send('GET', `${base}/v1/jobs/${jobA.id}`, { credential: testApiKey })).body).toMatchObject({ text: '', seq: before.seq })
  })

  it('a read-only token cannot cancel its own job, and a cancel-only token cannot read it', async () => {
    const readOnly = await mint(base, { jobIds: [jobA.id] })
    refused('cancel with a read-only token', await send('POST', `${base}/v1/jobs/${jobA.id}/cancel`, { credential: readOnly, body: {} }), 'forbidden')
    const cancelOnly = await mint(base, { jobIds: [jobA.id], rights: ['cancel'] })
    refused('read with a cancel-only token', await send('GET', `${base}/v1/jobs/${jobA.id}`, { credential: cancelOnly }), 'job_not_found')
    await refusedStream('stream with a cancel-only token', streamPath(base, jobA.id), cancelOnly, 'query', 'job_not_found')
    expect((await send('GET', `${base}/v1/jobs/${jobA.id}`, { credential: testApiKey })).body).toMatchObject({ status: 'running' })
  })
})

describe('tenants and users', () => {
  it("a tenant-bound backend key cannot read, cancel, resume, poll, stream or mint for another tenant's jobs", async () => {
    const acmeKey = (await createKey(base, { name: 'acme-backend', role: 'backend', tenant: 'acme' })).key
    const own = await createJob(base, { tenant: 'acme', user: 'ann' }, uniqueType('tenant'), acmeKey)
    allowed('read its own tenant job', await send('GET', `${base}/v1/jobs/${own.id}`, { credential: acmeKey }))
    allowed('mint for its own tenant job', await send('POST', `${base}/v1/tokens`, { credential: acmeKey, body: { jobIds: [own.id] } }))

    const globex = await createJob(base, { tenant: 'globex', user: 'gil' }, uniqueType('tenant'))
    await append(base, globex.id, [{ type: 'progress', percent: 5 }])
    const ownerless = await createJob(base, null, uniqueType('tenant'))
    for (const foreign of [globex, ownerless]) {
      const url = `${base}/v1/jobs/${foreign.id}`
      refused('read', await send('GET', url, { credential: acmeKey }), 'job_not_found')
      refused('cancel', await send('POST', `${url}/cancel`, { credential: acmeKey, body: {} }), 'job_not_found')
      refused('resume', await send('POST', `${url}/resume`, { credential: acmeKey, body: {} }), 'job_not_found')
      refused('long-poll events', await send('GET', `${url}/events?after=0`, { credential: acmeKey }), 'job_not_found')
      refused('write events', await send('POST', `${url}/events`, { credential: acmeKey, body: { type: 'progress', percent: 99 } }), 'job_not_found')
      await refusedStream('stream', `${url}/stream`, acmeKey, 'header', 'job_not_found')
      refused('mint a token for it', await send('POST', `${base}/v1/tokens`, { credential: acmeKey, body: { jobIds: [foreign.id] } }), 'job_not_found')
      refused('mint a token for it and its own job together', await send('POST', `${base}/v1/tokens`, { credential: acmeKey, body: { jobIds: [own.id, foreign.id] } }), 'job_not_found')
    }
    // The jobs are checked together; the refusal names the first refused job of the list, whichever was read first.
    const first = refused('mint a token for two foreign jobs among its own', await send('POST', `${base}/v1/tokens`, { credential: acmeKey, body: { jobIds: [own.id, ownerless.id, globex.id] } }), 'job_not_found')
    expect(first.details?.jobId).toBe(ownerless.id)
    refused('mint a token for a user of another tenant', await send('POST', `${base}/v1/tokens`, { credential: acmeKey, body: { tenant: 'globex', user: 'gil' } }), 'forbidden')
    refused('mint naming another tenant with its own job', await send('POST', `${base}/v1/tokens`, { credential: acmeKey, body: { jobIds: [own.id], tenant: 'globex' } }), 'forbidden')
    refused('create a job for another tenant', await send('POST', `${base}/v1/jobs`, { credential: acmeKey, body: { type: 'x', owner: { tenant: 'globex', user: 'gil' } } }), 'forbidden')
    refused('create a job without an owner', await send('POST', `${base}/v1/jobs`, { credential: acmeKey, body: { type: 'x' } }), 'invalid_request')
    for (const filter of ['', '?tenant=globex', '?owner=globex:gil', `?type=${globex.type}`]) {
      const answer = await send('GET', `${base}/v1/jobs${filter}`, { credential: acmeKey })
      const leaked = (answer.body as { jobs: JobState[] }).jobs.filter((job) => job.owner?.tenant !== 'acme')
      attempt(`list ${filter || '(no filter)'}`, leaked.length > 0, leaked.map((j) => j.id).join(', '))
      expect(leaked).toEqual([])
    }
    // A token minted by the acme key for a user is confined to acme, whatever it asked for.
    const userToken = await mint(base, { user: 'gil' }, acmeKey)
    refused("the acme key's token for user gil reads globex/gil's job", await send('GET', `${base}/v1/jobs/${globex.id}`, { credential: userToken }), 'job_not_found')
    expect((await send('GET', `${base}/v1/jobs/${globex.id}`, { credential: testApiKey })).body).toMatchObject({ status: 'running', seq: 3 })
  })

  it("a user-scoped token and a user's app JWT get 404 for other users' jobs", async () => {
    const type = uniqueType('users')
    const annJob = await createJob(base, { tenant: 'acme', user: 'ann' }, type)
    const bobJob = await createJob(base, { tenant: 'acme', user: 'bob' }, type)
    const annElsewhere = await createJob(base, { tenant: 'globex', user: 'ann' }, type)
    const userToken = await mint(base, { tenant: 'acme', user: 'ann', rights: ['read', 'cancel'] })
    const appJwt = await signAppJwt({ tenant: 'acme' })
    for (const [kind, credential] of [['user token', userToken], ['app JWT', appJwt]] as const) {
      allowed(`${kind} reads ann's job`, await send('GET', `${base}/v1/jobs/${annJob.id}`, { credential }))
      for (const foreign of [bobJob, annElsewhere]) {
        const url = `${base}/v1/jobs/${foreign.id}`
        const who = `${kind} on ${foreign.owner?.tenant}/${foreign.owner?.user}`
        refused(`${who}: read`, await send('GET', url, { credential, via: 'query' }), 'job_not_found')
        refused(`${who}: long-poll`, await send('GET', `${url}/events?after=1`, { credential }), 'job_not_found')
        refused(`${who}: cancel`, await send('POST', `${url}/cancel`, { credential, body: {} }), 'job_not_found')
        await refusedStream(`${who}: stream`, `${url}/stream`, credential, 'query', 'job_not_found')
        await refusedStream(`${who}: stream replay`, `${url}/stream?after=0`, credential, 'header', 'job_not_found')
      }
      for (const filter of ['', '?user=bob', '?owner=acme:bob', '?tenant=globex', '?owner=globex:ann', `?type=${type}`]) {
        const answer = await send('GET', `${base}/v1/jobs${filter}`, { credential })
        const leaked = (answer.body as { jobs: JobState[] }).jobs.filter((job) => job.owner?.tenant !== 'acme' || job.owner.user !== 'ann')
        attempt(`${kind}: list ${filter || '(no filter)'}`, leaked.length > 0, leaked.map((j) => j.id).join(', '))
        expect(leaked).toEqual([])
      }
      refused(`${kind}: mint a token`, await send('POST', `${base}/v1/tokens`, { credential, body: { tenant: 'acme', user: 'bob' } }), 'forbidden')
      refused(`${kind}: create a job`, await send('POST', `${base}/v1/jobs`, { credential, body: { type, owner: { tenant: 'acme', user: 'ann' } } }), 'forbidden')
    }
    for (const job of [bobJob, annElsewhere]) {
      expect((await send('GET', `${base}/v1/jobs/${job.id}`, { credential: testApiKey })).body).toMatchObject({ status: 'queued' })
    }
  })

  it('a tenant-wide token and an app JWT with the tenant-read claim read every job of their tenant, never another tenant\'s; the JWT cancels only its own', async () => {
    const type = uniqueType('team')
    const annJob = await createJob(base, { tenant: 'acme', user: 'ann' }, type)
    const bobJob = await createJob(base, { tenant: 'acme', user: 'bob' }, type)
    const elsewhere = await createJob(base, { tenant: 'globex', user: 'ann' }, type)
    const teamToken = await mint(base, { tenant: 'acme', tenantWide: true })
    const teamJwt = await signAppJwt({ tenant: 'acme', jobwire_tenant_read: true })
    for (const [kind, credential] of [['tenant-wide token', teamToken], ['tenant-read app JWT', teamJwt]] as const) {
      for (const job of [annJob, bobJob]) allowed(`${kind} reads ${job.owner?.user}'s job`, await send('GET', `${base}/v1/jobs/${job.id}`, { credential }))
      refused(`${kind} reads globex's job`, await send('GET', `${base}/v1/jobs/${elsewhere.id}`, { credential }), 'job_not_found')
      await refusedStream(`${kind} streams globex's job`, `${base}/v1/jobs/${elsewhere.id}/stream`, credential, 'query', 'job_not_found')
      const listed = (await send('GET', `${base}/v1/jobs?type=${type}`, { credential })).body as { jobs: JobState[] }
      expect(listed.jobs.map((job) => job.id).sort()).toEqual([annJob.id, bobJob.id].sort())
    }
    refused("the tenant-read app JWT cancels bob's job", await send('POST', `${base}/v1/jobs/${bobJob.id}/cancel`, { credential: teamJwt, body: {} }), 'forbidden')
    allowed("the tenant-read app JWT cancels ann's own job", await send('POST', `${base}/v1/jobs/${annJob.id}/cancel`, { credential: teamJwt, body: {} }))
    const invalid = await send('POST', `${base}/v1/tokens`, { credential: testApiKey, body: { tenant: 'acme', user: 'ann', tenantWide: true } })
    expect(invalid.status).toBe(400)
    expect(invalid.body).toMatchObject({ error: { code: 'invalid_request', details: { field: 'tenantWide' } } })
  })
})

describe('API key roles', () => {
  it('a worker key cannot create jobs, mint tokens, list, cancel, manage keys or claim types outside its own', async () => {
    const worker = (await createKey(base, { name: 'render-worker', role: 'worker', types: ['render'] })).key
    const render = await createJob(base, null, 'render')
    const email = await createJob(base, { tenant: 'acme', user: 'ann' }, 'email')
    const claim = await send('POST', `${base}/v1/workers/claim`, { credential: worker, body: { types: ['render'] } })
    expect([200, 204], `claim its own type: ${claim.text}`).toContain(claim.status)
    refused('create a job', await send('POST', `${base}/v1/jobs`, { credential: worker, body: { type: 'render' } }), 'forbidden')
    refused('mint a token', await send('POST', `${base}/v1/tokens`, { credential: worker, body: { jobIds: [render.id] } }), 'forbidden')
    refused('claim a type outside its types', await send('POST', `${base}/v1/workers/claim`, { credential: worker, body: { types: ['email'] } }), 'forbidden')
    refused('claim its type and another', await send('POST', `${base}/v1/workers/claim`, { credential: worker, body: { types: ['render', 'email'] } }), 'forbidden')
    refused('list jobs', await send('GET', `${base}/v1/jobs`, { credential: worker }), 'forbidden')
    refused('cancel a job of its type', await send('POST', `${base}/v1/jobs/${render.id}/cancel`, { credential: worker, body: {} }), 'forbidden')
    refused('resume a job of its type', await send('POST', `${base}/v1/jobs/${render.id}/resume`, { credential: worker, body: {} }), 'forbidden')
    refused('write events without a lease', await send('POST', `${base}/v1/jobs/${render.id}/events`, { credential: worker, body: { type: 'progress' } }), 'forbidden')
    refused('read a job of another type', await send('GET', `${base}/v1/jobs/${email.id}`, { credential: worker }), 'job_not_found')
    refused('write events to a job of another type', await send('POST', `${base}/v1/jobs/${email.id}/events`, { credential: worker, body: { lease: 'lease_x', type: 'progress' } }), 'job_not_found')
    // Carried in a claim, a write is checked like any other: per write, without refusing the claim.
    const carried = await send('POST', `${base}/v1/workers/claim`, { credential: worker, body: { types: ['render'], done: [{ jobId: email.id, lease: 'lease_x', events: [{ type: 'completed' }] }] } })
    expect(carried.status, carried.text).toBe(200)
    expect(carried.body).toMatchObject({ done: [{ jobId: email.id, error: { code: 'job_not_found' } }] })
    await refusedStream('stream a job of another type', streamPath(base, email.id), worker, 'header', 'job_not_found')
    refused('create a key', await send('POST', `${base}/v1/keys`, { credential: worker, body: { name: 'root', role: 'admin' } }), 'forbidden')
    refused('list keys', await send('GET', `${base}/v1/keys`, { credential: worker }), 'forbidden')
    refused('revoke a key', await send('DELETE', `${base}/v1/keys/whatever1`, { credential: worker }), 'forbidden')
    refused('read metrics', await send('GET', `${base}/metrics`, { credential: worker }), 'forbidden')
  })

  it('a backend key cannot manage keys, claim work or read metrics', async () => {
    const backend = (await createKey(base, { name: 'plain-backend', role: 'backend' })).key
    const victim = await createKey(base, { name: 'victim', role: 'backend' })
    refused('create an admin key', await send('POST', `${base}/v1/keys`, { credential: backend, body: { name: 'root', role: 'admin' } }), 'forbidden')
    refused('list keys', await send('GET', `${base}/v1/keys`, { credential: backend }), 'forbidden')
    refused('revoke another key', await send('DELETE', `${base}/v1/keys/${victim.id}`, { credential: backend }), 'forbidden')
    refused('claim work', await send('POST', `${base}/v1/workers/claim`, { credential: backend, body: { types: ['render'] } }), 'forbidden')
    refused('watch worker signals', await send('POST', `${base}/v1/workers/signals`, { credential: backend, body: { jobs: [] } }), 'forbidden')
    refused('read metrics', await send('GET', `${base}/metrics`, { credential: backend }), 'forbidden')
    allowed('the victim key still works', await send('GET', `${base}/v1/jobs?limit=1`, { credential: victim.key }))
  })

  it('wrong, malformed and look-alike API keys are refused', async () => {
    const real = await createKey(base, { name: 'real', role: 'backend' })
    const [id, secret] = real.key.slice(4).split('.') as [string, string]
    const forgeries: [string, string][] = [
      ['right id, wrong secret', `jwk_${id}.${'A'.repeat(secret.length)}`],
      ['right id, secret one character off', `jwk_${id}.${secret.slice(0, -1)}${secret.endsWith('A') ? 'B' : 'A'}`],
      ['right id, secret is its stored hash', `jwk_${id}.${'0'.repeat(64)}`],
      ['right id, no secret', `jwk_${id}.`],
      ['unknown id, its secret', `jwk_AAAAAAAAAAAA.${secret}`],
      ['the admin key with a suffix', `${testApiKey}x`],
      ['the admin key, truncated', testApiKey.slice(0, -1)],
      ['the admin key in other case', testApiKey.toUpperCase()],
    ]
    for (const [what, credential] of forgeries) {
      refused(what, await send('GET', `${base}/v1/jobs`, { credential }), 'unauthorized')
    }
    refused('a Basic header with the admin key', await send('GET', `${base}/v1/jobs`, { headers: { authorization: `Basic ${testApiKey}` } }), 'unauthorized')
    refused('no credential at all', await send('GET', `${base}/v1/jobs`), 'unauthorized')
  })

  it('API keys are stored hashed: the SQLite files hold no key secret', async () => {
    const created = await createKey(base, { name: 'stored', role: 'backend' })
    const secret = created.key.split('.')[1] as string
    for (const file of ['jobwire.db', 'jobwire.db-wal']) {
      const bytes = await readFile(join(main.dataDir as string, file)).catch(() => Buffer.alloc(0))
      const found = bytes.includes(secret) || bytes.includes(created.key)
      attempt(`read a usable key out of ${file}`, found, `${bytes.length} bytes`)
      expect(found).toBe(false)
    }
    const listed = await send('GET', `${base}/v1/keys`, { credential: testApiKey })
    attempt('read a key back from GET /v1/keys', listed.text.includes(secret), listed.text.slice(0, 160))
    expect(listed.text).not.toContain(secret)
    expect(listed.text).not.toContain('"hash"')
  })
})

describe('app JWTs', () => {
  let dir: { path: string; remove(): Promise<void> }
  let pemServer: TestServer
  let jwksServer: TestServer
  let signing: { privateKey: CryptoKey; publicKey: CryptoKey }
  let attacker: { privateKey: CryptoKey; publicKey: CryptoKey }
  let pem: string
  const kid = 'app-key-1'

  beforeAll(async () => {
    dir = await makeTempDir('jobwire-jwt-')
    signing = await generateKeyPair('RS256', { extractable: true })
    attacker = await generateKeyPair('RS256', { extractable: true })
    pem = await exportSPKI(signing.publicKey)
    await writeFile(join(dir.path, 'app.pem'), pem)
    const jwk: JWK = { ...(await exportJWK(signing.publicKey)), kid, alg: 'RS256', use: 'sig' }
    await writeFile(join(dir.path, 'jwks.json'), JSON.stringify({ keys: [jwk] }))
    const common = { tokenSecret, jwtIssuer: appIssuer, jwtAudience: appAudience }
    // The PEM server's allow-list also names HS256, the misconfiguration that invites HS/RS confusion.
    pemServer = await startTestServer({ ...common, jwtPublicKeyFile: join(dir.path, 'app.pem'), jwtAlgorithms: 'RS256,HS256' })
    jwksServer = await startTestServer({ ...common, jwksFile: join(dir.path, 'jwks.json'), jwtAlgorithms: 'RS256' })
  })

  afterAll(async () => {
    await pemServer?.close()
    await jwksServer?.close()
    await dir?.remove()
  })

  /** Good claims for ann of acme; `change` edits them (undefined deletes). */
  function claims(change: Record<string, unknown> = {}): JWTPayload {
    const out: Record<string, unknown> = { sub: 'ann', tenant: 'acme', iss: appIssuer, aud: appAudience, iat: nowSeconds(), exp: nowSeconds() + 300 }
    for (const [key, value] of Object.entries(change)) {
      if (value === undefined) delete out[key]
      else out[key] = value
    }
    return out
  }

  const hs = (payload: JWTPayload, secret = appJwtSecret, header: Record<string, unknown> = {}): Promise<string> =>
    new SignJWT(payload).setProtectedHeader({ alg: 'HS256', typ: 'JWT', ...header }).sign(new TextEncoder().encode(secret))
  const rs = (payload: JWTPayload, key: CryptoKey = signing.privateKey, header: Record<string, unknown> = { kid }): Promise<string> =>
    new SignJWT(payload).setProtectedHeader({ alg: 'RS256', typ: 'JWT', ...header }).sign(key)
  const unsigned = (payload: JWTPayload, alg = 'none'): string => `${b64url({ alg, typ: 'JWT' })}.${b64url(payload)}.`

  /** Sends every forged token to `server` and expects each refused; the good token is the control. */
  async function expectForgeriesRefused(server: string, good: string, forgeries: [string, string | Promise<string>, ErrorCode][]): Promise<void> {
    const job = await createJob(server, { tenant: 'acme', user: 'ann' }, uniqueType('jwt'))
    allowed('the well-formed token reads its job', await send('GET', `${server}/v1/jobs/${job.id}`, { credential: good }))
    const connection = await openStream(streamPath(server, job.id), good, 'query')
    connection.close()
    for (const [what, pending, code] of forgeries) {
      const token = await pending
      const error = refused(what, await send('GET', `${server}/v1/jobs/${job.id}`, { credential: token }), code)
      expect(JSON.stringify(error)).not.toContain(appJwtSecret)
      await refusedStream(`${what} (stream)`, streamPath(server, job.id), token, 'query', code)
    }
  }

  /** Attacks that apply to every kind of verification key. */
  const commonForgeries = (sign: (payload: JWTPayload) => Promise<string>): [string, Promise<string> | string, ErrorCode][] => [
    ['alg:none', unsigned(claims()), 'invalid_token'],
    ['alg:None', unsigned(claims(), 'None'), 'invalid_token'],
    ['alg:none claiming to be a subscription token', unsigned({ ...claims(), iss: 'jobwire', aud: 'jobwire:subscription', jti: 'x', rights: ['read'], user: 'ann' }), 'invalid_token'],
    ['wrong aud', sign(claims({ aud: 'another-app' })), 'invalid_token'],
    ['no aud', sign(claims({ aud: undefined })), 'invalid_token'],
    ['wrong iss', sign(claims({ iss: 'https://evil.example' })), 'invalid_token'],
    ['expired a minute ago', sign(claims({ exp: nowSeconds() - 60 })), 'token_expired'],
    ['no exp', sign(claims({ exp: undefined })), 'invalid_token'],
    ['nbf a minute ahead', sign(claims({ nbf: nowSeconds() + 60 })), 'invalid_token'],
    ['no user claim', sign(claims({ sub: undefined })), 'invalid_token'],
    ['an empty user claim', sign(claims({ sub: '' })), 'invalid_token'],
    ['a user claim that is not a string', sign(claims({ sub: ['ann'] })), 'invalid_token'],
    ['no tenant claim (no default configured)', sign(claims({ tenant: undefined })), 'invalid_token'],
    ['tampered signature', sign(claims()).then((t) => tamper(t, 2)), 'invalid_token'],
    ['tampered payload (sub ann → bob)', sign(claims()).then((t) => { const [h, , s] = t.split('.'); return `${h}.${b64url(claims({ sub: 'bob' }))}.${s}` }), 'invalid_token'],
    ['signature stripped', sign(claims()).then((t) => `${t.split('.').slice(0, 2).join('.')}.`), 'invalid_token'],
    ['not base64 at all', 'e30.e30.!!!', 'invalid_token'],
  ]

  it('refuses forged HS256 app JWTs: alg none, wrong secret, aud, iss, exp, nbf, tampering, RS256 offered', async () => {
    await expectForgeriesRefused(base, await hs(claims()), [
      ...commonForgeries((payload) => hs(payload)),
      ['signed with another secret', hs(claims(), 'not-the-app-secret-0123456789'), 'invalid_token'],
      ['RS256 offered to an HS256-only server', rs(claims()), 'invalid_token'],
      ['HS512 with the right secret (not allowed)', new SignJWT(claims()).setProtectedHeader({ alg: 'HS512' }).sign(new TextEncoder().encode(appJwtSecret)), 'invalid_token'],
      ['signed with the subscription-token secret', hs(claims(), tokenSecret), 'invalid_token'],
      ['HS256 with the app secret claiming iss jobwire', hs({ ...claims(), iss: 'jobwire', aud: 'jobwire:subscription', jti: 'x', rights: ['read'], user: 'ann' }), 'invalid_token'],
    ])
  })

  it('refuses forged RS256 app JWTs against a PEM key, including HS256 signed with the public key as secret', async () => {
    await expectForgeriesRefused(pemServer.url, await rs(claims()), [
      ...commonForgeries((payload) => rs(payload)),
      ['HS/RS confusion: HS256 signed with the RSA public key PEM', hs(claims(), pem), 'invalid_token'],
      ['HS/RS confusion: PEM without its trailing newline', hs(claims(), pem.trim()), 'invalid_token'],
      ['signed with another RSA key', rs(claims(), attacker.privateKey), 'invalid_token'],
      ['another RSA key, its public key embedded as jwk', exportJWK(attacker.publicKey).then((jwk) => rs(claims(), attacker.privateKey, { jwk })), 'invalid_token'],
    ])
  })

  it('refuses forged RS256 app JWTs against a JWKS file: unknown kid, embedded jwk, jku, confusion', async () => {
    const attackerJwk = await exportJWK(attacker.publicKey)
    await expectForgeriesRefused(jwksServer.url, await rs(claims()), [
      ...commonForgeries((payload) => rs(payload)),
      ['unknown kid', rs(claims(), signing.privateKey, { kid: 'rotated-out' }), 'invalid_token'],
      ['unknown kid, another key', rs(claims(), attacker.privateKey, { kid: 'attacker' }), 'invalid_token'],
      ['the known kid, another key', rs(claims(), attacker.privateKey, { kid }), 'invalid_token'],
      ['embedded jwk header with its own key', rs(claims(), attacker.privateKey, { kid, jwk: attackerJwk }), 'invalid_token'],
      ['jku header pointing at a key set it controls', rs(claims(), attacker.privateKey, { kid: 'attacker', jku: 'http://127.0.0.1:9/jwks.json' }), 'invalid_token'],
      ['HS/RS confusion: HS256 signed with the RSA public key PEM', hs(claims(), pem, { kid }), 'invalid_token'],
      ['HS256 signed with the JWK modulus', hs(claims(), String((await exportJWK(signing.publicKey)).n), { kid }), 'invalid_token'],
    ])
  })

  it('app JWTs are for people: no minting, creating, key management or metrics', async () => {
    const credential = await rs(claims())
    const server = jwksServer.url
    refused('mint a token', await send('POST', `${server}/v1/tokens`, { credential, body: { tenant: 'acme', user: 'ann' } }), 'forbidden')
    refused('create a job', await send('POST', `${server}/v1/jobs`, { credential, body: { type: 'x', owner: { tenant: 'acme', user: 'ann' } } }), 'forbidden')
    refused('create a key', await send('POST', `${server}/v1/keys`, { credential, body: { name: 'x', role: 'admin' } }), 'forbidden')
    refused('read metrics', await send('GET', `${server}/metrics`, { credential }), 'forbidden')
    refused('app JWTs on a server with none configured', await send('GET', `${base}/v1/jobs`, { credential }), 'invalid_token')
  })
})

describe('subscription tokens from elsewhere', () => {
  it('refuses subscription tokens signed with a wrong secret or algorithm, or missing their scope', async () => {
    const job = await createJob(base, { tenant: 'acme', user: 'ann' })
    const exp = nowSeconds() + 300
    const scope = { jobs: [job.id], rights: ['read'] }
    allowed('the control', await send('GET', `${base}/v1/jobs/${job.id}`, { credential: await signSubscription(scope, exp) }))
    const forgeries: [string, string, ErrorCode][] = [
      ['signed with a wrong secret', await signSubscription(scope, exp, 'not-the-token-secret-0123456789abcdef'), 'invalid_token'],
      ['signed with the app JWT secret', await signSubscription(scope, exp, appJwtSecret), 'invalid_token'],
      ['HS512 with the right secret', await new SignJWT({ ...scope, jti: 'j' }).setProtectedHeader({ alg: 'HS512' }).setIssuer('jobwire').setAudience('jobwire:subscription').setExpirationTime(exp).sign(new TextEncoder().encode(tokenSecret)), 'invalid_token'],
      ['wrong audience', await new SignJWT({ ...scope, jti: 'j' }).setProtectedHeader({ alg: 'HS256' }).setIssuer('jobwire').setAudience('jobwire:admin').setExpirationTime(exp).sign(new TextEncoder().encode(tokenSecret)), 'invalid_token'],
      ['no jti', await new SignJWT(scope).setProtectedHeader({ alg: 'HS256' }).setIssuer('jobwire').setAudience('jobwire:subscription').setExpirationTime(exp).sign(new TextEncoder().encode(tokenSecret)), 'invalid_token'],
      ['no scope at all', await signSubscription({ rights: ['read'] }, exp), 'invalid_token'],
      ['no rights', await signSubscription({ jobs: [job.id] }, exp), 'invalid_token'],
      ['a right that does not exist', await signSubscription({ jobs: [job.id], rights: ['admin'] }, exp), 'invalid_token'],
      ['expired a minute ago', await signSubscription(scope, nowSeconds() - 60), 'token_expired'],
      ['alg none', unsignedSubscription({ ...scope, iss: 'jobwire', aud: 'jobwire:subscription', jti: 'j', exp }), 'invalid_token'],
      ['tampered job list', (await signSubscription(scope, exp)).replace(/^([^.]+)\.[^.]+\./, (_, h: string) => `${h}.${b64url({ ...scope, jobs: [job.id, 'job_other'], iss: 'jobwire', aud: 'jobwire:subscription', jti: 'j', exp })}.`), 'invalid_token'],
    ]
    for (const [what, credential, code] of forgeries) {
      refused(what, await send('GET', `${base}/v1/jobs/${job.id}`, { credential }), code)
      await refusedStream(`${what} (stream)`, streamPath(base, job.id), credential, 'query', code)
    }
  })

  it('accepts a token minted offline by @jobwire/backend with the server secret, and only for its jobs', async () => {
    const job = await createJob(base, { tenant: 'acme', user: 'ann' })
    const other = await createJob(base, { tenant: 'acme', user: 'ann' })
    const { token, expiresAt } = mintSubscriptionToken({ secret: tokenSecret, jobIds: [job.id], ttlSeconds: 60 })
    expect(Date.parse(expiresAt)).toBeGreaterThan(Date.now())
    allowed('read its job', await send('GET', `${base}/v1/jobs/${job.id}`, { credential: token, via: 'query' }))
    const connection = await openStream(streamPath(base, job.id), token, 'query')
    const [first] = await within(collect(connection.messages(), () => true), 'the first message')
    expect(first).toMatchObject({ type: 'snapshot', job: { id: job.id } })
    connection.close()
    const userToken = mintSubscriptionToken({ secret: tokenSecret, tenant: 'acme', user: 'ann' }).token
    allowed("a user token reads the user's job", await send('GET', `${base}/v1/jobs/${other.id}`, { credential: userToken }))

    refused('the offline token on another job', await send('GET', `${base}/v1/jobs/${other.id}`, { credential: token }), 'job_not_found')
    await refusedStream('the offline token on another job (stream)', streamPath(base, other.id), token, 'query', 'job_not_found')
    const wrong = mintSubscriptionToken({ secret: 'x'.repeat(40), jobIds: [job.id] }).token
    refused('an offline token minted with a wrong secret', await send('GET', `${base}/v1/jobs/${job.id}`, { credential: wrong }), 'invalid_token')
    const old = mintSubscriptionToken({ secret: tokenSecret, jobIds: [job.id], ttlSeconds: 30, now: Date.now() - 120_000 }).token
    refused('an offline token that expired', await send('GET', `${base}/v1/jobs/${job.id}`, { credential: old }), 'token_expired')
  })
})

describe('revocation and expiry on open streams', () => {
  it('revoking an API key ends its open streams with an error event, and later requests get 401', async () => {
    const { id, key } = await createKey(base, { name: 'to-revoke', role: 'backend' })
    const job = await createJob(base, null)
    const viaHeader = await openStream(streamPath(base, job.id), key, 'header')
    const viaQuery = await openStream(streamPath(base, job.id), key, 'query')
    const first = [viaHeader.messages(), viaQuery.messages()]
    for (const messages of first) await within(collect(messages, (m) => m.type === 'snapshot'), 'the snapshot')

    allowed('revoke', await send('DELETE', `${base}/v1/keys/${id}`, { credential: testApiKey }))
    // Written after the revocation was acknowledged: no stream of the revoked key may carry it.
    await append(base, job.id, [{ type: 'progress', message: 'after revocation' }])
    for (const [index, connection] of [viaHeader, viaQuery].entries()) {
      const rest = await within(collect(first[index] as AsyncIterator<StreamMessage>), 'the revoked stream to end')
      await within(connection.ended, 'the socket to close')
      const leaked = rest.filter((m) => m.type === 'event')
      attempt(`open stream #${index + 1} keeps delivering after revocation`, leaked.length > 0, JSON.stringify(leaked))
      expect(leaked).toEqual([])
      expect(rest.at(-1)).toMatchObject({ type: 'error', error: { code: 'unauthorized' } })
    }
    refused('read with the revoked key', await send('GET', `${base}/v1/jobs/${job.id}`, { credential: key }), 'unauthorized')
    refused('list with the revoked key', await send('GET', `${base}/v1/jobs`, { credential: key, via: 'query' }), 'unauthorized')
    refused('create with the revoked key', await send('POST', `${base}/v1/jobs`, { credential: key, body: { type: 'x' } }), 'unauthorized')
    refused('mint with the revoked key', await send('POST', `${base}/v1/tokens`, { credential: key, body: { jobIds: [job.id] } }), 'unauthorized')
    await refusedStream('reopen a stream with the revoked key', streamPath(base, job.id), key, 'header', 'unauthorized')
    const listed = (await send('GET', `${base}/v1/keys`, { credential: testApiKey })).body as { keys: { id: string; revokedAt: string | null }[] }
    expect(listed.keys.find((k) => k.id === id)?.revokedAt).toEqual(expect.any(String))
  })

  // Regression: a revocation landing between authentication and the stream's registration left it open for good.
  it('a key revoked while its stream is still opening (a slow store) has that stream closed too', async () => {
    let release: () => void = () => {}
    let reached: () => void = () => {}
    let gate: Promise<void> | null = null
    const entered = new Promise<void>((resolve) => (reached = resolve))
    class SlowStore extends MemoryStore {
      override async getJob(id: string): Promise<JobState | null> {
        if (gate !== null) {
          reached()
          await gate
        }
        return super.getJob(id)
      }
    }
    const server = await startServer({ logger: false, store: new SlowStore(), config: { apiKey: testApiKey, port: 0, host: '127.0.0.1', memory: true } })
    let connection: SseConnection | null = null
    try {
      const { id, key } = await createKey(server.url, { name: 'racing', role: 'backend' })
      const job = await createJob(server.url, null)
      gate = new Promise<void>((resolve) => (release = resolve))
      const opening = stream(streamPath(server.url, job.id), key, 'header')
      await within(entered, 'the stream request to reach the store')
      allowed('revoke while the stream opens', await send('DELETE', `${server.url}/v1/keys/${id}`, { credential: testApiKey }))
      gate = null
      release()
      connection = await opening
      const messages = connection.status === 200 ? connection.messages() : null
      const ended = messages === null ? true : await within(collect(messages).then(() => true), 'the stream to end', 3_000).catch(() => false)
      attempt('a stream opened with a key revoked meanwhile stays open', !ended, `HTTP ${connection.status} ${connection.raw.slice(-200)}`)
      expect(ended).toBe(true)
      if (connection.status === 200) expect(connection.raw).toContain('"code":"unauthorized"')
    } finally {
      release()
      connection?.close()
      await server.close()
    }
  })

  it('a token that expires mid-stream gets token_expired and the stream ends; a fresh token with Last-Event-ID resumes with exact seqs', async () => {
    const job = await createJob(base, { tenant: 'acme', user: 'ann' })
    // A 2-3 s token, signed with the server's secret: the API's minimum ttl is 10 s.
    const exp = nowSeconds() + 3
    const shortLived = await signSubscription({ jobs: [job.id], rights: ['read'] }, exp)
    const first = await openStream(streamPath(base, job.id), shortLived, 'query')
    const firstMessages = first.messages()
    const headBefore = await append(base, job.id, [{ type: 'progress', percent: 1 }, { type: 'progress', percent: 2 }, { type: 'chunk', text: 'before ' }])
    const before = await within(collect(firstMessages, (m) => m.type === 'error'), 'token_expired on the stream')
    const errorAt = Date.now()
    await within(first.ended, 'the expired stream to close')
    console.log(`security: token_expired arrived ${errorAt - exp * 1000} ms after exp`)
    expect(before.at(-1)).toMatchObject({ type: 'error', error: { code: 'token_expired' } })
    expect(before[0]).toMatchObject({ type: 'snapshot', job: { seq: 1 } })
    const lastSeen = first.lastEventId
    expect(lastSeen).toBe(String(headBefore))

    // Written while no stream is open.
    await append(base, job.id, [{ type: 'progress', percent: 3 }, { type: 'chunk', text: 'after' }])

    // Regression: inside the verifier's clock tolerance the expired token reopened the stream and
    // got the events written after exp before being cut off.
    const reuse = await stream(streamPath(base, job.id), shortLived, 'query', { 'last-event-id': String(lastSeen) })
    const reused = reuse.status === 200 ? await within(collect(reuse.messages()), 'the reused stream to end') : []
    const leaked = reused.filter((m) => m.type === 'event' || m.type === 'snapshot')
    attempt('reconnect with the expired token', leaked.length > 0, `HTTP ${reuse.status}: ${JSON.stringify(leaked).slice(0, 200)}`)
    expect(leaked).toEqual([])
    reuse.close()

    const fresh = await mint(base, { jobIds: [job.id] })
    const second = await openStream(streamPath(base, job.id), fresh, 'query', { 'last-event-id': String(lastSeen) })
    const secondMessages = second.messages()
    const head = await append(base, job.id, [{ type: 'completed', result: { ok: true } }])
    const after = await within(collect(secondMessages, (m) => m.type === 'event' && m.event.type === 'completed'), 'the resumed stream')
    second.close()
    expect(after[0]).toEqual({ type: 'recovered', after: headBefore })
    const seqs = [...seqsOf(before), ...seqsOf(after)]
    // Seq 1 came as the snapshot; every later event arrives exactly once, in order.
    expect(seqs).toEqual(Array.from({ length: head - 1 }, (_, i) => i + 2))
  })
})

describe('limits', () => {
  it('job creation trips at 10 per owner per window with 429 and Retry-After, per owner, and recovers', async () => {
    const server = await startTestServer({ createWindow: '2s' })
    try {
      const create = (user: string) => send('POST', `${server.url}/v1/jobs`, { credential: testApiKey, body: { type: 'rate', owner: { tenant: 'acme', user } } })
      for (let i = 1; i <= 10; i++) allowed(`creation ${i}`, await create('ann'), 201)
      const eleventh = await create('ann')
      const error = refused('the 11th creation in the window', eleventh, 'rate_limited')
      expect(error.details).toMatchObject({ max: 10 })
      const retryAfter = Number(eleventh.headers['retry-after'])
      expect(retryAfter).toBeGreaterThanOrEqual(1)
      expect(retryAfter).toBeLessThanOrEqual(2)
      refused('the 12th creation in the window', await create('ann'), 'rate_limited')
      allowed('another owner is counted apart', await create('bob'), 201)
      await sleep(retryAfter * 1000 + 100)
      allowed('after Retry-After', await create('ann'), 201)
      const metrics = await send('GET', `${server.url}/metrics`, { credential: testApiKey })
      expect(metrics.text).toMatch(/jobwire_limit_rejections_total\{limit="create_per_user"\} 2\b/)
    } finally {
      await server.close()
    }
  })

  it('the 6th stream of one user gets 429 too_many_streams; closing one frees a slot', async () => {
    await withStreams({ tokenSecret }, async (server, open) => {
      const job = await createJob(server.url, { tenant: 'acme', user: 'ann' })
      const annToken = await mint(server.url, { tenant: 'acme', user: 'ann' })
      for (let i = 0; i < 5; i++) open.push(await openStream(streamPath(server.url, job.id), annToken, 'query'))
      const sixth = await refusedStream('a 6th stream for ann', streamPath(server.url, job.id), annToken, 'query', 'too_many_streams')
      expect(sixth.error?.details).toMatchObject({ max: 5, scope: 'this user' })
      expect(Number(sixth.headers['retry-after'])).toBeGreaterThan(0)
      const otherToken = mintSubscriptionToken({ secret: tokenSecret, tenant: 'acme', user: 'ann' }).token
      await refusedStream('a 6th stream for ann with another token', streamPath(server.url, job.id), otherToken, 'header', 'too_many_streams')
      await refusedStream('a 6th stream for ann by cookie', streamPath(server.url, job.id), annToken, 'cookie', 'too_many_streams')
      allowed('other requests of ann still work', await send('GET', `${server.url}/v1/jobs/${job.id}`, { credential: annToken }))
      const bob = await mint(server.url, { tenant: 'acme', user: 'bob' })
      const bobJob = await createJob(server.url, { tenant: 'acme', user: 'bob' })
      const bobStream = await openStream(streamPath(server.url, bobJob.id), bob, 'query')
      bobStream.close()

      open.shift()?.close()
      // The server learns of the close asynchronously; retry until the slot is free (bounded).
      let reopened: SseConnection | null = null
      for (let i = 0; i < 50 && reopened === null; i++) {
        const connection = await stream(streamPath(server.url, job.id), annToken, 'query')
        if (connection.status === 200) reopened = connection
        else await sleep(50)
      }
      expect(reopened, 'a slot freed by closing a stream').not.toBeNull()
      open.push(reopened as SseConnection)
      const metrics = await send('GET', `${server.url}/metrics`, { credential: testApiKey })
      expect(metrics.text).toMatch(/jobwire_limit_rejections_total\{limit="streams_per_user"\} [1-9]/)
    })
  })

  it('streams per IP trip across users from one address; API keys are not counted per IP', async () => {
    await withStreams({ tokenSecret, streamsPerIp: 3 }, async (server, open) => {
      const users = ['u1', 'u2', 'u3', 'u4']
      const jobs = await Promise.all(users.map((user) => createJob(server.url, { tenant: 'acme', user })))
      const tokens = await Promise.all(users.map((user) => mint(server.url, { tenant: 'acme', user })))
      for (let i = 0; i < 3; i++) open.push(await openStream(streamPath(server.url, (jobs[i] as JobState).id), tokens[i] as string, 'query'))
      const { error, headers } = await refusedStream('a 4th stream from this address (another user)', streamPath(server.url, (jobs[3] as JobState).id), tokens[3] as string, 'query', 'too_many_streams')
      expect(Number(headers['retry-after'])).toBeGreaterThan(0)
      expect(error?.details).toMatchObject({ max: 3, scope: 'this address' })
      open.push(await openStream(streamPath(server.url, (jobs[3] as JobState).id), testApiKey, 'header'))
      const metrics = await send('GET', `${server.url}/metrics`, { credential: testApiKey })
      expect(metrics.text).toMatch(/jobwire_limit_rejections_total\{limit="streams_per_ip"\} 1\b/)
    })
  })

  it('the connection cap answers 503 server_busy with Retry-After, whoever asks', async () => {
    await withStreams({ maxConnections: 2 }, async (server, open) => {
      const job = await createJob(server.url, null)
      for (let i = 0; i < 2; i++) open.push(await openStream(streamPath(server.url, job.id), testApiKey))
      const busy = await refusedStream('a 3rd stream on a full node', streamPath(server.url, job.id), testApiKey, 'header', 'server_busy')
      expect(busy.headers['retry-after']).toBe('1')
      const token = await mint(server.url, { jobIds: [job.id] })
      await refusedStream('a 3rd stream on a full node, by a token', streamPath(server.url, job.id), token, 'query', 'server_busy')
      allowed('plain requests still work', await send('GET', `${server.url}/v1/jobs/${job.id}`, { credential: testApiKey }))
      const metrics = await send('GET', `${server.url}/metrics`, { credential: testApiKey })
      expect(metrics.text).toMatch(/jobwire_limit_rejections_total\{limit="connections"\} 2\b/)
    })
  })

  it('oversized bodies, events, batches and text get 413 and append nothing', async () => {
    // The single-job events route takes bodies up to maxValueBytes + 64 KiB (a large result); every other route maxBodyBytes.
    const server = await startTestServer({ maxBodyBytes: 2048, maxEventBytes: 512, maxValueBytes: 1024, maxBatchEvents: 10, maxTextLength: 100 })
    const eventsBodyLimit = 1024 + 64 * 1024
    try {
      const job = await createJob(server.url, null)
      const events = `${server.url}/v1/jobs/${job.id}/events`
      const key = { credential: testApiKey }
      refused('a body over the events route limit', await send('POST', events, { ...key, raw: JSON.stringify({ type: 'chunk', text: 'x'.repeat(eventsBodyLimit) }) }), 'payload_too_large')
      refused('a bulk write over maxBodyBytes', await send('POST', `${server.url}/v1/events`, { ...key, body: { writes: [{ jobId: job.id, events: [{ type: 'chunk', text: 'x'.repeat(4096) }] }] } }), 'payload_too_large')
      async function* chunked(): AsyncIterable<Buffer> {
        yield Buffer.from('{"type":"chunk","text":"')
        for (let i = 0; i < 80; i++) yield Buffer.alloc(1024, 'y')
        yield Buffer.from('"}')
      }
      refused('a chunked body over maxBodyBytes (no Content-Length)', await send('POST', events, { ...key, raw: Readable.from(chunked()) }), 'payload_too_large')
      refused('a job input over maxBodyBytes', await send('POST', `${server.url}/v1/jobs`, { ...key, body: { type: 'big', input: 'z'.repeat(4096) } }), 'payload_too_large')
      refused('a token request over maxBodyBytes', await send('POST', `${server.url}/v1/tokens`, { ...key, body: { jobIds: Array.from({ length: 200 }, () => job.id) } }), 'payload_too_large')
      refused('one event over maxEventBytes', await send('POST', events, { ...key, body: { type: 'progress', message: 'm'.repeat(600) } }), 'event_too_large')
      refused('a checkpoint over maxValueBytes', await send('POST', events, { ...key, body: { type: 'checkpoint', data: { blob: 'c'.repeat(1100) } } }), 'value_too_large')
      refused('a result over maxValueBytes', await send('POST', events, { ...key, body: { type: 'completed', result: 'r'.repeat(1100) } }), 'value_too_large')
      refused('a batch over maxBatchEvents', await send('POST', events, { ...key, body: { events: Array.from({ length: 11 }, () => ({ type: 'progress' })) } }), 'batch_too_large')
      refused('a good batch with one oversized event', await send('POST', events, { ...key, body: { events: [{ type: 'progress', percent: 1 }, { type: 'item', id: 'i', message: 'm'.repeat(600) }] } }), 'event_too_large')
      expect((await send('GET', `${server.url}/v1/jobs/${job.id}`, key)).body).toMatchObject({ seq: job.seq, text: '' })
      const head = await append(server.url, job.id, [{ type: 'chunk', text: 'a'.repeat(90) }])
      refused('text beyond maxTextLength', await send('POST', events, { ...key, body: { type: 'chunk', text: 'b'.repeat(20) } }), 'text_limit_exceeded')
      expect((await send('GET', `${server.url}/v1/jobs/${job.id}`, key)).body).toMatchObject({ seq: head, text: 'a'.repeat(90) })
      // Without a credential the body is never read: the answer is 401, not 413.
      refused('an oversized body without a credential', await send('POST', events, { raw: 'q'.repeat(4096) }), 'unauthorized')
    } finally {
      await server.close()
    }
  })
})

describe('bounded input and exact stream limits', () => {
  const deep = (depth: number): string => '['.repeat(depth) + ']'.repeat(depth)

  it('JSON nested thousands deep is refused before it is stored, on every write route, and leaves no poison job', async () => {
    const job = await createJob(base, { tenant: 'acme', user: 'ann' })
    await append(base, job.id, [{ type: 'started' }])
    const before = (await send('GET', `${base}/v1/jobs?type=poison&limit=200`, { credential: testApiKey })).body as { jobs: unknown[] }
    refused('a job whose input nests 6,000 deep', await send('POST', `${base}/v1/jobs`, { credential: testApiKey, raw: `{"type":"poison","input":${deep(6000)}}` }), 'invalid_request')
    const after = (await send('GET', `${base}/v1/jobs?type=poison&limit=200`, { credential: testApiKey })).body as { jobs: unknown[] }
    attempt('the deep job was stored anyway', after.jobs.length !== before.jobs.length, JSON.stringify(after.jobs).slice(0, 160))
    refused('a checkpoint nested 4,100 deep', await send('POST', `${base}/v1/jobs/${job.id}/events`, { credential: testApiKey, raw: `{"type":"checkpoint","data":${deep(4100)}}` }), 'invalid_request')
    refused(
      'a bulk write whose terminal event nests 5,000 deep',
      await send('POST', `${base}/v1/events`, { credential: testApiKey, raw: `{"writes":[{"jobId":"${job.id}","events":[{"type":"completed","result":${deep(5000)}}]}]}` }),
      'invalid_request',
    )
    const state = (await send('GET', `${base}/v1/jobs/${job.id}`, { credential: testApiKey })).body as JobState
    attempt('a deep event was appended anyway', state.seq !== 2, `seq ${state.seq}`)
  })

  it('repeated credentials and positions in the query string are refused, not guessed at', async () => {
    const job = await createJob(base, { tenant: 'acme', user: 'ann' })
    const token = await mint(base, { jobIds: [job.id] })
    refused('two access tokens', await send('GET', `${base}/v1/jobs/${job.id}?access_token=${token}&access_token=${testApiKey}`), 'invalid_request')
    refused('two positions', await send('GET', `${base}/v1/jobs/${job.id}/events?after=1&after=0`, { credential: token }), 'invalid_request')
  })

  it('a tenant with a ":" or a control character cannot be created or minted for (no owner can pass for another)', async () => {
    refused('a tenant with a colon', await send('POST', `${base}/v1/jobs`, { credential: testApiKey, body: { type: 'owner', owner: { tenant: 'acme:ann', user: 'x' } } }), 'invalid_request')
    refused('a user with a newline', await send('POST', `${base}/v1/jobs`, { credential: testApiKey, body: { type: 'owner', owner: { tenant: 'acme', user: 'ann\nbob' } } }), 'invalid_request')
    refused('a token for a tenant with a colon', await send('POST', `${base}/v1/tokens`, { credential: testApiKey, body: { tenant: 'acme:ann', user: 'x' } }), 'invalid_request')
  })

  it('one person holding 8 per-job tokens minted for them gets 5 streams, with long-polls counted among them', async () => {
    await withStreams({ tokenSecret }, async (server, open) => {
      const ann = { tenant: 'acme', user: 'ann' }
      const jobs = await Promise.all(Array.from({ length: 8 }, () => createJob(server.url, ann)))
      const tokens = await Promise.all(jobs.map((job) => mint(server.url, { jobIds: [job.id], ...ann })))
      const answers = await Promise.all(jobs.map((job, i) => stream(streamPath(server.url, job.id), tokens[i] as string, 'query')))
      open.push(...answers)
      const admitted = answers.filter((a) => a.status === 200).length
      attempt('more than 5 streams for one person over per-job tokens', admitted > 5, `${admitted} admitted`)
      expect(admitted).toBe(5)
      const poll = await send('GET', `${server.url}/v1/jobs/${(jobs[0] as JobState).id}/events?after=1&wait=5`, { credential: tokens[0] as string })
      refused('a long-poll past the stream limit', poll, 'too_many_streams')
    })
  })

  it('a WebSocket refresh_token cannot move a socket onto a person who has no streams left', async () => {
    await withStreams({ tokenSecret, streamsPerUser: 1 }, async (server, open) => {
      const bob = { tenant: 'acme', user: 'bob' }
      const bobJob = await createJob(server.url, bob)
      const bobToken = await mint(server.url, bob)
      open.push(await openStream(streamPath(server.url, bobJob.id), bobToken, 'query'))
      const socket = await openWs(wsUrl(server.url), { token: await mint(server.url, { tenant: 'acme', user: 'ann' }) })
      open.push(socket)
      await socket.next((m) => m.type === 'welcome')
      socket.send({ type: 'refresh_token', token: bobToken, ref: 'move' })
      const answer = await socket.next((m) => (m.type === 'error' || m.type === 'token_refreshed') && m.ref === 'move')
      attempt('a refresh onto bob past his stream limit', answer.type === 'token_refreshed', JSON.stringify(answer).slice(0, 160))
      expect(answer).toMatchObject({ type: 'error', error: { code: 'too_many_streams' } })
      // The socket is still ann's: bob's job stays out of its reach.
      socket.send({ type: 'subscribe', jobId: bobJob.id })
      const refusedSubscribe = await socket.next((m) => m.type === 'error' && m.jobId === bobJob.id)
      attempt("bob's job through the refused refresh", refusedSubscribe.type !== 'error', JSON.stringify(refusedSubscribe).slice(0, 160))
    })
  })

  it('the connection cap admits exactly its number of streams opened at once', async () => {
    await withStreams({ tokenSecret, maxConnections: 10 }, async (server, open) => {
      const owners = Array.from({ length: 20 }, (_, i) => ({ tenant: 'acme', user: `p${i}` }))
      const jobs = await Promise.all(owners.map((owner) => createJob(server.url, owner)))
      const tokens = await Promise.all(owners.map((owner) => mint(server.url, owner)))
      const answers = await Promise.all(jobs.map((job, i) => stream(streamPath(server.url, job.id), tokens[i] as string, 'query')))
      open.push(...answers)
      const admitted = answers.filter((a) => a.status === 200).length
      attempt('more streams than --max-connections', admitted > 10, `${admitted} admitted`)
      expect(admitted).toBe(10)
    })
  })
})

describe('SSE framing', () => {
  /** Payloads that would forge frames or fields if any byte of them reached the stream unescaped. */
  const forgeries = [
    '\r\n\r\nevent: completed\ndata: {"type":"completed","seq":999}\n\n',
    'x\nid: 999\nevent: failed\ndata: {}\n\n',
    'x\rid: 998\revent: completed\rdata: {}\r\r',
    '\n\nretry: 1\n\n',
    ':comment\n\nevent: error\ndata: {"code":"token_expired"}\n\n',
    'data: injected\r\ndata: more\r\n\r\n',
    'id\nid:\nevent:\ndata:\n\n',
    '\u2028\u2029\u0085 unicode line separators',
    'nul \u0000 byte\n\n',
  ]

  it('CR/LF in chunk text, item ids, stage names and messages cannot forge an SSE frame or field', async () => {
    const job = await createJob(base, null)
    const connection = await openStream(streamPath(base, job.id), testApiKey)
    const messages = connection.messages()
    const sent: Record<string, unknown>[] = [{ type: 'started', worker: forgeries[0] }]
    for (const payload of forgeries) {
      sent.push(
        { type: 'progress', stage: payload, message: payload, percent: 1 },
        { type: 'item', id: payload, label: payload, message: payload, status: 'running' },
        { type: 'chunk', text: payload },
        { type: 'checkpoint', data: { note: payload, [payload]: payload } },
      )
    }
    sent.push({ type: 'failed', code: forgeries[1], message: forgeries[0] })
    // Several requests, so events reach the stream both alone and in runs.
    for (let i = 0; i < sent.length; i += 7) await append(base, job.id, sent.slice(i, i + 7))
    const received = await within(collect(messages, (m) => m.type === 'event' && m.event.type === 'failed'), 'the failed event')
    connection.close()

    const { frames, violations } = strictFrames(connection.raw)
    attempt('a line that is not a well-formed field, or a frame that is not one JSON data line', violations.length > 0, violations.join(' | ').slice(0, 300))
    expect(violations).toEqual([])
    // One attempt per injected event: its frame must be exactly it, no more frames, no fewer.
    const eventFrames = frames.filter((f) => f.event !== 'snapshot' && f.event !== 'queue' && f.event !== 'recovered')
    sent.forEach((event, index) => {
      const frame = eventFrames[index]
      const data = frame === undefined ? undefined : (JSON.parse(frame.data) as { type: string; seq: number })
      const seq = index + 2
      const forged = frame === undefined || data === undefined || frame.id !== String(seq) || frame.event !== event.type || data.type !== event.type || data.seq !== seq
      attempt(`a ${String(event.type)} event carrying CR/LF (seq ${seq})`, forged, JSON.stringify(frame ?? null).slice(0, 200))
      expect(forged, JSON.stringify(frame)).toBe(false)
    })
    attempt('frames beyond the events written', eventFrames.length > sent.length, `${eventFrames.length} frames for ${sent.length} events`)
    expect(eventFrames.length).toBe(sent.length)
    // And every payload comes back exactly as it was sent.
    const events = received.flatMap((m) => (m.type === 'event' ? [m.event] : []))
    expect(events.map((e) => e.type)).toEqual(sent.map((e) => e.type))
    expect(events.filter((e) => e.type === 'chunk').map((e) => (e.data as { text: string }).text)).toEqual(forgeries)
    expect(events.filter((e) => e.type === 'progress').map((e) => (e.data as { stage: string }).stage)).toEqual(forgeries)
    expect(events.filter((e) => e.type === 'item').map((e) => (e.data as { id: string }).id)).toEqual(forgeries)
    expect(events.filter((e) => e.type === 'checkpoint').map((e) => (e.data as { data: unknown }).data)).toEqual(sent.filter((e) => e.type === 'checkpoint').map((e) => e.data))
  })

  it('a producer-reported failure cannot forge an in-band error event', async () => {
    const job = await createJob(base, null)
    const token = await signSubscription({ jobs: [job.id], rights: ['read'] }, nowSeconds() + 300)
    const connection = await openStream(streamPath(base, job.id), token, 'query')
    const messages = connection.messages()
    await append(base, job.id, [{ type: 'failed', code: 'x\n\nevent: error\ndata: {"code":"unauthorized"}', message: 'm\r\n\r\nevent: error\ndata: {}' }])
    const received = await within(collect(messages, (m) => m.type === 'event' && m.event.type === 'failed'), 'the failed event')
    connection.close()
    const { frames, violations } = strictFrames(connection.raw)
    const forged = received.filter((m) => m.type === 'error').length + frames.filter((f) => f.event === 'error').length
    attempt('a forged error event', forged > 0 || violations.length > 0, `${forged} error frames; ${violations.join(' | ')}`)
    expect(forged).toBe(0)
    expect(violations).toEqual([])
  })
})

interface Frame {
  id?: string
  event?: string
  data: string
}

const knownFrameEvents = new Set<string>([...eventTypes, 'snapshot', 'recovered', 'queue', 'error'])

/**
 * Parses an SSE body strictly, as an attacker would hope it parses loosely: only `id`, `event`,
 * `data`, `retry` and comments; no CR; one JSON data line per frame; ids are seqs; known events.
 */
function strictFrames(raw: string): { frames: Frame[]; violations: string[] } {
  const frames: Frame[] = []
  const violations: string[] = []
  if (raw.includes('\r')) violations.push(`a CR at ${raw.indexOf('\r')}`)
  let current: { id?: string; event?: string; data: string[] } = { data: [] }
  for (const line of raw.split(/\r\n|\r|\n/)) {
    if (line === '') {
      if (current.data.length > 1) violations.push(`a frame with ${current.data.length} data lines`)
      if (current.data.length > 0) {
        frames.push({ data: current.data[0] as string, ...(current.id === undefined ? {} : { id: current.id }), ...(current.event === undefined ? {} : { event: current.event }) })
      } else if (current.id !== undefined || current.event !== undefined) violations.push(`fields without data: ${JSON.stringify(current)}`)
      current = { data: [] }
      continue
    }
    if (line.startsWith(':')) continue
    const match = /^(id|event|data|retry): ([\s\S]*)$/.exec(line)
    if (match === null) {
      violations.push(`not a field: ${JSON.stringify(line.slice(0, 80))}`)
      continue
    }
    const [, field, value] = match as unknown as [string, string, string]
    if (field === 'data') {
      current.data.push(value)
      try {
        JSON.parse(value)
      } catch {
        violations.push(`data that is not JSON: ${JSON.stringify(value.slice(0, 80))}`)
      }
    } else if (field === 'id') {
      if (!/^\d+$/.test(value) || current.id !== undefined) violations.push(`id ${JSON.stringify(value.slice(0, 40))}`)
      current.id = value
    } else if (field === 'event') {
      if (!knownFrameEvents.has(value) || current.event !== undefined) violations.push(`event ${JSON.stringify(value.slice(0, 40))}`)
      current.event = value
    } else if (!/^\d+$/.test(value)) violations.push(`retry ${JSON.stringify(value.slice(0, 40))}`)
  }
  return { frames, violations }
}

describe('browsers: CORS, cookies and caching', () => {
  let star: TestServer

  beforeAll(async () => {
    star = await startTestServer({ corsOrigins: `*,${allowedOrigin}` })
  })

  afterAll(async () => {
    await star?.close()
  })

  it('echoes an allowed origin with credentials, gives an unknown origin no ACAO, and never pairs * with credentials', async () => {
    const good = await send('GET', `${base}/v1/jobs?limit=1`, { credential: testApiKey, headers: { origin: allowedOrigin } })
    expect(good.headers['access-control-allow-origin']).toBe(allowedOrigin)
    expect(good.headers['access-control-allow-credentials']).toBe('true')
    expect(String(good.headers.vary)).toMatch(/origin/i)
    for (const origin of ['https://evil.example', 'https://app.example.evil.example', 'http://app.example', 'null', `${allowedOrigin}:8443`]) {
      const answer = await send('GET', `${base}/v1/jobs?limit=1`, { credential: testApiKey, headers: { origin } })
      const acao = answer.headers['access-control-allow-origin']
      attempt(`CORS for ${origin}`, acao !== undefined || answer.headers['access-control-allow-credentials'] !== undefined, `ACAO ${String(acao)}`)
      expect(acao).toBeUndefined()
    }
    for (const origin of ['https://evil.example', 'null']) {
      const answer = await send('GET', `${star.url}/v1/jobs?limit=1`, { credential: testApiKey, headers: { origin } })
      expect(answer.headers['access-control-allow-origin']).toBe('*')
      attempt(`* with credentials for ${origin}`, answer.headers['access-control-allow-credentials'] !== undefined, String(answer.headers['access-control-allow-credentials']))
      expect(answer.headers['access-control-allow-credentials']).toBeUndefined()
    }
    const listed = await send('GET', `${star.url}/v1/jobs?limit=1`, { credential: testApiKey, headers: { origin: allowedOrigin } })
    expect(listed.headers['access-control-allow-origin']).toBe(allowedOrigin)
    expect(listed.headers['access-control-allow-credentials']).toBe('true')
  })

  it('answers a preflight from an allowed origin and gives a foreign one nothing to go on', async () => {
    const preflight = (origin: string) =>
      send('OPTIONS', `${base}/v1/jobs`, { headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' } })
    const good = await preflight(allowedOrigin)
    expect(good.status).toBe(204)
    expect(good.headers['access-control-allow-origin']).toBe(allowedOrigin)
    expect(String(good.headers['access-control-allow-methods'])).toContain('POST')
    expect(String(good.headers['access-control-allow-headers'])).toContain('authorization')
    expect(good.headers['access-control-allow-credentials']).toBe('true')
    const streamPreflight = await send('OPTIONS', `${base}/v1/jobs/job_x/stream`, { headers: { origin: allowedOrigin, 'access-control-request-method': 'GET', 'access-control-request-headers': 'last-event-id' } })
    expect(streamPreflight.status).toBe(204)
    const evil = await preflight('https://evil.example')
    attempt('preflight from a foreign origin', evil.status < 300 || evil.headers['access-control-allow-origin'] !== undefined, `HTTP ${evil.status}`)
    expect(evil.headers['access-control-allow-origin']).toBeUndefined()
    expect(evil.headers['access-control-allow-methods']).toBeUndefined()
  })

  it('preflights: the configured methods, headers and max-age; any OPTIONS from an allowed origin; `*` without credentials; the foreign one gets route_not_found', async () => {
    const preflight = (url: string, origin: string, headers: Record<string, string> = { 'access-control-request-method': 'GET' }) =>
      send('OPTIONS', url, { headers: { origin, ...headers } })
    for (const url of [`${base}/v1/jobs/job_x/stream`, `${base}/v1/jobs/job_x/events`, `${base}/metrics`]) {
      const good = await preflight(url, allowedOrigin, { 'access-control-request-method': 'GET', 'access-control-request-headers': 'last-event-id' })
      expect(good.status, url).toBe(204)
      expect(good.text).toBe('')
      expect(good.headers['access-control-allow-origin']).toBe(allowedOrigin)
      expect(good.headers['access-control-allow-credentials']).toBe('true')
      expect(good.headers['access-control-allow-methods']).toBe('GET, POST, DELETE, OPTIONS')
      expect(good.headers['access-control-allow-headers']).toBe('authorization, content-type, last-event-id')
      expect(good.headers['access-control-max-age']).toBe('600')
      expect(String(good.headers.vary)).toMatch(/origin/i)
    }
    // No Access-Control-Request-Method: still answered as a preflight (no 400 outside the error registry).
    const bare = await preflight(`${base}/v1/jobs`, allowedOrigin, {})
    expect(bare.status).toBe(204)
    expect(bare.headers['access-control-allow-origin']).toBe(allowedOrigin)
    const anyOrigin = await preflight(`${star.url}/v1/jobs`, 'https://evil.example', { 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization' })
    expect(anyOrigin.status).toBe(204)
    expect(anyOrigin.headers['access-control-allow-origin']).toBe('*')
    attempt('* preflight with credentials', anyOrigin.headers['access-control-allow-credentials'] !== undefined, String(anyOrigin.headers['access-control-allow-credentials']))
    expect(anyOrigin.headers['access-control-allow-credentials']).toBeUndefined()
    for (const origin of ['https://evil.example', 'null', `${allowedOrigin}.evil.example`]) {
      const evil = await preflight(`${base}/v1/jobs`, origin, { 'access-control-request-method': 'POST' })
      refused(`preflight from ${origin}`, evil, 'route_not_found')
      expect(Object.keys(evil.headers).filter((name) => name.startsWith('access-control-'))).toEqual([])
    }
    // Without an Origin, OPTIONS is no preflight: no route answers it.
    refused('OPTIONS without an Origin', await send('OPTIONS', `${base}/v1/jobs`), 'route_not_found')
  })

  it('a server with no --cors-origins allows no origin at all', async () => {
    const closed = await startTestServer()
    try {
      const read = await send('GET', `${closed.url}/v1/jobs?limit=1`, { credential: testApiKey, headers: { origin: allowedOrigin } })
      expect(read.status).toBe(200)
      expect(Object.keys(read.headers).filter((name) => name.startsWith('access-control-'))).toEqual([])
      const preflight = await send('OPTIONS', `${closed.url}/v1/jobs`, { headers: { origin: allowedOrigin, 'access-control-request-method': 'POST' } })
      refused('preflight to a server that allows no origin', preflight, 'route_not_found')
      expect(Object.keys(preflight.headers).filter((name) => name.startsWith('access-control-'))).toEqual([])
    } finally {
      await closed.close()
    }
  })

  it('refuses a cookie credential sent from a foreign origin with 403, on reads, streams, cancels and metrics', async () => {
    const job = await createJob(base, { tenant: 'acme', user: 'ann' })
    const token = await mint(base, { jobIds: [job.id], rights: ['read', 'cancel'] })
    const url = `${base}/v1/jobs/${job.id}`
    const sameOrigin = base
    for (const origin of [allowedOrigin, sameOrigin]) {
      allowed(`cookie from ${origin}`, await send('GET', url, { credential: token, via: 'cookie', headers: { origin } }))
    }
    allowed('cookie without an Origin (not a browser)', await send('GET', url, { credential: token, via: 'cookie' }))
    const foreign = ['https://evil.example', 'null', `${allowedOrigin}.evil.example`, `${sameOrigin}.evil.example`, `https://${new URL(base).host}.evil.example`]
    for (const origin of foreign) {
      refused(`read with a cookie from ${origin}`, await send('GET', url, { credential: token, via: 'cookie', headers: { origin } }), 'forbidden')
      refused(`cancel with a cookie from ${origin}`, await send('POST', `${url}/cancel`, { credential: token, via: 'cookie', headers: { origin }, body: {} }), 'forbidden')
      await refusedStream(`stream with a cookie from ${origin}`, `${url}/stream`, token, 'cookie', 'forbidden', { origin })
    }
    // Regression: /metrics took a cookie without the Origin check.
    refused('an admin cookie from a foreign origin on /metrics', await send('GET', `${base}/metrics`, { credential: testApiKey, via: 'cookie', headers: { origin: 'https://evil.example' } }), 'forbidden')
    refused('a cookie from any origin on a * server', await send('GET', `${star.url}/v1/jobs`, { credential: testApiKey, via: 'cookie', headers: { origin: 'https://evil.example' } }), 'forbidden')
    expect((await send('GET', url, { credential: testApiKey })).body).toMatchObject({ status: 'queued' })
  })

  it('marks every authenticated JSON answer Cache-Control: no-store', async () => {
    const job = await createJob(base, { tenant: 'acme', user: 'ann' })
    const token = await mint(base, { jobIds: [job.id] })
    const answers: [string, Answer][] = [
      ['GET job (admin)', await send('GET', `${base}/v1/jobs/${job.id}`, { credential: testApiKey })],
      ['GET job (token in query)', await send('GET', `${base}/v1/jobs/${job.id}`, { credential: token, via: 'query' })],
      ['GET job (token in cookie)', await send('GET', `${base}/v1/jobs/${job.id}`, { credential: token, via: 'cookie' })],
      ['list', await send('GET', `${base}/v1/jobs?limit=2`, { credential: testApiKey })],
      ['long-poll', await send('GET', `${base}/v1/jobs/${job.id}/events?after=0`, { credential: token })],
      ['POST /v1/tokens', await send('POST', `${base}/v1/tokens`, { credential: testApiKey, body: { jobIds: [job.id] } })],
      ['POST /v1/keys', await send('POST', `${base}/v1/keys`, { credential: testApiKey, body: { name: 'cached', role: 'backend' } })],
      ['GET /v1/keys', await send('GET', `${base}/v1/keys`, { credential: testApiKey })],
      ['POST /v1/jobs', await send('POST', `${base}/v1/jobs`, { credential: testApiKey, body: { type: 'cache' } })],
      ['a 404 for an authenticated caller', await send('GET', `${base}/v1/jobs/job_missing`, { credential: token })],
      ['a 403 for an authenticated caller', await send('POST', `${base}/v1/jobs`, { credential: token, body: { type: 'x' } })],
      ['/metrics', await send('GET', `${base}/metrics`, { credential: testApiKey })],
    ]
    for (const [what, answer] of answers) {
      expect(answer.status, `${what}: ${answer.text.slice(0, 200)}`).toBeLessThan(500)
      attempt(`a shared cache may keep ${what}`, answer.headers['cache-control'] !== 'no-store', String(answer.headers['cache-control']))
      expect(answer.headers['cache-control'], what).toBe('no-store')
    }
  })
})

describe('metrics', () => {
  it('/metrics needs an admin credential from the header or cookie, never the query string', async () => {
    const token = await mint(base, { tenant: 'acme', user: 'ann' })
    refused('no credential', await send('GET', `${base}/metrics`), 'unauthorized')
    refused('a wrong key', await send('GET', `${base}/metrics`, { credential: 'jw_wrong-wrong-wrong' }), 'unauthorized')
    refused('a subscription token', await send('GET', `${base}/metrics`, { credential: token }), 'forbidden')
    refused('the admin key in the query string', await send('GET', `${base}/metrics`, { credential: testApiKey, via: 'query' }), 'unauthorized')
    const metrics = await send('GET', `${base}/metrics`, { credential: testApiKey })
    expect(metrics.status).toBe(200)
    expect(metrics.text).toContain('jobwire_limit_rejections_total')
  })
})

describe('logs', () => {
  it('no bearer token, API key or cookie appears in any log line after query-string tokens, errors and broken requests', async () => {
    const lines: string[] = []
    const logger = pino({ level: 'trace' }, { write: (line: string) => void lines.push(line) })
    const server: RunningServer = await startServer({
      logger,
      config: { apiKey: testApiKey, port: 0, host: '127.0.0.1', memory: true, tokenSecret, jwtSecret: appJwtSecret, logLevel: 'trace' },
    })
    const url = server.url
    const secrets: string[] = [testApiKey, tokenSecret, appJwtSecret]
    try {
      const { id: keyId, key } = await createKey(url, { name: 'logged', role: 'backend' })
      secrets.push(key, key.split('.')[1] as string)
      const job = await createJob(url, { tenant: 'acme', user: 'ann' }, 'logged', key)
      const other = await createJob(url, { tenant: 'acme', user: 'bob' }, 'logged')
      const token = await mint(url, { jobIds: [job.id] }, key)
      const expired = await signSubscription({ jobs: [job.id], rights: ['read'] }, nowSeconds() - 60)
      const forged = await signSubscription({ jobs: [job.id], rights: ['read'] }, nowSeconds() + 60, 'wrong-secret-wrong-secret-wrong-secret!')
      const appJwt = await new SignJWT({ tenant: 'acme' }).setProtectedHeader({ alg: 'HS256' }).setSubject('ann').setExpirationTime('5m').sign(new TextEncoder().encode(appJwtSecret))
      for (const t of [token, expired, forged, appJwt]) secrets.push(t, t.split('.')[2] as string)

      for (const [credential, via] of [[token, 'query'], [token, 'cookie'], [appJwt, 'query'], [key, 'query']] as [string, Via][]) {
        await send('GET', `${url}/v1/jobs/${job.id}`, { credential, via })
        await send('GET', `${url}/v1/jobs/${other.id}`, { credential, via })
        await send('GET', `${url}/v1/jobs/${job.id}/events?after=0`, { credential, via })
        await send('GET', `${url}/v1/jobs/${job.id}/events?after=99`, { credential, via })
        await send('GET', `${url}/v1/jobs/${job.id}/events?after=x`, { credential, via })
        await send('GET', `${url}/v1/jobs?status=nope`, { credential, via })
      }
      for (const credential of [expired, forged, 'garbage.token.here', `${key}x`]) {
        await send('GET', `${url}/v1/jobs/${job.id}?x=1`, { credential, via: 'query' })
        await send('GET', `${url}/v1/jobs/${job.id}`, { credential })
      }
      await send('POST', `${url}/v1/jobs`, { credential: key, raw: '{"type":', headers: { 'content-type': 'application/json' } })
      await send('POST', `${url}/v1/jobs/${job.id}/events`, { credential: key, raw: JSON.stringify({ type: 'chunk', text: 'x'.repeat(2 * 1024 * 1024) }) })
      await send('POST', `${url}/v1/nothing?access_token=${encodeURIComponent(token)}`, { body: {} })
      await send('GET', `${url}/metrics`, { credential: key })

      // A stream opened with a query-string key, then the key revoked under it.
      const live = await openStream(streamPath(url, job.id), key, 'query')
      const tokenStream = await openStream(streamPath(url, job.id), token, 'query', { 'last-event-id': '1' })
      await append(url, job.id, [{ type: 'progress', percent: 50 }])
      allowed('revoke', await send('DELETE', `${url}/v1/keys/${keyId}`, { credential: testApiKey }))
      await within(live.ended, 'the revoked stream to end')
      tokenStream.close()
      await send('DELETE', `${url}/v1/keys/${keyId}x`, { credential: testApiKey })

      // Requests Node's HTTP parser refuses: Fastify logs them at trace as client errors with the raw
      // request bytes (regression: credentials reached the log through err.rawPacket).
      await rawRequest(url, `GET /v1/jobs?access_token=${token} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nBroken header line\r\n\r\n`)
      await rawRequest(url, `GET /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${testApiKey}\r\nX-Pad: ${'p'.repeat(20_000)}\r\n\r\n`)
      await rawRequest(url, `POST /v1/jobs?access_token=${token} HTTP/1.1\r\nHost: x\r\nCookie: jobwire_token=${key}\r\nContent-Length: nope\r\n\r\n`)
      // Let the last log writes land.
      await sleep(100)
    } finally {
      await server.close()
    }
    expect(lines.length, 'the logger captured nothing: the test would prove nothing').toBeGreaterThan(0)
    const logged = lines.map(expandBuffers)
    const leaks: string[] = []
    for (const secret of new Set(secrets)) {
      const hits = logged.filter((line) => line.includes(secret))
      const where = hits.map((line) => `"${String((JSON.parse(line.split('\n')[0] as string) as { msg?: unknown }).msg)}"`).join(', ')
      attempt(`a log line holds ${secret.slice(0, 12)}…`, hits.length > 0, where)
      if (hits.length > 0) leaks.push(`${secret.slice(0, 12)}… in ${where}`)
    }
    expect(leaks).toEqual([])
  })
})

/**
 * A log line with every serialized Buffer (`{"type":"Buffer","data":[…]}`) also decoded to text,
 * so bytes logged raw count as logged.
 */
function expandBuffers(line: string): string {
  const decoded: string[] = []
  for (const match of line.matchAll(/\{"type":"Buffer","data":\[([\d,]*)\]\}/g)) {
    decoded.push(Buffer.from((match[1] ?? '').split(',').filter((n) => n !== '').map(Number)).toString('latin1'))
  }
  return decoded.length === 0 ? line : `${line}\n${decoded.join('\n')}`
}

/** Writes raw bytes to the server and waits for it to answer or close. */
function rawRequest(url: string, text: string): Promise<string> {
  const { hostname, port } = new URL(url)
  return within(
    new Promise<string>((resolve, reject) => {
      const socket = connect(Number(port), hostname, () => socket.end(text))
      let answer = ''
      socket.setEncoding('latin1')
      socket.on('data', (chunk: string) => (answer += chunk))
      socket.on('close', () => resolve(answer))
      socket.on('error', (error: NodeJS.ErrnoException) => (error.code === 'ECONNRESET' || error.code === 'EPIPE' ? resolve(answer) : reject(error)))
    }),
    'a raw request to be answered',
  )
}

describe('job ids', () => {
  it('are 128-bit random: nothing to enumerate', async () => {
    const ids = await Promise.all(Array.from({ length: 30 }, async () => (await createJob(base, null)).id))
    for (const id of ids) {
      expect(id).toMatch(/^job_[A-Za-z0-9_-]{22}$/)
      expect(Buffer.from(id.slice(4), 'base64url').length).toBe(16)
    }
    expect(new Set(ids).size).toBe(ids.length)
    const token = await mint(base, { jobIds: [ids[0] as string] })
    // Neighbours of a known id are not jobs this token may see (nor, almost surely, jobs at all).
    const known = ids[0] as string
    for (const neighbour of [`${known.slice(0, -1)}${known.endsWith('A') ? 'B' : 'A'}`, ids[1] as string]) {
      refused(`guess ${neighbour}`, await send('GET', `${base}/v1/jobs/${neighbour}`, { credential: token }), 'job_not_found')
    }
  })
})
