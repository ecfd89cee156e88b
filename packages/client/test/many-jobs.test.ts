import { afterEach, describe, expect, it } from 'vitest'
import { mintSubscriptionToken } from '@jobwire/backend'
import { createJobwireClient, JobwireError, type JobState, type JobwireClient, type TokenRequest, type TransportName } from '@jobwire/client'
import { advanceUntil, createJob, ManualTimers, recordingWebSocket, seededRandom, startTestServer, until, type TestServer } from './harness.js'

/**
 * One client, many jobs, a credential per job: getToken is told which job a token is for, each
 * job's token travels with its own subscription, and one token's expiry, refresh or refusal
 * touches only its job — over one WebSocket, and likewise over SSE and polling.
 */

const secret = 'many-jobs-token-secret-0123456789abcdef'
let server: TestServer | null = null
let client: JobwireClient | null = null
afterEach(async () => {
  client?.close()
  client = null
  await server?.close()
  server = null
})

async function append(s: TestServer, jobId: string, events: unknown[]): Promise<void> {
  const answer = await s.api.call('POST', `/v1/jobs/${jobId}/events`, { events })
  expect(answer.status, JSON.stringify(answer.body)).toBe(200)
}

/** A backend's token route: a token for exactly the job asked for, and a log of what was asked. */
function perJobTokens(ttlSeconds: (jobId: string) => number = () => 600) {
  const asked: TokenRequest[] = []
  const refused = new Set<string>()
  return {
    asked,
    refused,
    calls: (jobId: string) => asked.filter((request) => request.scope === 'jobs' && request.jobIds.includes(jobId)).length,
    getToken: (request: TokenRequest): string => {
      asked.push(request)
      if (request.scope !== 'jobs') throw new JobwireError('unauthorized')
      if (request.jobIds.some((jobId) => refused.has(jobId))) throw new JobwireError('unauthorized')
      return mintSubscriptionToken({ secret, jobIds: [...request.jobIds], ttlSeconds: ttlSeconds(request.jobIds[0] as string) }).token
    },
  }
}

describe('a job whose token the server keeps refusing as expired', () => {
  it('over WebSocket: its resubscribes back off exponentially while the other job stays live (before: one every 0.5–2.5 s, for good)', async () => {
    server = await startTestServer({ tokenSecret: secret })
    const s = server
    const stale = await createJob(s)
    const fine = await createJob(s)
    const asked = new Map<string, number>()
    const getToken = (request: TokenRequest): string => {
      if (request.scope !== 'jobs') throw new JobwireError('unauthorized')
      const jobId = request.jobIds[0] as string
      asked.set(jobId, (asked.get(jobId) ?? 0) + 1)
      // For the one job, a cached token: minted an hour ago for a minute.
      return jobId === stale.id ? mintSubscriptionToken({ secret, jobIds: [jobId], now: Date.now() - 3_600_000, ttlSeconds: 60 }).token : mintSubscriptionToken({ secret, jobIds: [jobId] }).token
    }
    const clock = new ManualTimers(Date.now())
    client = createJobwireClient({
      url: s.url,
      transports: ['ws'],
      getToken,
      WebSocket: recordingWebSocket().WebSocket,
      timers: clock,
      now: () => clock.now(),
      random: seededRandom(3),
      // The server's heartbeats come in real time: the simulated minutes below must not count as its silence.
      heartbeatTimeoutMs: 3_600_000,
    })
    const watch = client.watchJobs([stale.id, fine.id])
    await advanceUntil(clock, 100, () => watch.states.has(fine.id) && (asked.get(stale.id) ?? 0) >= 2, 'the fine job watched and the stale one refused')
    const before = asked.get(stale.id) ?? 0
    // Two simulated minutes. Backoff from 0.5 s doubling to 20 s (full jitter) asks some 15 more
    // times; a resubscribe every 0.5–2.5 s asked at least 48.
    for (let step = 0; step < 240; step++) {
      await clock.advance(500)
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
    const more = (asked.get(stale.id) ?? 0) - before
    expect(more).toBeGreaterThan(3)
    expect(more).toBeLessThan(30)
    expect(watch.watches.find((one) => one.jobId === fine.id)?.connection).toBe('live')
    expect(watch.watches.find((one) => one.jobId === stale.id)?.connection).toBe('reconnecting')
    watch.stop()
  })
})

describe('per-job tokens over one WebSocket', () => {
  it('watches 50 jobs under 50 per-job tokens on one socket; getToken is asked once per job, with its id', async () => {
    server = await startTestServer({ tokenSecret: secret })
    const s = server
    const jobs: JobState[] = []
    for (let i = 0; i < 50; i++) jobs.push(await createJob(s))
    const tokens = perJobTokens()
    const ws = recordingWebSocket()
    client = createJobwireClient({ url: s.url, getToken: tokens.getToken, WebSocket: ws.WebSocket })
    const watch = client.watchJobs(jobs.map((job) => job.id))
    await until(() => watch.states.size === 50, '50 snapshots')
    await Promise.all(jobs.map((job, i) => append(s, job.id, [{ type: 'chunk', text: `job ${i}` }])))
    await until(() => [...watch.states.values()].every((state) => state.text.startsWith('job ')), 'an event on each job')
    expect(ws.sockets).toHaveLength(1)
    expect(tokens.asked).toHaveLength(50)
    expect(new Set(tokens.asked.map((request) => (request.scope === 'jobs' ? request.jobIds.join() : 'user')))).toEqual(new Set(jobs.map((job) => job.id)))
    expect(watch.watches.every((one) => one.error === null && one.connection === 'live')).toBe(true)
    watch.stop()
  })

  it("refreshes one job's expiring token for that job alone, on the same socket, without losing a seq", async () => {
    server = await startTestServer({ tokenSecret: secret, tokenNotice: '2s' })
    const s = server
    const [short, long1, long2] = [await createJob(s), await createJob(s), await createJob(s)] as [JobState, JobState, JobState]
    const tokens = perJobTokens((jobId) => (jobId === short.id ? 3 : 600))
    const ws = recordingWebSocket()
    client = createJobwireClient({ url: s.url, getToken: tokens.getToken, WebSocket: ws.WebSocket })
    const watch = client.watchJobs([short.id, long1.id, long2.id])
    await until(() => watch.states.size === 3, 'three snapshots')
    const firstExpiry = Date.now() + 3_000
    const write = async (i: number): Promise<void> => {
      for (const job of [short, long1, long2]) await append(s, job.id, [{ type: 'chunk', text: `${i}` }])
    }
    for (let i = 0; i < 3; i++) await write(i)
    // The server says token_expiring for the short job's token 2 s before it lapses; the client refreshes it alone.
    await until(() => tokens.calls(short.id) >= 2, "the short job's refresh")
    // Past its first token's expiry (the server's clock): the stream lives on the refreshed one.
    await until(() => Date.now() > firstExpiry + 200, "the short job's first token's expiry")
    for (let i = 3; i < 7; i++) await write(i)
    await until(() => [...watch.states.values()].every((state) => state.text === '0123456'), 'every chunk on every job')
    expect(tokens.calls(short.id)).toBeGreaterThanOrEqual(2)
    expect(tokens.calls(long1.id)).toBe(1)
    expect(tokens.calls(long2.id)).toBe(1)
    expect(ws.sockets).toHaveLength(1)
    expect(watch.watches.map((one) => one.error)).toEqual([null, null, null])
    watch.stop()
  })

  it('a job whose token getToken refuses ends with unauthorized alone; the others and the client go on', async () => {
    server = await startTestServer({ tokenSecret: secret })
    const s = server
    const [kept, refused] = [await createJob(s), await createJob(s)] as [JobState, JobState]
    const tokens = perJobTokens()
    tokens.refused.add(refused.id)
    const ws = recordingWebSocket()
    client = createJobwireClient({ url: s.url, getToken: tokens.getToken, WebSocket: ws.WebSocket })
    const keptWatch = client.watchJob(kept.id)
    await until(() => keptWatch.connection === 'live', 'the first job live')
    let ended: JobwireError | null = null
    const refusedWatch = client.watchJob(refused.id, { onEnd: (error) => (ended = error) })
    await until(() => refusedWatch.done, 'the refused job to end')
    expect((ended as JobwireError | null)?.code).toBe('unauthorized')
    await append(s, kept.id, [{ type: 'chunk', text: 'still here' }])
    await until(() => keptWatch.state?.text === 'still here', 'the other job goes on')
    expect(client.error).toBeNull()
    expect(client.connection.state).toBe('live')
    expect(ws.sockets).toHaveLength(1)
  })

  it('cancels a job with its own token over the socket', async () => {
    server = await startTestServer({ tokenSecret: secret })
    const s = server
    const job = await createJob(s)
    client = createJobwireClient({
      url: s.url,
      getToken: (request) => mintSubscriptionToken({ secret, jobIds: request.scope === 'jobs' ? [...request.jobIds] : [], rights: ['read', 'cancel'] }).token,
      WebSocket: recordingWebSocket().WebSocket,
    })
    const watch = client.watchJob(job.id)
    await until(() => watch.connection === 'live', 'live')
    await watch.cancel('not needed')
    await until(() => watch.state?.status === 'cancelled', 'the cancelled event')
  })
})

describe('per-job tokens over SSE and polling', () => {
  for (const transport of ['sse', 'poll'] as const satisfies readonly TransportName[]) {
    it(`each job's ${transport} stream uses that job's own token`, async () => {
      server = await startTestServer({ tokenSecret: secret })
      const s = server
      const jobs = [await createJob(s), await createJob(s), await createJob(s)]
      const tokens = perJobTokens()
      client = createJobwireClient({ url: s.url, getToken: tokens.getToken, transports: [transport], pollIntervalMs: 100 })
      const watch = client.watchJobs(jobs.map((job) => job.id))
      await until(() => watch.states.size === 3, 'three snapshots')
      for (const job of jobs) await append(s, job.id, [{ type: 'completed', result: job.id }])
      await until(() => watch.watches.every((one) => one.done), 'every job to end')
      expect(watch.watches.map((one) => [one.error, one.state?.result])).toEqual(jobs.map((job) => [null, job.id]))
      for (const job of jobs) expect(tokens.calls(job.id)).toBeGreaterThanOrEqual(1)
    })
  }
})

describe('a tenant-wide token', () => {
  it("watches and lists every job of the tenant, of any user, and no other tenant's", async () => {
    server = await startTestServer({ tokenSecret: secret })
    const s = server
    const ann = await createJob(s, { owner: { tenant: 'acme', user: 'ann' } })
    const bob = await createJob(s, { owner: { tenant: 'acme', user: 'bob' } })
    const other = await createJob(s, { owner: { tenant: 'globex', user: 'cy' } })
    const minted = await s.api.call<{ token: string }>('POST', '/v1/tokens', { tenant: 'acme', tenantWide: true })
    expect(minted.status).toBe(200)
    client = createJobwireClient({ url: s.url, getToken: () => minted.body.token, WebSocket: recordingWebSocket().WebSocket })
    const team = client.watchJobs([ann.id, bob.id])
    await until(() => team.states.size === 2, 'both teammates’ jobs')
    let refused: JobwireError | null = null
    client.watchJob(other.id, { onEnd: (error) => (refused = error) })
    await until(() => refused !== null, 'the other tenant’s job refused')
    expect((refused as JobwireError | null)?.code).toBe('job_not_found')
    const page = await client.listJobs()
    expect(page.jobs.map((job) => job.id).sort()).toEqual([ann.id, bob.id].sort())
  })
})
