import { createHmac, timingSafeEqual } from 'node:crypto'
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http'
import { afterEach, describe, expect, it } from 'vitest'
import type { JobState } from '@jobwire/protocol'
import type { WebhookPayload } from '../src/webhooks.js'
import { sleep, startTestServer, type TestServer } from './fixtures.js'

/** Job-lifecycle webhooks against a real HTTP receiver on a local port. */
const secret = 'webhook-test-secret-0123456789abcdefghij'

interface Received {
  headers: IncomingHttpHeaders
  body: string
  answered: number
}

/** A receiver that answers each request with the next status of `script` (then 200), recording everything. */
async function startReceiver(script: number[] = []): Promise<{ url: string; received: Received[]; close(): Promise<void> }> {
  const received: Received[] = []
  const server: Server = createServer((request, response) => {
    let body = ''
    request.setEncoding('utf8')
    request.on('data', (chunk: string) => (body += chunk))
    request.on('end', () => {
      const answered = script.shift() ?? 200
      received.push({ headers: request.headers, body, answered })
      response.writeHead(answered).end()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  return {
    url: `http://127.0.0.1:${port}/hooks/jobwire`,
    received,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  }
}

/** What a receiver does to trust a delivery: recompute the HMAC over "<t>.<body>" with the shared secret. */
function verified(headers: IncomingHttpHeaders, body: string): boolean {
  const match = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(String(headers['x-jobwire-signature']))
  if (match === null) return false
  const expected = createHmac('sha256', secret).update(`${match[1]}.${body}`).digest()
  return timingSafeEqual(expected, Buffer.from(match[2] as string, 'hex'))
}

async function until(predicate: () => boolean, what: string): Promise<void> {
  for (let tries = 0; !predicate(); tries++) {
    if (tries > 200) throw new Error(`timed out waiting for ${what}`)
    await sleep(25)
  }
}

const cleanups: (() => Promise<unknown>)[] = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

async function serverWith(webhooks: string, extra: Record<string, unknown> = {}): Promise<TestServer> {
  const t = await startTestServer({ webhooks, webhookSecret: secret, webhookBackoff: 20, webhookMaxAttempts: 3, ...extra })
  cleanups.push(() => t.close())
  return t
}

async function runJob(t: TestServer, type: string, end: Record<string, unknown>): Promise<JobState> {
  const job = (await t.api.call<JobState>('POST', '/v1/jobs', { type, dispatch: false })).body
  expect((await t.api.call('POST', `/v1/jobs/${job.id}/events`, { events: [{ type: 'progress', percent: 50 }, end] })).status).toBe(200)
  return job
}

describe('webhooks', () => {
  it('POSTs a signed job.completed when a job of a configured type ends, retrying 5xx with backoff until 2xx', async () => {
    const receiver = await startReceiver([500, 503])
    cleanups.push(() => receiver.close())
    const t = await serverWith(`transcription=${receiver.url}`)
    const job = await runJob(t, 'transcription', { type: 'completed', result: { words: 1200 } })
    await runJob(t, 'thumbnail', { type: 'completed', result: null }) // no receiver for this type
    await until(() => receiver.received.length === 3, 'three attempts')
    await sleep(200)
    expect(receiver.received.map((r) => r.answered)).toEqual([500, 503, 200])
    for (const [index, delivery] of receiver.received.entries()) {
      expect(verified(delivery.headers, delivery.body)).toBe(true)
      expect(delivery.headers['x-jobwire-delivery']).toBe(`${job.id}:4`)
      expect(delivery.headers['x-jobwire-attempt']).toBe(String(index + 1))
      expect(delivery.headers['content-type']).toBe('application/json')
    }
    const payload = JSON.parse(receiver.received[2]?.body ?? '') as WebhookPayload
    expect(payload).toMatchObject({
      id: `${job.id}:4`,
      type: 'job.completed',
      job: { id: job.id, type: 'transcription', status: 'completed', result: { words: 1200 } },
      event: { seq: 4, type: 'completed' },
    })
    // A tampered body no longer matches its signature.
    expect(verified(receiver.received[2]?.headers ?? {}, (receiver.received[2]?.body ?? '').replace('1200', '1201'))).toBe(false)
    const metrics = await (await fetch(`${t.url}/metrics`, { headers: { authorization: `Bearer ${t.key}` } })).text()
    expect(metrics).toMatch(/jobwire_webhook_deliveries_total\{outcome="retried"\} 2\n/)
    expect(metrics).toMatch(/jobwire_webhook_deliveries_total\{outcome="delivered"\} 1\n/)
  })

  it('sends failed and cancelled jobs of every type to a * receiver, and gives up after webhookMaxAttempts', async () => {
    const receiver = await startReceiver([200, 500, 500, 500])
    cleanups.push(() => receiver.close())
    const t = await serverWith(`*=${receiver.url}`)
    const failed = await runJob(t, 'render', { type: 'failed', code: 'bad_input', message: 'no', retryable: false })
    await until(() => receiver.received.length === 1, 'the failed delivery')
    const cancelled = (await t.api.call<JobState>('POST', '/v1/jobs', { type: 'export', dispatch: false })).body
    expect((await t.api.call('POST', `/v1/jobs/${cancelled.id}/cancel`, { reason: 'user' })).status).toBe(200)
    await until(() => receiver.received.length === 4, 'three attempts at the cancelled delivery')
    await sleep(300)
    expect(receiver.received).toHaveLength(4)
    const types = receiver.received.map((r) => (JSON.parse(r.body) as WebhookPayload).type)
    expect(types).toEqual(['job.failed', 'job.cancelled', 'job.cancelled', 'job.cancelled'])
    expect((JSON.parse(receiver.received[0]?.body ?? '') as WebhookPayload).job.id).toBe(failed.id)
    const metrics = await (await fetch(`${t.url}/metrics`, { headers: { authorization: `Bearer ${t.key}` } })).text()
    expect(metrics).toMatch(/jobwire_webhook_deliveries_total\{outcome="failed"\} 1\n/)
  })

  it('refuses webhooks without a secret, naming both options', async () => {
    await expect(startTestServer({ webhooks: 'render=http://127.0.0.1:9/x' })).rejects.toThrow(/--webhook-secret: required when --webhooks names a receiver/)
    await expect(startTestServer({ webhooks: 'render=ftp://x', webhookSecret: secret })).rejects.toThrow(/--webhooks: expected type=http\(s\):\/\/… pairs, got "render=ftp:\/\/x"/)
  })
})
