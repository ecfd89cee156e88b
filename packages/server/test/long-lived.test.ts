/**
 * A node that runs for weeks: what a stream, a socket or a request leaves behind once it is gone
 * is counted, and must not grow with the number of them.
 */
import v8 from 'node:v8'
import { afterEach, describe, expect, it } from 'vitest'
import { mintSubscriptionToken } from '@jobwire/backend'
import type { JobState } from '@jobwire/protocol'
import { openSse, startTestServer, type TestServer } from './fixtures.js'
import { openWs, wsUrl } from './ws-client.js'

const tokenSecret = 'long-lived-test-secret-0123456789abcdef'
let server: TestServer | null = null
afterEach(async () => {
  await server?.close()
  server = null
})

async function createJob(t: TestServer, owner = { tenant: 'acme', user: 'ann' }): Promise<JobState> {
  const created = await t.api.call<JobState>('POST', '/v1/jobs', { type: 'long-lived', owner, dispatch: false })
  expect(created.status).toBe(201)
  return created.body
}

/** Streams open on the node, of every transport, as its metrics say. */
async function openConnections(t: TestServer): Promise<number> {
  const response = await fetch(`${t.url}/metrics`, { headers: { authorization: `Bearer ${t.key}` } })
  let open = 0
  for (const line of (await response.text()).split('\n')) if (line.startsWith('jobwire_open_connections{')) open += Number(line.split(' ').at(-1))
  return open
}

/** Waits until the node has seen every stream go. */
async function allClosed(t: TestServer): Promise<void> {
  for (let i = 0; (await openConnections(t)) > 0; i++) {
    if (i > 500) throw new Error('the server still counts open streams')
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

/**
 * Node's timer lists alive in this process. A list holds the timers of one duration; Node drops a
 * list when its last timer is cleared only for ref'd timers, so an unref'd timer of a duration no
 * other has, cleared, leaves its empty list until that duration has passed.
 */
function timerLists(): number {
  const probe = setTimeout(() => {}, 987_654_321)
  const TimersList = (probe as unknown as { _idlePrev: { constructor: new () => unknown } })._idlePrev.constructor
  clearTimeout(probe)
  return v8.queryObjects(TimersList, { format: 'count' })
}

describe('streams under credentials that expire', () => {
  it.skipIf(typeof v8.queryObjects !== 'function')(
    'SSE streams and WebSockets that closed leave no timer behind (each left two empty timer lists, ~180 bytes each, until its token expired)',
    async () => {
      server = await startTestServer({ tokenSecret })
      const t = server
      const job = await createJob(t)
      const jobToken = (): string => mintSubscriptionToken({ secret: tokenSecret, jobIds: [job.id], ttlSeconds: 3_600 }).token
      const userToken = (): string => mintSubscriptionToken({ secret: tokenSecret, tenant: 'acme', user: 'ann', ttlSeconds: 3_600 }).token
      const once = async (): Promise<void> => {
        const sse = await openSse(`${t.url}/v1/jobs/${job.id}/stream?access_token=${encodeURIComponent(jobToken())}`)
        await sse.waitFor((connection) => connection.raw.includes('event: snapshot'))
        sse.close()
        // A socket under a user's token, carrying a job under its own token: three credentials watched.
        const ws = await openWs(wsUrl(t.url), { token: userToken() })
        ws.send({ type: 'subscribe', jobId: job.id, token: jobToken() })
        await ws.next((message) => message.type === 'snapshot')
        ws.close()
        await ws.closed
      }
      // The first ones make the lists every server has (sweeps, heartbeats, pings).
      for (let i = 0; i < 5; i++) await once()
      await allClosed(t)
      const before = timerLists()
      for (let i = 0; i < 60; i++) await once()
      await allClosed(t)
      // Each closed stream cleared a timer for its token's `exp` (and a socket, one for its notice): none may stay.
      expect(timerLists() - before).toBeLessThan(10)
    },
  )
})
