import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { isTerminalEvent, type JobEvent, type JobState, type PollResponse, type StreamMessage } from '@jobwire/protocol'
import { createJsonClient, openSse, seededRandom, sleep, spawnServer, type JsonClient, type SpawnedServer } from './fixtures.js'
import { adminClient, deleteKeys, redisReachable, redisUrl, testPrefix } from './redis-fixtures/redis.js'

/**
 * Real `jobwire serve --redis` processes (they import dist, so `tsc -b` must have run) sharing one
 * Redis prefix, real SSE sockets, producers writing through every node. A node is killed with
 * SIGKILL mid-stream; Redis loses our keys; Redis pauses writes. Subscribers must see every seq
 * exactly once and in order, or an explicit reset / job_not_found, never a silent gap.
 */
const apiKey = 'redis-processes-test-key-0123456789'
const auth = { authorization: `Bearer ${apiKey}` }

if (redisReachable('Redis store: real processes')) {
  const base = testPrefix('processes')
  const admin = adminClient()
  let runs = 0
  const cleanups: (() => Promise<unknown>)[] = []
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined)
  })
  afterAll(async () => {
    await deleteKeys(admin, base)
    await admin.quit()
  })

  interface Node {
    server: SpawnedServer
    client: JsonClient
    url: string
    dead: boolean
  }

  async function startNodes(count: number, prefix: string): Promise<Node[]> {
    const servers = await Promise.all(
      Array.from({ length: count }, () =>
        spawnServer(['--redis', redisUrl, '--redis-prefix', prefix, '--port', '0', '--memory', '--heartbeat', '500'], {
          JOBWIRE_API_KEY: apiKey,
          JOBWIRE_STREAMS_PER_IP: '100000',
        }),
      ),
    )
    const nodes = servers.map((server) => {
      const client = createJsonClient(server.url, apiKey)
      cleanups.push(() => server.kill('SIGKILL'), () => client.close())
      return { server, client, url: server.url, dead: false }
    })
    // As a load balancer would: send traffic once /readyz says the node reaches Redis.
    for (const node of nodes) {
      for (let tries = 0; (await node.client.call('GET', '/readyz')).status !== 200; tries++) {
        if (tries > 200) throw new Error(`${node.url} never became ready:\n${node.server.stderr}`)
        await sleep(50)
      }
    }
    return nodes
  }

  /** One SSE watcher that follows its job to the end, moving to another live node when its node dies. */
  interface Watcher {
    jobId: string
    node: number
    seqs: number[]
    reconnects: number
    resets: number
    errors: string[]
    done: Promise<void>
  }

  function follow(nodes: Node[], jobId: string, first: number): Watcher {
    const watcher: Watcher = { jobId, node: first, seqs: [], reconnects: 0, resets: 0, errors: [], done: Promise.resolve() }
    watcher.done = (async () => {
      let lastEventId: string | undefined
      for (let attempt = 0; attempt < 30; attempt++) {
        while ((nodes[watcher.node] as Node).dead) watcher.node = (watcher.node + 1) % nodes.length
        const url = `${(nodes[watcher.node] as Node).url}/v1/jobs/${jobId}/stream${lastEventId === undefined ? '?after=0' : ''}`
        try {
          const connection = await openSse(url, { headers: { ...auth, ...(lastEventId === undefined ? {} : { 'last-event-id': lastEventId }) } })
          if (connection.status !== 200) {
            watcher.errors.push(`HTTP ${connection.status}: ${connection.body}`)
            return
          }
          for await (const message of connection.messages()) {
            if (message.type === 'event') {
              watcher.seqs.push(message.event.seq)
              if (isTerminalEvent(message.event.type)) {
                connection.close()
                return
              }
            } else if (message.type === 'snapshot') {
              watcher.resets++
            } else if (message.type === 'error') {
              watcher.errors.push(message.error.code)
            }
            lastEventId = connection.lastEventId ?? lastEventId
          }
          lastEventId = connection.lastEventId ?? lastEventId
        } catch {
          // The node went away under us: resume elsewhere.
        }
        watcher.reconnects++
        watcher.node = (watcher.node + 1) % nodes.length
        await sleep(20)
      }
      watcher.errors.push('gave up reconnecting')
    })()
    return watcher
  }

  /** Posts a batch through the first live node from `start`, moving on while a node is down. */
  async function post(nodes: Node[], start: number, path: string, body: unknown): Promise<{ status: number; body: unknown }> {
    for (let attempt = 0; attempt < 20; attempt++) {
      const node = nodes[(start + attempt) % nodes.length] as Node
      if (node.dead) continue
      try {
        const answer = await node.client.call('POST', path, body)
        if (answer.status < 500) return answer
      } catch {
        // connection refused or reset: the next node
      }
      await sleep(10)
    }
    throw new Error(`no node accepted POST ${path}`)
  }

  async function readWholeLog(client: JsonClient, jobId: string): Promise<JobEvent[]> {
    const events: JobEvent[] = []
    for (let after = 0; ; ) {
      const page = await client.call<PollResponse>('GET', `/v1/jobs/${jobId}/events?after=${after}`)
      expect(page.status).toBe(200)
      if (page.body.events.length === 0) return events
      events.push(...page.body.events)
      after = page.body.next
    }
  }

  describe('Redis store: real processes', () => {
    it('3 nodes, 300 SSE subscribers, producers on every node, one node killed -9 mid-stream: every subscriber gets every seq once, in order', async () => {
      const seed = Number(process.env.JOBWIRE_TEST_SEED ?? Math.floor(Math.random() * 2 ** 31))
      const random = seededRandom(seed)
      const nodes = await startNodes(3, `${base}:${++runs}`)
      const jobs: string[] = []
      for (let i = 0; i < 10; i++) {
        const created = await (nodes[i % 3] as Node).client.call<JobState>('POST', '/v1/jobs', { type: 'fanout', dispatch: false })
        expect(created.status, JSON.stringify(created.body)).toBe(201)
        jobs.push(created.body.id)
      }
      const watchers = Array.from({ length: 300 }, (_, i) => follow(nodes, jobs[i % jobs.length] as string, i % 3))

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
            const answer = await post(nodes, j + b, `/v1/jobs/${jobId}/events`, { events: texts.map((text) => ({ type: 'chunk', text })) })
            expect(answer.status, JSON.stringify(answer.body)).toBe(200)
            const chunks = (answer.body as { events: { seq: number; type: string }[] }).events.filter((e) => e.type === 'chunk')
            chunks.forEach((e, k) => mine.set(e.seq, texts[k] as string))
            if (++written === killAt) {
              ;(nodes[2] as Node).dead = true
              killed = (nodes[2] as Node).server.kill('SIGKILL')
            }
            await sleep(Math.floor(random() * 15))
          }
          await post(nodes, j, `/v1/jobs/${jobId}/events`, { events: [{ type: 'completed', result: { job: j } }] })
        }),
      )
      expect(await killed).toMatchObject({ signal: 'SIGKILL' })
      await Promise.all(watchers.map((w) => w.done))

      // Every batch answered 2xx is in the log, at the seqs it was answered with.
      const finalSeq = new Map<string, number>()
      for (const jobId of jobs) {
        const log = await readWholeLog((nodes[0] as Node).client, jobId)
        const bySeq = new Map(log.map((e) => [e.seq, e]))
        for (const [seq, text] of acked.get(jobId) ?? []) expect(bySeq.get(seq)).toMatchObject({ type: 'chunk', data: { text } })
        expect(log.map((e) => e.seq)).toEqual(Array.from({ length: log.length }, (_, i) => i + 1))
        finalSeq.set(jobId, log.length)
      }

      // The checker: per subscriber, against 1..final of its job.
      let lost = 0
      let duplicated = 0
      let reordered = 0
      let delivered = 0
      for (const watcher of watchers) {
        const final = finalSeq.get(watcher.jobId) ?? 0
        const seen = new Set(watcher.seqs)
        delivered += watcher.seqs.length
        for (let seq = 1; seq <= final; seq++) if (!seen.has(seq)) lost++
        duplicated += watcher.seqs.length - seen.size
        for (let i = 1; i < watcher.seqs.length; i++) if ((watcher.seqs[i] as number) < (watcher.seqs[i - 1] as number)) reordered++
      }
      const moved = watchers.filter((w) => w.reconnects > 0).length
      console.log(
        `redis fan-out checker (seed ${seed}): nodes=3 subscribers=${watchers.length} moved=${moved} delivered=${delivered} lost=${lost} duplicated=${duplicated} reordered=${reordered}`,
      )
      expect({ lost, duplicated, reordered }).toEqual({ lost: 0, duplicated: 0, reordered: 0 })
      expect(watchers.flatMap((w) => w.errors)).toEqual([])
      expect(watchers.filter((w) => w.resets > 0)).toEqual([])
      // The killed node's subscribers, about a third, really moved.
      expect(moved).toBeGreaterThanOrEqual(50)
      for (const node of nodes.slice(0, 2)) expect(node.server.child.exitCode).toBeNull()
    })

    it('Redis loses our keys under running nodes: live streams end with job_not_found, resumes get 404, new jobs work', async () => {
      const prefix = `${base}:${++runs}`
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

    it('Redis pauses writes (CLIENT PAUSE 1500 WRITE) under load: no acknowledged write lost, no process crashes', async () => {
      const nodes = await startNodes(2, `${base}:${++runs}`)
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
