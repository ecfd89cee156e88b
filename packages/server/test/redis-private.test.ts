import { afterEach, describe, expect, it } from 'vitest'
import type { JobState } from '@jobwire/protocol'
import { collect, openSse, seededRandom, sleep } from './fixtures.js'
import { redisReachable } from './redis-fixtures/redis.js'
import {
  checkDeliveries,
  clusterAuth as auth,
  followSse,
  followWs,
  redisServerAvailable,
  startNodes,
  startPrivateRedis,
  stopNode,
  type Node,
  type PrivateRedis,
  type Watcher,
} from './redis-fixtures/cluster.js'
import { epochSeqGap } from '@jobwire/server'

/**
 * Redis itself fails under real `jobwire serve --redis` processes: it restarts without
 * persistence, restarts from an older dump, freezes, shuts down and comes back. Each test runs
 * its own `redis-server` on a free port (the shared one on 6379 serves other test files at the
 * same time and is never restarted). Watchers must get every seq once, in order, or an explicit
 * reset snapshot / job_not_found — never a silent gap; no acknowledged write may be lost while
 * Redis keeps its data; no node may crash, and each recovers by itself.
 */
if (redisReachable('Redis store: Redis restarts and outages') && redisServerAvailable('Redis store: Redis restarts and outages')) {
  const cleanups: (() => Promise<unknown>)[] = []
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined)
  })

  async function setUp(nodeCount: number): Promise<{ redis: PrivateRedis; nodes: Node[] }> {
    const redis = await startPrivateRedis()
    cleanups.push(() => redis.close())
    const nodes = await startNodes(nodeCount, { redisUrl: redis.url, prefix: 'jobwire' })
    cleanups.push(async () => {
      for (const node of nodes) await stopNode(node, 'SIGKILL')
    })
    return { redis, nodes }
  }

  function watchAll(nodes: Node[], jobs: string[], count: number): Watcher[] {
    return Array.from({ length: count }, (_, i) => (i % 2 === 0 ? followSse : followWs)(nodes, jobs[i % jobs.length] as string, i % nodes.length))
  }

  async function createJobs(node: Node, count: number, type: string): Promise<string[]> {
    const jobs: string[] = []
    for (let i = 0; i < count; i++) {
      const created = await node.client.call<JobState>('POST', '/v1/jobs', { type, dispatch: false })
      expect(created.status, JSON.stringify(created.body)).toBe(201)
      jobs.push(created.body.id)
    }
    return jobs
  }

  /** The job as any node sees it now, or null once it is gone. */
  async function jobNow(node: Node, jobId: string): Promise<JobState | null> {
    const answer = await node.client.call<JobState>('GET', `/v1/jobs/${jobId}`)
    if (answer.status === 404) return null
    expect(answer.status).toBe(200)
    return answer.body
  }

  interface Producer {
    /** Chunk text per acknowledged seq. */
    acked: Map<number, string>
    statuses: Map<number, number>
    /** 503 answers that came without a Retry-After header. */
    missingRetryAfter: number
    gone: boolean
  }

  /**
   * Writes one chunk batch after another to a job through the nodes in turn until `stop()` says so,
   * through every outage: a 503 is retried later (with new chunks: the first may or may not have
   * been applied), a 404 (the job is gone) ends it.
   */
  function produce(nodes: Node[], jobId: string, j: number, stop: () => boolean, random: () => number): { producer: Producer; done: Promise<void> } {
    const producer: Producer = { acked: new Map(), statuses: new Map(), missingRetryAfter: 0, gone: false }
    const done = (async () => {
      for (let b = 0; !stop(); b++) {
        const node = nodes[(j + b) % nodes.length] as Node
        const texts = Array.from({ length: 1 + Math.floor(random() * 2) }, (_, k) => `<${j}.${b}.${k}>`)
        const answer = await node.client
          .call<{ events: { seq: number; type: string }[] }>('POST', `/v1/jobs/${jobId}/events`, { events: texts.map((text) => ({ type: 'chunk', text })) })
          .catch(() => null)
        if (answer === null) {
          await sleep(50)
          continue
        }
        producer.statuses.set(answer.status, (producer.statuses.get(answer.status) ?? 0) + 1)
        if (answer.status === 200) {
          answer.body.events.filter((e) => e.type === 'chunk').forEach((e, k) => producer.acked.set(e.seq, texts[k] as string))
        } else if (answer.status === 404) {
          producer.gone = true
          return
        } else if (answer.status === 503) {
          if (answer.headers['retry-after'] === undefined) producer.missingRetryAfter++
          await sleep(50)
        } else {
          throw new Error(`POST events: HTTP ${answer.status} ${JSON.stringify(answer.body)}`)
        }
        await sleep(15 + Math.floor(random() * 25))
      }
    })()
    return { producer, done }
  }

  /** Completes the job through some node (Redis may still be settling). */
  async function complete(nodes: Node[], jobId: string): Promise<void> {
    for (let attempt = 0; attempt < 200; attempt++) {
      const node = nodes[attempt % nodes.length] as Node
      const answer = await node.client.call('POST', `/v1/jobs/${jobId}/events`, { events: [{ type: 'completed' }] }).catch(() => null)
      if (answer?.status === 200) return
      expect(answer?.status ?? 503).toBe(503)
      await sleep(50)
    }
    throw new Error(`could not complete ${jobId}`)
  }

  /** Each part is found in `text` after the one before it. */
  function inOrder(text: string, parts: string[]): boolean {
    let from = 0
    for (const part of parts) {
      const at = text.indexOf(part, from)
      if (at < 0) return false
      from = at + part.length
    }
    return true
  }

  async function waitReady(node: Node, status: 200 | 503): Promise<void> {
    for (let i = 0; i < 600; i++) {
      const answer = await node.client.call('GET', '/readyz').catch(() => ({ status: 0 }))
      if (answer.status === status) return
      await sleep(25)
    }
    throw new Error(`${node.url}/readyz never answered ${status}`)
  }

  /** A new job works on every node: created on one, written on another, streamed from a third. */
  async function newJobWorks(nodes: Node[]): Promise<void> {
    for (let i = 0; i < nodes.length; i++) {
      const a = nodes[i] as Node
      const b = nodes[(i + 1) % nodes.length] as Node
      const created = await a.client.call<JobState>('POST', '/v1/jobs', { type: 'after', dispatch: false })
      expect(created.status).toBe(201)
      const appended = await b.client.call<{ seq: number }>('POST', `/v1/jobs/${created.body.id}/events`, {
        events: [{ type: 'chunk', text: 'fresh' }, { type: 'completed' }],
      })
      expect(appended.status).toBe(200)
      expect(appended.body.seq).toBe(4)
      const stream = await openSse(`${a.url}/v1/jobs/${created.body.id}/stream?after=0`, { headers: auth })
      const messages = await collect(stream.messages())
      expect(messages.flatMap((m) => (m.type === 'event' ? [m.event.seq] : []))).toEqual([1, 2, 3, 4])
    }
  }

  describe('Redis store: Redis restarts and outages (a private redis-server)', () => {
    it('Redis restarted without persistence mid-stream: every watcher is told job_not_found (never a silent gap), producers get 404, new jobs work', { timeout: 180_000 }, async () => {
      const seed = Number(process.env.JOBWIRE_TEST_SEED ?? Math.floor(Math.random() * 2 ** 31))
      const random = seededRandom(seed)
      const { redis, nodes } = await setUp(2)
      const jobs = await createJobs(nodes[0] as Node, 4, 'volatile')
      const watchers = watchAll(nodes, jobs, 40)
      let stopping = false
      const producers = jobs.map((jobId, j) => produce(nodes, jobId, j, () => stopping, random))
      while (producers.some(({ producer }) => producer.acked.size < 10)) await sleep(20)

      await redis.signal('SIGKILL')
      await sleep(300)
      await redis.start() // empty: nothing was ever saved
      await Promise.all(producers.map(({ done }) => done))
      stopping = true
      await Promise.all(watchers.map((w) => w.done))

      const finalSeq = new Map<string, number | null>()
      for (const jobId of jobs) finalSeq.set(jobId, (await jobNow(nodes[1] as Node, jobId))?.seq ?? null)
      expect([...finalSeq.values()]).toEqual(jobs.map(() => null))
      const report = checkDeliveries(`redis restarted without persistence (seed ${seed}) nodes=2`, watchers, finalSeq)
      expect({ lost: report.lost, duplicated: report.duplicated, reordered: report.reordered }).toEqual({ lost: 0, duplicated: 0, reordered: 0 })
      expect(watchers.flatMap((w) => w.problems)).toEqual([])
      // Every watcher was told, explicitly: its job is gone.
      expect(report.gone).toBe(watchers.length)
      expect(producers.every(({ producer }) => producer.gone)).toBe(true)
      for (const node of nodes) expect(node.server.child.exitCode).toBeNull()
      for (const node of nodes) await waitReady(node, 200)
      await newJobWorks(nodes)
    })

    it('Redis restarted from an older dump (SAVE, more writes, crash): resumers of surviving jobs get a reset snapshot of what survived, newer jobs are gone, no seq reused', { timeout: 180_000 }, async () => {
      const seed = Number(process.env.JOBWIRE_TEST_SEED ?? Math.floor(Math.random() * 2 ** 31))
      const random = seededRandom(seed)
      const { redis, nodes } = await setUp(2)
      const older = await createJobs(nodes[0] as Node, 3, 'rolled-back')
      let stopping = false
      const producers = older.map((jobId, j) => produce(nodes, jobId, j, () => stopping, random))
      const watchers = watchAll(nodes, older, 30)
      while (producers.some(({ producer }) => producer.acked.size < 8)) await sleep(20)
      // Each job's text just before the dump: what survives starts with it.
      const textAtSave = new Map<string, string>()
      for (const jobId of older) textAtSave.set(jobId, (await jobNow(nodes[0] as Node, jobId))?.text ?? '')
      expect(await redis.admin.call('SAVE')).toBe('OK')
      // Created after the dump: Redis will forget them entirely.
      const newer = await createJobs(nodes[1] as Node, 2, 'rolled-back')
      producers.push(...newer.map((jobId, j) => produce(nodes, jobId, 10 + j, () => stopping, random)))
      watchers.push(...watchAll(nodes, newer, 20))
      const ackedAtSave = producers.map(({ producer }) => producer.acked.size)
      while (producers.some(({ producer }, i) => producer.acked.size < (ackedAtSave[i] ?? 0) + 5)) await sleep(20)

      await redis.signal('SIGKILL')
      await redis.start() // loads the dump: the older jobs as they were at SAVE
      // Surviving jobs carry on: wait for writes on them after the restart, then end everything.
      while (producers.slice(0, older.length).some(({ producer }) => ![...producer.acked.keys()].some((seq) => seq > epochSeqGap))) await sleep(20)
      stopping = true
      await Promise.all(producers.map(({ done }) => done))
      for (const jobId of older) await complete(nodes, jobId)
      await Promise.all(watchers.map((w) => w.done))

      const finalSeq = new Map<string, number | null>()
      for (const jobId of [...older, ...newer]) finalSeq.set(jobId, (await jobNow(nodes[0] as Node, jobId))?.seq ?? null)
      const report = checkDeliveries(`redis restarted from an older dump (seed ${seed}) nodes=2`, watchers, finalSeq)
      expect({ lost: report.lost, duplicated: report.duplicated, reordered: report.reordered }).toEqual({ lost: 0, duplicated: 0, reordered: 0 })
      expect(watchers.flatMap((w) => w.problems)).toEqual([])
      for (const jobId of newer) expect(finalSeq.get(jobId)).toBeNull()
      for (const watcher of watchers) {
        if (newer.includes(watcher.jobId)) {
          expect(watcher.gone).toBe(true)
          continue
        }
        // A surviving job: one explicit reset into the new epoch, to a snapshot of what survived:
        // the dump's text, then whatever was written after the restart before the watcher came
        // back. Both it and what the watcher had seen agree with the text at the dump.
        expect(watcher.gone).toBe(false)
        const resets = watcher.seen.filter((s) => s.kind === 'snapshot')
        expect(resets.length).toBeGreaterThanOrEqual(1)
        for (const reset of resets) {
          if (reset.kind !== 'snapshot') continue
          expect(reset.reset).toBe(true)
          expect(reset.seq).toBeGreaterThan(epochSeqGap)
          const saved = textAtSave.get(watcher.jobId) ?? ''
          expect(reset.text.startsWith(saved), `${reset.text} starts with ${saved}`).toBe(true)
          expect(reset.textBefore.startsWith(saved) || saved.startsWith(reset.textBefore), `${reset.textBefore} agrees with ${saved}`).toBe(true)
        }
        const final = await jobNow(nodes[1] as Node, watcher.jobId)
        expect(final?.status).toBe('completed')
        expect(watcher.text).toBe(final?.text)
      }
      // What was acknowledged after the restart is all there, in order.
      for (const [i, jobId] of older.entries()) {
        const text = (await jobNow(nodes[0] as Node, jobId))?.text ?? ''
        const afterRestart = [...(producers[i]?.producer.acked ?? [])].filter(([seq]) => seq > epochSeqGap).sort((a, b) => a[0] - b[0])
        expect(inOrder(text, afterRestart.map(([, t]) => t))).toBe(true)
      }
      for (const node of nodes) expect(node.server.child.exitCode).toBeNull()
      await newJobWorks(nodes)
    })

    it('Redis frozen (SIGSTOP), then shut down and restarted from its dump: writes get 503 + Retry-After, /readyz is red, no acknowledged write lost, no crash, recovery by itself', { timeout: 180_000 }, async () => {
      const seed = Number(process.env.JOBWIRE_TEST_SEED ?? Math.floor(Math.random() * 2 ** 31))
      const random = seededRandom(seed)
      const { redis, nodes } = await setUp(2)
      const jobs = await createJobs(nodes[0] as Node, 2, 'outage')
      const watchers = watchAll(nodes, jobs, 20)
      let stopping = false
      const producers = jobs.flatMap((jobId, j) => [produce(nodes, jobId, j, () => stopping, random), produce(nodes, jobId, j + 1, () => stopping, random)])
      const acked = (): number => producers.reduce((sum, { producer }) => sum + producer.acked.size, 0)
      const unavailable = (): number => producers.reduce((sum, { producer }) => sum + (producer.statuses.get(503) ?? 0), 0)
      while (acked() < 30) await sleep(20)

      // Frozen: connections stay open, nothing answers; commands time out into 503.
      await redis.signal('SIGSTOP')
      for (const node of nodes) await waitReady(node, 503)
      await redis.signal('SIGCONT')
      for (const node of nodes) await waitReady(node, 200)
      let mark = acked()
      while (acked() < mark + 20) await sleep(20)

      // Gone: connections refused; every call fails at once.
      const refusedBefore = unavailable()
      await redis.shutdownSaving()
      for (const node of nodes) await waitReady(node, 503)
      while (unavailable() < refusedBefore + 4) await sleep(20)
      await redis.start()
      for (const node of nodes) await waitReady(node, 200)
      mark = acked()
      while (acked() < mark + 20) await sleep(20)
      stopping = true
      await Promise.all(producers.map(({ done }) => done))
      for (const jobId of jobs) await complete(nodes, jobId)
      await Promise.all(watchers.map((w) => w.done))

      for (const { producer } of producers) {
        expect([...producer.statuses.keys()].filter((status) => status !== 200 && status !== 503)).toEqual([])
        expect(producer.missingRetryAfter).toBe(0)
        expect(producer.gone).toBe(false)
      }
      expect(unavailable()).toBeGreaterThan(0)
      // No acknowledged write lost: every acknowledged chunk is in the job's text, in seq order.
      // (The restart changed Redis's run_id, so the jobs are in a new epoch and their old log is
      // dropped; the text is the state Redis kept.)
      const finalSeq = new Map<string, number | null>()
      for (const [j, jobId] of jobs.entries()) {
        const job = await jobNow(nodes[1] as Node, jobId)
        expect(job?.status).toBe('completed')
        finalSeq.set(jobId, job?.seq ?? null)
        const mine = producers.slice(2 * j, 2 * j + 2).flatMap(({ producer }) => [...producer.acked])
        expect(inOrder(job?.text ?? '', mine.sort((a, b) => a[0] - b[0]).map(([, text]) => text))).toBe(true)
      }
      const report = checkDeliveries(`redis frozen, then shut down and restarted (seed ${seed}) nodes=2`, watchers, finalSeq)
      expect({ lost: report.lost, duplicated: report.duplicated, reordered: report.reordered }).toEqual({ lost: 0, duplicated: 0, reordered: 0 })
      expect(watchers.flatMap((w) => w.problems)).toEqual([])
      for (const watcher of watchers) expect(watcher.text).toBe((await jobNow(nodes[0] as Node, watcher.jobId))?.text)
      for (const node of nodes) expect(node.server.child.exitCode).toBeNull()
      await newJobWorks(nodes)
    })
  })
}
