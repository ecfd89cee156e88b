import pino from 'pino'
import { SignJWT } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { JobState } from '@jobwire/protocol'
import type { Store } from '../src/core/store.js'
import { startServer, type RunningServer } from '../src/server.js'
import { MemoryStore } from '../src/stores/memory-store.js'
import { createJsonClient, openSse, sleep, testApiKey, type JsonClient } from './fixtures.js'
import { openWs, wsUrl } from './ws-client.js'

/**
 * The logs of a scripted run, as an operator reads them: every line about a job names the job and,
 * where one is known, its tenant; request lines carry the request id; and no credential — API key,
 * subscription token, app JWT, lease, signing secret — appears anywhere, however it was sent
 * (header, `?access_token=`, `?token=`, an in-band WebSocket `refresh_token`, a broken frame).
 */
const tokenSecret = 'logs-suite-token-secret-0123456789abcdef'
const jwtSecret = 'logs-suite-app-jwt-secret-0123456789abcdef'

interface Line {
  level: number
  msg: string
  reqId?: string
  jobId?: string
  tenant?: string
  [field: string]: unknown
}

const raw: string[] = []
const secrets = new Set<string>([testApiKey, tokenSecret, jwtSecret])
let server: RunningServer
let admin: JsonClient
/** Jobs whose reads fail inside the store (a fault, so the run logs an internal error on a job route). */
const poisoned = new Set<string>()

beforeAll(async () => {
  const memory = new MemoryStore()
  const store = new Proxy(memory, {
    get(target, property, receiver) {
      const value: unknown = Reflect.get(target, property, receiver)
      if (typeof value !== 'function') return value
      const method = (value as (...args: unknown[]) => unknown).bind(target)
      if (property !== 'getJob') return method
      return async (id: string) => {
        if (poisoned.has(id)) throw new Error('the disk is on fire')
        return method(id)
      }
    },
  }) as Store
  server = await startServer({
    logger: pino({ level: 'debug' }, { write: (line: string) => void raw.push(line) }),
    store,
    config: { apiKey: testApiKey, port: 0, host: '127.0.0.1', memory: true, tokenSecret, jwtSecret, logLevel: 'debug' },
  })
  admin = createJsonClient(server.url, testApiKey)
})

afterAll(async () => {
  await admin.close()
  await server.close()
})

async function appJwt(tenant: string, user: string): Promise<string> {
  const jwt = await new SignJWT({ tenant }).setProtectedHeader({ alg: 'HS256' }).setSubject(user).setExpirationTime('5m').sign(new TextEncoder().encode(jwtSecret))
  secrets.add(jwt)
  return jwt
}

async function createJob(body: Record<string, unknown>): Promise<JobState> {
  const answer = await admin.call<JobState>('POST', '/v1/jobs', body)
  expect(answer.status, JSON.stringify(answer.body)).toBe(201)
  return answer.body
}

function lines(): Line[] {
  return raw.map((line) => JSON.parse(line) as Line)
}

describe('logs', () => {
  it('name the job and tenant on every line about a job, the request id on request lines, and hold no credential', async () => {
    // Keys: a backend key bound to tenant acme, a worker key.
    const backend = (await admin.call<{ key: string }>('POST', '/v1/keys', { name: 'acme-backend', role: 'backend', tenant: 'acme' })).body.key
    const worker = (await admin.call<{ key: string }>('POST', '/v1/keys', { name: 'renderer', role: 'worker' })).body.key
    for (const key of [backend, worker]) secrets.add(key).add(key.split('.')[1] as string)
    // A job run by its producer (acme), one run by a worker (globex), one that fails, one cancelled, one unreadable.
    const produced = await createJob({ type: 'report', owner: { tenant: 'acme', user: 'ann' }, dispatch: false })
    const dispatched = await createJob({ type: 'render', owner: { tenant: 'globex', user: 'gus' } })
    const failing = await createJob({ type: 'report', owner: { tenant: 'acme', user: 'bob' }, dispatch: false })
    const cancelled = await createJob({ type: 'report', owner: { tenant: 'acme', user: 'ann' }, dispatch: false })
    const broken = await createJob({ type: 'report', owner: { tenant: 'acme', user: 'ann' }, dispatch: false })
    const asBackend = createJsonClient(server.url, backend)
    const asWorker = createJsonClient(server.url, worker)
    try {

      // Watchers: SSE with a subscription token in the query string (and a stray ?token=), a WebSocket with an app JWT.
      const minted = (await admin.call<{ token: string }>('POST', '/v1/tokens', { jobIds: [produced.id], rights: ['read'] })).body.token
      secrets.add(minted)
      const sse = await openSse(`${server.url}/v1/jobs/${produced.id}/stream?access_token=${encodeURIComponent(minted)}&token=${encodeURIComponent(minted)}`)
      expect(sse.status).toBe(200)
      expect((await createJsonClient(server.url, null).call('GET', `/v1/jobs/${produced.id}?token=${encodeURIComponent(minted)}`)).status).toBe(401)
      const jwt = await appJwt('acme', 'ann')
      const ws = await openWs(wsUrl(server.url, `?access_token=${encodeURIComponent(jwt)}`))
      await ws.next((m) => m.type === 'welcome')
      ws.send({ type: 'subscribe', jobId: produced.id })
      await ws.next((m) => m.type === 'snapshot')
      const refreshed = await appJwt('acme', 'ann')
      ws.send({ type: 'refresh_token', token: refreshed, ref: 'r1' })
      await ws.next((m) => m.type === 'token_refreshed')
      const forged = `${refreshed.slice(0, -4)}AAAA`
      secrets.add(forged)
      ws.send({ type: 'refresh_token', token: forged, ref: 'r2' })
      await ws.next((m) => m.type === 'error' && m.ref === 'r2')
      ws.send(`{"type":"refresh_token","token":"${refreshed}"`)
      await ws.next((m) => m.type === 'error' && m.error.code === 'malformed_message')

      // The runs.
      expect((await asBackend.call('POST', `/v1/jobs/${produced.id}/events`, { events: [{ type: 'progress', percent: 50 }, { type: 'completed', result: 'ok' }] })).status).toBe(200)
      const claim = await asWorker.call<{ job: JobState; lease: { token: string } }>('POST', '/v1/workers/claim', { types: ['render'], worker: 'render-1', wait: 5 })
      expect(claim.body.job.id).toBe(dispatched.id)
      secrets.add(claim.body.lease.token)
      expect((await asWorker.call('POST', `/v1/jobs/${dispatched.id}/heartbeat`, { lease: claim.body.lease.token })).status).toBe(200)
      // Given back unrun (a worker stopping with it claimed ahead), then claimed again and run.
      expect((await asWorker.call('POST', `/v1/jobs/${dispatched.id}/release`, { lease: claim.body.lease.token, reason: 'deploy', ran: false })).status).toBe(200)
      const again = await asWorker.call<{ job: JobState; lease: { token: string } }>('POST', '/v1/workers/claim', { types: ['render'], worker: 'render-1', wait: 5 })
      secrets.add(again.body.lease.token)
      expect((await asWorker.call('POST', `/v1/jobs/${dispatched.id}/events`, { lease: again.body.lease.token, batch: 1, events: [{ type: 'completed', result: 1 }] })).status).toBe(200)
      expect((await asBackend.call('POST', `/v1/jobs/${failing.id}/events`, { type: 'failed', code: 'bad_input', message: 'no', retryable: false })).status).toBe(200)
      expect((await asBackend.call('POST', `/v1/jobs/${cancelled.id}/cancel`, {})).status).toBe(200)
      // A person reads a job; a store fault on another job's read is an internal error.
      const asAnn = createJsonClient(server.url, jwt)
      expect((await asAnn.call('GET', `/v1/jobs/${produced.id}`)).status).toBe(200)
      poisoned.add(broken.id)
      expect((await asAnn.call<{ error: { code: string } }>('GET', `/v1/jobs/${broken.id}?access_token=${encodeURIComponent(jwt)}`)).body.error.code).toBe('internal')
      await asAnn.close()
      await sse.waitFor((connection) => connection.raw.includes('event: completed'))
      ws.close()
      sse.close()
      // Let the last debug lines (written once responses finish) land.
      await sleep(50)
    } finally {
      await asBackend.close()
      await asWorker.close()
    }

    const logged = lines()
    const about = (jobId: string, msg: string): Line | undefined => logged.find((line) => line.msg === msg && line.jobId === jobId)
    // Lifecycle lines: the job, its type and its tenant, whoever committed the step.
    expect(about(produced.id, 'job created')).toMatchObject({ jobId: produced.id, type: 'report', tenant: 'acme' })
    expect(about(produced.id, 'job started')).toMatchObject({ tenant: 'acme', attempt: 1 })
    expect(about(produced.id, 'job completed')).toMatchObject({ tenant: 'acme', seq: 4 })
    expect(about(dispatched.id, 'job started')).toMatchObject({ tenant: 'globex', type: 'render', worker: 'render-1' })
    expect(about(dispatched.id, 'job re-queued')).toMatchObject({ tenant: 'globex', reason: 'deploy', attempt: 1, counted: false })
    expect(about(dispatched.id, 'job completed')).toMatchObject({ tenant: 'globex' })
    expect(about(failing.id, 'job failed')).toMatchObject({ tenant: 'acme', code: 'bad_input', retryable: false })
    expect(about(cancelled.id, 'job cancelled')).toMatchObject({ tenant: 'acme' })
    // Request lines: the request id, and the job and tenant the route and credential name; the path without its query.
    const reads = logged.filter((line) => line.msg === 'answered' && line.path === `/v1/jobs/${produced.id}`)
    expect(reads.length).toBeGreaterThan(0)
    for (const line of reads) expect(line).toMatchObject({ reqId: expect.any(String), jobId: produced.id, method: 'GET' })
    expect(reads.find((line) => line.tenant === 'acme' && line.status === 200)).toBeDefined()
    expect(logged.find((line) => line.msg === 'answered' && line.path === `/v1/jobs/${dispatched.id}/heartbeat`)).toMatchObject({ jobId: dispatched.id })
    expect(logged.filter((line) => line.msg === 'answered').every((line) => !String(line.path).includes('?'))).toBe(true)
    const failure = logged.find((line) => line.msg === 'unhandled error')
    expect(failure).toMatchObject({ reqId: expect.any(String), jobId: broken.id, tenant: 'acme', url: `/v1/jobs/${broken.id}` })
    // No credential anywhere: not in a field, a message, an error, a path.
    const leaks = [...secrets].filter((secret) => raw.some((line) => line.includes(secret)))
    expect(leaks.map((secret) => `${secret.slice(0, 12)}…`)).toEqual([])
  })
})
