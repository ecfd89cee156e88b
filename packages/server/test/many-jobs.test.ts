import { afterEach, describe, expect, it, vi } from 'vitest'
import type { JobState } from '@jobwire/protocol'
import { mintSubscriptionToken } from '@jobwire/backend'
import { defaultCoreLimits, Dispatcher, JobService, MemoryStore, startServer, type RunningServer } from '@jobwire/server'
import type { AppendPlan, AppendResult, JobRecord, LogRange } from '../src/core/store.js'
import { createJsonClient } from './fixtures.js'
import { openWs, wsUrl, type WsTestClient } from './ws-client.js'

/**
 * The server's work over many jobs at once — a worker's signals poll over every job it runs, the
 * sweep that takes back a dead worker's jobs, the refresh of watched jobs' unwatched deadlines —
 * reads and writes those jobs together, not one after another: on Redis each is a round trip, and
 * one after another a signals poll over 250 jobs took 13 s on a busy node (so did a cancel reaching a
 * quiet job). A real memory store that counts the calls it has in flight shows which.
 */
class OverlapStore extends MemoryStore {
  inFlight = 0
  most = 0
  reads = 0

  async #counted<T>(call: () => Promise<T>): Promise<T> {
    this.inFlight++
    this.most = Math.max(this.most, this.inFlight)
    // A turn of the event loop, as a store that talks to another process takes at least.
    await new Promise((resolve) => setImmediate(resolve))
    try {
      return await call()
    } finally {
      this.inFlight--
    }
  }

  override getRecord(id: string): Promise<JobRecord | null> {
    this.reads++
    return this.#counted(() => super.getRecord(id))
  }

  override append(jobId: string, plan: AppendPlan): Promise<AppendResult> {
    return this.#counted(() => super.append(jobId, plan))
  }

  override getJob(id: string): Promise<JobState | null> {
    return this.#counted(() => super.getJob(id))
  }

  override readLog(jobId: string, after: number, limit: number): Promise<LogRange | null> {
    return this.#counted(() => super.readLog(jobId, after, limit))
  }

  reset(): void {
    this.most = 0
    this.reads = 0
  }
}

const worker = 'worker-1'

/** `count` jobs of `type`, claimed by one worker; `now` is the dispatcher's clock. */
async function claimed(count: number, options: { now?: () => number; unwatchedMs?: number } = {}) {
  const store = new OverlapStore()
  const service = new JobService(store, defaultCoreLimits)
  const dispatcher = new Dispatcher(service, options.now)
  const type = 'transcribe'
  for (let i = 0; i < count; i++) {
    await service.createJob({ type, ...(options.unwatchedMs === undefined ? {} : { deadlines: { cancelWhenUnwatchedMs: options.unwatchedMs } }) })
  }
  const jobs = await dispatcher.claimMany({ types: [type], worker, leaseMs: 10_000, waitMs: 0, max: count })
  expect(jobs).toHaveLength(count)
  store.reset()
  return { store, service, dispatcher, jobs: jobs.map(({ job, lease }) => ({ id: job.id, lease: lease.token })) }
}

describe('work over many jobs at once', () => {
  it("a signals poll over a worker's 300 jobs reads them together, and names the one cancelled among them", async () => {
    const { store, service, dispatcher, jobs } = await claimed(300)
    const quiet = jobs[137]
    if (quiet === undefined) throw new Error('300 jobs expected')
    await service.cancelJob(quiet.id, 'the user closed the tab')
    store.reset()
    await expect(dispatcher.signals(jobs, 0)).resolves.toEqual([{ jobId: quiet.id, reason: 'cancelled' }])
    expect(store.most).toBe(300)
  })

  it('a waiting signals poll reads again only the jobs whose events woke it: one its worker finished (300 → 1 read), then one cancelled, which ends it', async () => {
    const { store, service, dispatcher, jobs } = await claimed(300)
    const [finished, cancelled] = [jobs[5], jobs[9]]
    if (finished === undefined || cancelled === undefined) throw new Error('300 jobs expected')
    const waiting = dispatcher.signals(jobs, 30_000)
    await vi.waitFor(() => expect(store.reads).toBe(300))
    // Its own worker's end wakes the poll but is no news to that worker: it keeps waiting.
    await service.appendEvents(finished.id, [{ type: 'completed', data: { result: null } }], { lease: finished.lease, batch: 1 })
    await vi.waitFor(() => expect(store.reads).toBe(301))
    await service.cancelJob(cancelled.id, 'the user closed the tab')
    await expect(waiting).resolves.toEqual([
      { jobId: finished.id, reason: 'finished' },
      { jobId: cancelled.id, reason: 'cancelled' },
    ])
    expect(store.reads).toBe(302)
  })

  it('a job listed twice (an earlier run under an old lease, the current one) is answered for each entry on its own: one lease_lost, not two', async () => {
    const { dispatcher, jobs } = await claimed(1)
    const [held] = jobs
    if (held === undefined) throw new Error('1 job expected')
    await expect(dispatcher.signals([{ id: held.id, lease: 'an-earlier-lease' }, held], 0)).resolves.toEqual([{ jobId: held.id, reason: 'lease_lost' }])
  })

  it('the lease sweep takes back the 200 jobs of a worker that died at once (its most per tick), each re-queued for another worker', async () => {
    let now = Date.now()
    const { store, service, dispatcher, jobs } = await claimed(200, { now: () => now })
    now += 60_000
    await expect(dispatcher.reclaimLapsed()).resolves.toBe(200)
    expect(store.most).toBe(200)
    for (const { id } of jobs) expect((await service.getJob(id)).status).toBe('queued')
  })

  it('the refresh of watched jobs pushes back the unwatched deadline of all 200 at once', async () => {
    const { store, service, jobs } = await claimed(200, { unwatchedMs: 60_000 })
    const stop = jobs.map(({ id }) => service.deadlines.watching(id))
    await expect(service.deadlines.refreshWatched()).resolves.toBe(200)
    // First its deadline setting is read, then the touch is written: each of both together.
    expect(store.most).toBe(200)
    for (const done of stop) done()
  })
})

describe('a WebSocket watching many jobs of one person', () => {
  const secret = 'many-jobs-suite-token-secret-0123456789'
  const servers: RunningServer[] = []
  const clients: WsTestClient[] = []
  afterEach(async () => {
    for (const client of clients.splice(0)) client.close()
    for (const server of servers.splice(0)) await server.close()
  })

  it("opens all 150 of a person's unfinished jobs together on subscribe_user, and checks them all together against a refreshed token", async () => {
    const store = new OverlapStore()
    const server = await startServer({ store, logger: false, config: { port: 0, host: '127.0.0.1', memory: true, tokenSecret: secret, createLimit: 1000 } })
    servers.push(server)
    const owner = { tenant: 'acme', user: 'ann' }
    const api = createJsonClient(server.url, server.adminKey.key)
    const ids: string[] = []
    for (let i = 0; i < 150; i++) {
      const made = await api.call<JobState>('POST', '/v1/jobs', { type: 'transcribe', owner })
      expect(made.status).toBe(201)
      ids.push(made.body.id)
    }
    await api.close()
    const client = await openWs(wsUrl(server.url), { token: mintSubscriptionToken({ secret, ...owner }).token })
    clients.push(client)
    store.reset()
    client.send({ type: 'subscribe_user' })
    await client.next((m) => m.type === 'user_synced')
    const snapshots = client.received.flatMap((m) => (m.type === 'snapshot' ? [m.jobId] : []))
    expect(snapshots.sort()).toEqual([...ids].sort())
    expect(store.most).toBeGreaterThanOrEqual(150)

    // A token for one of the jobs only: the other 149 streams end, each with its error, all checked together.
    store.reset()
    const mark = client.received.length
    const [kept, ...ended] = ids as [string, ...string[]]
    client.send({ type: 'refresh_token', token: mintSubscriptionToken({ secret, jobIds: [kept] }).token })
    await client.next((m) => m.type === 'token_refreshed', mark)
    for (const jobId of ended) await client.next((m) => m.type === 'error' && m.jobId === jobId, mark)
    expect(client.received.slice(mark).flatMap((m) => (m.type === 'error' && m.jobId !== undefined ? [m.error.code] : []))).toEqual(ended.map(() => 'job_not_found'))
    expect(store.most).toBeGreaterThanOrEqual(149)
  })
})
