import { getEventListeners } from 'node:events'
import { afterEach, describe, expect, it } from 'vitest'
import { mintSubscriptionToken } from '@jobwire/backend'
import { createJobwireClient, type JobState, type JobwireClient, type TokenRequest, type TransportName } from '@jobwire/client'
import { TokenSource } from '../src/tokens.js'
import type { Environment } from '../src/environment.js'
import { createJob, recordingWebSocket, startTestServer, until, type TestServer } from './harness.js'
import { within } from '../../../test/support/wait.js'

/**
 * One long-lived client watching many jobs one after another (a dashboard, a backend following
 * each job it starts): what a watch leaves behind once its job ended and it stopped is counted,
 * and must not grow with the number of jobs watched.
 */

let server: TestServer | null = null
let client: JobwireClient | null = null
afterEach(async () => {
  client?.close()
  client = null
  await server?.close()
  server = null
})

async function complete(s: TestServer, jobId: string): Promise<void> {
  const answer = await s.api.call('POST', `/v1/jobs/${jobId}/events`, { events: [{ type: 'progress', percent: 50 }, { type: 'completed', result: 1 }] })
  expect(answer.status).toBe(200)
}

function clientFor(s: TestServer, transport: TransportName): JobwireClient {
  return createJobwireClient({ url: s.url, getToken: () => s.key, transports: [transport], WebSocket: recordingWebSocket().WebSocket, lingerMs: 0, pollIntervalMs: 20 })
}

const abortListeners = (signal: AbortSignal): number => getEventListeners(signal, 'abort').length

describe('one signal shared by every watch (an app’s own lifetime)', () => {
  it.for(['ws', 'sse', 'poll'] as const)('over %s: a watch that stopped leaves no listener on it (one per job watched stayed, with its watch and state)', async (transport) => {
    server = await startTestServer()
    const s = server
    client = clientFor(s, transport)
    const app = new AbortController()
    for (let i = 0; i < 20; i++) {
      const job = await createJob(s)
      let ended = false
      const watch = client.watchJob(job.id, { signal: app.signal, onEnd: () => (ended = true) })
      await until(() => watch.state !== null, 'the snapshot')
      await complete(s, job.id)
      await until(() => ended, 'the end of the job')
      watch.stop()
    }
    // A for-await loop stops its watch when the job ends.
    const job = await createJob(s)
    const loop = (async () => {
      for await (const state of (client as JobwireClient).watchJob(job.id, { signal: app.signal })) if (state.seq === 1) void complete(s, job.id)
    })()
    await loop
    const jobs = client.watchJobs([(await createJob(s)).id, (await createJob(s)).id], { signal: app.signal })
    const mine = client.watchMyJobs({ owner: { tenant: 'acme', user: 'ann' }, signal: app.signal })
    expect(abortListeners(app.signal)).toBe(2)
    jobs.stop()
    mine.stop()
    expect(abortListeners(app.signal)).toBe(0)
  })

  it('the client closing takes the listeners of the watches it ended off the signal too', async () => {
    server = await startTestServer()
    client = clientFor(server, 'ws')
    const app = new AbortController()
    client.watchJob((await createJob(server)).id, { signal: app.signal })
    expect(abortListeners(app.signal)).toBe(1)
    client.close()
    expect(abortListeners(app.signal)).toBe(0)
  })

  it('a signal aborted already stops the watch (it was never heard, and the watch held its job for good)', async () => {
    server = await startTestServer()
    client = clientFor(server, 'ws')
    const job = await createJob(server)
    const states: JobState[] = []
    const watch = client.watchJob(job.id, { signal: AbortSignal.abort(), onUpdate: (state) => states.push(state) })
    // Stopped once the caller holds its watch: an iteration ends at once, with nothing.
    expect(await within(watch[Symbol.asyncIterator]().next(), 'the watch to stop', 5_000)).toEqual({ value: undefined, done: true })
    expect(states).toEqual([])
  })
})

describe('per-job tokens of jobs no longer watched', () => {
  const secret = 'long-lived-token-secret-0123456789abcdef'

  it.for(['ws', 'sse', 'poll'] as const)('over %s: forgotten once the watch of the job stopped (every job ever watched kept its token)', async (transport) => {
    server = await startTestServer({ tokenSecret: secret })
    const s = server
    const asked = new Map<string, number>()
    const getToken = (request: TokenRequest): string => {
      if (request.scope !== 'jobs') throw new Error('only per-job tokens here')
      for (const jobId of request.jobIds) asked.set(jobId, (asked.get(jobId) ?? 0) + 1)
      return mintSubscriptionToken({ secret, jobIds: [...request.jobIds], ttlSeconds: 600 }).token
    }
    client = createJobwireClient({ url: s.url, getToken, transports: [transport], WebSocket: recordingWebSocket().WebSocket, lingerMs: 0, pollIntervalMs: 20 })
    const jobs: string[] = []
    for (let i = 0; i < 5; i++) {
      const job = await createJob(s)
      jobs.push(job.id)
      let ended = false
      const watch = client.watchJob(job.id, { onEnd: () => (ended = true) })
      await until(() => watch.state !== null, 'the snapshot')
      await complete(s, job.id)
      await until(() => ended, 'the end of the job')
      watch.stop()
    }
    // The feeds are gone (lingerMs 0, a timer set before this one): watching a job again asks for its token again, as for a new one.
    await new Promise((resolve) => setTimeout(resolve, 20))
    for (const jobId of jobs) {
      const watch = client.watchJob(jobId)
      await until(() => watch.done, 'the finished job')
      watch.stop()
    }
    expect(jobs.map((jobId) => asked.get(jobId))).toEqual(jobs.map(() => 2))
  })

  it('a token cache filled by jobs asked about once (a cancel, a result) keeps only the tokens still usable', async () => {
    let now = Date.UTC(2030, 0, 1)
    const tokens = new TokenSource(
      (request) => mintSubscriptionToken({ secret, jobIds: request.scope === 'jobs' ? [...request.jobIds] : [], now, ttlSeconds: 60 }).token,
      { now: () => now } as Environment,
    )
    for (let i = 0; i < 10_000; i++) {
      await tokens.get({ scope: 'jobs', jobIds: [`job_${i}`] })
      now += 100
    }
    // A minute of them at a time (600) is usable; the rest expired, and a sweep comes every doubling.
    const cached = tokens.cachedJobs
    expect(cached).toBeLessThanOrEqual(2 * 600)
    tokens.forget('job_9999')
    expect(tokens.cachedJobs).toBe(cached - 1)
  })
})
