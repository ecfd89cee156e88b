import { describe, expect, it } from 'vitest'
import type { JobEvent, JobState, StreamMessage } from '@jobwire/protocol'
import { openSse, seededRandom, sleep } from './fixtures.js'
import { deleteKeys, redisReachable, redisTestRun, redisUrl } from './redis-fixtures/redis.js'
import {
  checkDeliveries,
  clusterAuth as auth,
  followSse,
  followWs,
  postAnywhere,
  readWholeLog as readLog,
  startNode,
  startNodes as startClusterNodes,
  stopNode,
  type Node,
  type Watcher,
} from './redis-fixtures/cluster.js'

/**
 * Real `jobwire serve --redis` processes (they import dist, so `tsc -b` must have run) sharing one
 * Redis prefix, real SSE and WebSocket sockets, producers writing through every node. A node is
 * killed with SIGKILL mid-stream; every node is restarted in turn under load; Redis loses our
 * keys; Redis pauses writes. Subscribers must see every seq exactly once and in order, or an
 * explicit reset / job_not_found, never a silent gap. (Redis itself restarting or going away:
 * redis-private.test.ts, on a redis-server of its own.)
 */
if (redisReachable('Redis store: real processes')) {
  const { admin, cleanups, nextPrefix } = redisTestRun('processes')

  /** Nodes on the shared Redis, killed after the test whatever happens (replacements too: see `track`). */
  async function startNodes(count: number, prefix: string, args: string[] = []): Promise<Node[]> {
    return track(await startClusterNodes(count, { redisUrl, prefix, args }))
  }

  function track(nodes: Node[]): Node[] {
    cleanups.push(async () => {
      for (const node of nodes) await stopNode(node, 'SIGKILL')
    })
    return nodes
  }

  async function readWholeLog(client: Node['client'], jobId: string): Promise<JobEvent[]> {
    const log = await readLog(client, jobId)
    expect(log, `the log of ${jobId}`).not.toBeNull()
    return log as JobEvent[]
  }

  /** Reads every job's log: each acknowledged chunk at the seq it was acknowledged with, seqs 1..N. Returns the final seqs. */
  async function verifyLogs(client: Node['client'], acked: ReadonlyMap<string, ReadonlyMap<number, string>>): Promise<Map<string, number>> {
    const finalSeq = new Map<string, number>()
    for (const [jobId, chunks] of acked) {
      const log = await readWholeLog(client, jobId)
      const bySeq = new Map(log.map((e) => [e.seq, e]))
      for (const [seq, text] of chunks) expect(bySeq.get(seq)).toMatchObject({ type: 'chunk', data: { text } })
      expect(log.map((e) => e.seq)).toEqual(Array.from({ length: log.length }, (_, i) => i + 1))
      finalSeq.set(jobId, log.length)
    }
    return finalSeq
  }

  /** Half the watchers on SSE, half on WebSocket, spread over the nodes and jobs. */
  function watchAll(nodes: Node[], jobs: string[], count: number): Watcher[] {
    return Array.from({ length: count }, (_, i) => (i % 2 === 0 ? followSse : followWs)(nodes, jobs[i % jobs.length] as string, i % nodes.length))
  }

  async function createJobs(nodes: Node[], count: number, type: string): Promise<string[]> {
    const jobs: string[] = []
    for (let i = 0; i < count; i++) {
      const created = await (nodes[i % nodes.length] as Node).client.call<JobState>('POST', '/v1/jobs', { type, dispatch: false })
      expect(created.status, JSON.stringify(created.body)).toBe(201)
      jobs.push(created.body.id)
    }
    return jobs
  }

  /** Appends one batch of 1-3 chunks through some live node and records what was acknowledged at which seq. */
  async function writeBatch(nodes: Node[], start: number, jobId: string, texts: string[], acked: Map<number, string>): Promise<void> {
    const answer = await postAnywhere(nodes, start, `/v1/jobs/${jobId}/events`, { events: texts.map((text) => ({ type: 'chunk', text })) })
    expect(answer.status, JSON.stringify(answer.body)).toBe(200)
    const chunks = (answer.body as { events: { seq: number; type: string }[] }).events.filter((e) => e.type === 'chunk')
    chunks.forEach((e, k) => acked.set(e.seq, texts[k] as string))
  }

  describe('Redis store: real processes', () => {
    it('3 nodes, 300 subscribers on SSE and WebSocket, producers on every node, one node killed -9 mid-stream: every subscriber gets every seq once, in order', { timeout: 180_000 }, async () => {
      const seed = Number(process.env.JOBWIRE_TEST_SEED ?? Math.floor(Math.random() * 2 ** 31))
      const random = seededRandom(seed)
      const nodes = await startNodes(3, nextPrefix())
      const jobs = await createJobs(nodes, 10, 'fanout')
      const watchers = watchAll(nodes, jobs, 300)

      // Producers: 40 batches of 1-3 chunks per job, spread over the nodes; node 2 dies a third of the way in.
      const batches = 40
      const acked = new Map<string, Map<number, string>>()
      let written = 0
      const killAt = Math.floor((jobs.length * batches) / 3)
      let killed: Promise<unknown> | null = null
      await Promise.all(
        jobs.map(async (jobId, j) => {
          const mine = new Map<number, string>()
          acked.set(jobId, mine)
          for (let b = 0; b < batches; b++) {
            const texts = Array.from({ length: 1 + Math.floor(random() * 3) }, (_, k) => `${j}.${b}.${k};`)
            await writeBatch(nodes, j + b, jobId, texts, mine)
            if (++written === killAt) killed = stopNode(nodes[2] as Node, 'SIGKILL')
            await sleep(Math.floor(random() * 15))
          }
          await postAnywhere(nodes, j, `/v1/jobs/${jobId}/events`, { events: [{ type: 'completed', result: { job: j } }] })
        }),
      )
      expect(await killed).toMatchObject({ signal: 'SIGKILL' })
      await Promise.all(watchers.map((w) => w.done))

      const finalSeq = await verifyLogs((nodes[0] as Node).client, acked)
      const report = checkDeliveries(`redis kill -9 checker (seed ${seed}) nodes=3`, watchers, finalSeq)
      expect({ lost: report.lost, duplicated: report.duplicated, reordered: report.reordered }).toEqual({ lost: 0, duplicated: 0, reordered: 0 })
      expect(watchers.flatMap((w) => w.problems)).toEqual([])
      // Nothing was lost in Redis: every resume is exact (no snapshot at all), no job vanished.
      expect(watchers.flatMap((w) => w.seen.filter((s) => s.kind === 'snapshot'))).toEqual([])
      expect(report.gone).toBe(0)
      // The killed node's subscribers, about a third, on both transports, really moved.
      expect(report.moved).toBeGreaterThanOrEqual(50)
      expect(watchers.filter((w) => w.transport === 'ws' && w.reconnects > 0).length).toBeGreaterThanOrEqual(25)
      for (const node of nodes.slice(0, 2)) expect(node.server.child.exitCode).toBeNull()
    })

    it('rolling restart under load (each node stopped with SIGTERM and replaced in turn): every subscriber gets every seq once, in order', { timeout: 180_000 }, async () => {
      const seed = Number(process.env.JOBWIRE_TEST_SEED ?? Math.floor(Math.random() * 2 ** 31))
      const random = seededRandom(seed)
      const prefix = nextPrefix()
      const nodes = await startNodes(3, prefix)
      const jobs = await createJobs(nodes, 8, 'rolling')
      const watchers = watchAll(nodes, jobs, 120)

      const acked = new Map<string, Map<number, string>>()
      let restarted = false
      const producers = Promise.all(
        jobs.map(async (jobId, j) => {
          const mine = new Map<number, string>()
          acked.set(jobId, mine)
          // Until every node was replaced, and at least 20 batches either way; at most 250 (750
          // events, under the log cap: a resume never has to fall back to a snapshot).
          for (let b = 0; (!restarted || b < 20) && b < 250; b++) {
            const texts = Array.from({ length: 1 + Math.floor(random() * 3) }, (_, k) => `${j}.${b}.${k};`)
            await writeBatch(nodes, j + b, jobId, texts, mine)
            await sleep(20 + Math.floor(random() * 40))
          }
          await postAnywhere(nodes, j, `/v1/jobs/${jobId}/events`, { events: [{ type: 'completed', result: { job: j } }] })
        }),
      )
      const exits: unknown[] = []
      for (let i = 0; i < nodes.length; i++) {
        await sleep(300)
        exits.push(await stopNode(nodes[i] as Node, 'SIGTERM'))
        const replacement = await startNode({ redisUrl, prefix })
        track([replacement])
        nodes[i] = replacement
      }
      restarted = true
      await producers
      await Promise.all(watchers.map((w) => w.done))

      // Graceful: each node exited by itself with 0.
      expect(exits).toEqual([{ code: 0, signal: null }, { code: 0, signal: null }, { code: 0, signal: null }])
      const finalSeq = await verifyLogs((nodes[0] as Node).client, acked)
      const report = checkDeliveries(`redis rolling-restart checker (seed ${seed}) nodes=3`, watchers, finalSeq)
      expect({ lost: report.lost, duplicated: report.duplicated, reordered: report.reordered }).toEqual({ lost: 0, duplicated: 0, reordered: 0 })
      expect(watchers.flatMap((w) => w.problems)).toEqual([])
      expect(watchers.flatMap((w) => w.seen.filter((s) => s.kind === 'snapshot'))).toEqual([])
      // Every original node went away, so every watcher moved at least once.
      expect(report.moved).toBe(watchers.length)
    })

    it('Redis loses our keys under running nodes: live streams end with job_not_found, resumes get 404, new jobs work', async () => {
      const prefix = nextPrefix()
      const [a, b] = (await startNodes(2, prefix)) as [Node, Node]
      const created = await a.client.call<JobState>('POST', '/v1/jobs', { type: 'lossy', dispatch: false })
      const jobId = created.body.id
      await a.client.call('POST', `/v1/jobs/${jobId}/events`, { events: [{ type: 'chunk', text: 'a' }, { type: 'chunk', text: 'b' }] })
      const live = await openSse(`${b.url}/v1/jobs/${jobId}/stream?after=0`, { headers: auth })
      cleanups.push(async () => live.close())
      const messages: StreamMessage[] = []
      const reading = (async () => {
        for await (const message of live.messages()) messages.push(message)
      })()
      await live.waitFor(() => messages.filter((m) => m.type === 'event').length === 4)

      expect(await deleteKeys(admin, prefix)).toBeGreaterThan(0)
      await reading // the node notices (its probe) and ends the stream with an explicit error
      expect(messages.at(-1)).toMatchObject({ type: 'error', error: { code: 'job_not_found' } })

      for (const node of [a, b]) {
        const resumed = await openSse(`${node.url}/v1/jobs/${jobId}/stream`, { headers: { ...auth, 'last-event-id': '4' } })
        expect(resumed.status).toBe(404)
        expect(JSON.parse(resumed.body)).toMatchObject({ error: { code: 'job_not_found' } })
        expect((await node.client.call('GET', `/v1/jobs/${jobId}/events?after=4`)).status).toBe(404)
      }
      const fresh = await b.client.call<JobState>('POST', '/v1/jobs', { type: 'lossy', dispatch: false })
      expect(fresh.status).toBe(201)
      const appended = await a.client.call<{ seq: number }>('POST', `/v1/jobs/${fresh.body.id}/events`, { events: [{ type: 'chunk', text: 'new' }] })
      expect(appended.status).toBe(200)
      expect(appended.body.seq).toBe(3)
    })

    it('deadlines outlive the node that was up when they were set: killed -9, the nodes started after it fire each exactly once', async () => {
      const prefix = nextPrefix()
      const sweep = ['--deadline-sweep-interval', '50']
      const [a] = track([await startNode({ redisUrl, prefix, args: sweep })]) as [Node]
      const deadline = 2_000
      const queued = await a.client.call<JobState>('POST', '/v1/jobs', { type: 'nobody-serves', queueTimeout: deadline })
      const running = await a.client.call<JobState>('POST', '/v1/jobs', { type: 'hangs', timeout: deadline })
      const claimed = await a.client.call('POST', '/v1/workers/claim', { types: ['hangs'], worker: 'doomed', leaseMs: 600_000 })
      expect(claimed.status).toBe(200)
      const selfRun = await a.client.call<JobState>('POST', '/v1/jobs', { type: 'self-run', dispatch: false, heartbeatTimeout: deadline })
      const unwatched = await a.client.call<JobState>('POST', '/v1/jobs', { type: 'ignored', cancelWhenUnwatched: deadline })
      // The only node that has seen these jobs dies before any of their deadlines falls.
      await stopNode(a, 'SIGKILL')
      const [b, c] = (await startNodes(2, prefix, sweep)) as [Node, Node]
      const watched: [string, string][] = [
        [queued.body.id, 'queue_timeout'],
        [running.body.id, 'timed_out'],
        [selfRun.body.id, 'runner_lost'],
      ]
      for (const [jobId, code] of watched) {
        // A watcher on another node sees the end as an ordinary terminal event (or, if it came late, a terminal snapshot).
        const stream = await openSse(`${b.url}/v1/jobs/${jobId}/stream`, { headers: { ...auth } })
        const messages: StreamMessage[] = []
        for await (const message of stream.messages()) messages.push(message)
        expect(messages.at(-1), jobId).toMatchObject(messages.at(-1)?.type === 'event' ? { event: { type: 'failed', data: { code } } } : { job: { status: 'failed', error: { code } } })
        expect((await readWholeLog(c.client, jobId)).filter((e) => e.type === 'failed' || e.type === 'cancelled'), jobId).toHaveLength(1)
      }
      // Nobody watches this one (a GET is not a watch): it is cancelled as unwatched.
      for (let tries = 0; (await c.client.call<JobState>('GET', `/v1/jobs/${unwatched.body.id}`)).body.status !== 'cancelled'; tries++) {
        expect(tries, 'the unwatched job to be cancelled').toBeLessThan(400)
        await sleep(50)
      }
      const log = await readWholeLog(b.client, unwatched.body.id)
      expect(log.filter((e) => e.type === 'cancelled')).toEqual([expect.objectContaining({ data: { reason: 'unwatched' } })])
    })

    it('Redis pauses writes (CLIENT PAUSE 1500 WRITE) under load: no acknowledged write lost, no process crashes', async () => {
      const nodes = await startNodes(2, nextPrefix())
      const created = await (nodes[0] as Node).client.call<JobState>('POST', '/v1/jobs', { type: 'paused', dispatch: false })
      const jobId = created.body.id
      const acked = new Map<number, string>()
      const statuses = new Map<number, number>()
      let stop = false
      let sent = 0
      const producers = Array.from({ length: 4 }, async (_, p) => {
        for (let n = 0; !stop; n++) {
          const text = `p${p}.${n};`
          const answer = await (nodes[(p + n) % 2] as Node).client.call<{ events: { seq: number; type: string }[] }>('POST', `/v1/jobs/${jobId}/events`, {
            events: [{ type: 'chunk', text }],
          })
          sent++
          statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1)
          if (answer.status === 200) {
            const chunk = answer.body.events.find((e) => e.type === 'chunk')
            if (chunk !== undefined) acked.set(chunk.seq, text)
          } else {
            expect(answer.status).toBe(503)
            await sleep(20)
          }
        }
      })
      while (sent < 50) await sleep(10)
      expect(await admin.call('CLIENT', 'PAUSE', '1500', 'WRITE')).toBe('OK')
      const ackedAtPause = acked.size
      await sleep(2000)
      const sentAfterPause = sent
      while (sent < sentAfterPause + 50) await sleep(10)
      stop = true
      await Promise.all(producers)

      expect(acked.size).toBeGreaterThan(ackedAtPause)
      expect([...statuses.keys()].every((status) => status === 200 || status === 503)).toBe(true)
      const log = await readWholeLog((nodes[1] as Node).client, jobId)
      const bySeq = new Map(log.map((e) => [e.seq, e]))
      for (const [seq, text] of acked) expect(bySeq.get(seq)).toMatchObject({ type: 'chunk', data: { text } })
      expect(log.map((e) => e.seq)).toEqual(Array.from({ length: log.length }, (_, i) => i + 1))
      for (const node of nodes) {
        expect(node.server.child.exitCode).toBeNull()
        expect((await node.client.call('GET', '/readyz')).status).toBe(200)
      }
    })
  })
}
