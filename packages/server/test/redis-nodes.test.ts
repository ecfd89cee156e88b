import { createHash } from 'node:crypto'
import { Redis } from 'ioredis'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { JobwireError, type ErrorCode, type JobEvent, type StreamMessage } from '@jobwire/protocol'
import { defaultCoreLimits, Dispatcher, epochSeqGap, JobService, type RedisStore, type StreamSink } from '@jobwire/server'
import { deleteKeys, keysUnder, openRedisStore, redisReachable, redisTestRun, redisUrl } from './redis-fixtures/redis.js'
import { startTcpProxy, type TcpProxy } from '../../../test/support/tcp-proxy.js'
import { sleep } from './fixtures.js'
import { luaScripts } from '../src/stores/redis/scripts.js'

/**
 * Several Jobwire nodes in one process: RedisStores on one prefix, each with its own JobService
 * and Dispatcher, as separate processes would have. Then the faults a shared Redis brings: a
 * pub/sub connection that dies silently, Redis going away and coming back, Redis losing data.
 */
if (redisReachable('Redis store: several nodes')) {
  const { base, admin, cleanups, nextPrefix } = redisTestRun('nodes', { strict: true })

  interface Node {
    store: RedisStore
    service: JobService
    dispatcher: Dispatcher
    warnings: string[]
  }

  /** `count` nodes on one fresh prefix (through `url`, default the real Redis). */
  async function cluster(count: number, options: { url?: string; prefix?: string; probeIntervalMs?: number } = {}): Promise<Node[]> {
    const prefix = options.prefix ?? nextPrefix()
    const nodes: Node[] = []
    for (let i = 0; i < count; i++) {
      const warnings: string[] = []
      const store = await openRedisStore({
        url: options.url ?? redisUrl,
        prefix,
        probeIntervalMs: options.probeIntervalMs ?? 200,
        onWarning: (message) => warnings.push(message),
      })
      cleanups.push(() => store.close())
      const service = new JobService(store, defaultCoreLimits)
      nodes.push({ store, service, dispatcher: new Dispatcher(service), warnings })
    }
    return nodes
  }

  /** Two nodes on one prefix: A talks to Redis through a TCP proxy that counts what it sends, B directly. */
  async function proxiedPair(): Promise<{ proxy: TcpProxy; prefix: string; a: Node; b: Node }> {
    const proxy = await startTcpProxy(redisUrl)
    cleanups.push(() => proxy.close())
    const prefix = nextPrefix()
    const [a] = await cluster(1, { url: proxy.url, prefix })
    const [b] = await cluster(1, { prefix })
    if (a === undefined || b === undefined) throw new Error('two nodes expected')
    return { proxy, prefix, a, b }
  }

  /** How many times `script` has gone through `proxy` from now on: ioredis sends a script's text the first time a connection runs it, its SHA after that. */
  function scriptCalls(proxy: TcpProxy, script: string): () => number {
    const bySha = proxy.watch(createHash('sha1').update(script).digest('hex'))
    const byText = proxy.watch(script)
    return () => bySha() + byText()
  }

  /** Up to `max` jobs of `type` claimed through `on`'s store at `now` for worker 'a': their ids. */
  async function claimIds(on: Node, type: string, now: number, max: number): Promise<string[]> {
    const claimed = await on.store.claim([type], now, max, (job) => ({
      events: [{ type: 'started', data: { attempt: job.attempt + 1, worker: 'a' } }],
      lease: { token: `t-${job.id}`, worker: 'a', expiresAt: now + 60_000, lastBatch: 0 },
    }))
    return claimed.map((r) => r.job.id)
  }

  function node(nodes: Node[], i: number): Node {
    return nodes[i % nodes.length] as Node
  }

  interface Watch extends StreamSink {
    messages: StreamMessage[]
    ended: boolean
  }

  function watch(): Watch {
    const sink: Watch = {
      messages: [],
      ended: false,
      write: (batch) => void sink.messages.push(...batch),
      end: () => void (sink.ended = true),
    }
    return sink
  }

  const seqs = (messages: readonly StreamMessage[]): number[] => messages.flatMap((m) => (m.type === 'event' ? [m.event.seq] : []))
  const chunk = (text: string) => ({ type: 'chunk', data: { text } }) as const

  async function codeOf(promise: Promise<unknown>): Promise<ErrorCode | 'resolved'> {
    return promise.then(
      () => 'resolved',
      (error: unknown) => (error instanceof JobwireError ? error.code : (() => { throw error })()),
    )
  }

  describe('Redis store: several nodes on one Redis', () => {
    it('a job gone from Redis (deleted by hand) leaves the deadline index instead of coming due on every sweep', async () => {
      const prefix = nextPrefix()
      const [a] = (await cluster(1, { prefix })) as [Node]
      const clock = Date.now()
      const service = new JobService(a.store, defaultCoreLimits, () => new Date(clock))
      const gone = (await service.createJob({ type: 'evicted', deadlines: { queueTimeoutMs: 1_000 } })).job.id
      const kept = (await service.createJob({ type: 'evicted', deadlines: { queueTimeoutMs: 1_000 } })).job.id
      expect(await admin.del(`${prefix}:job:{${gone}}`)).toBe(1)
      expect(await a.store.dueDeadlines(clock + 2_000, 10)).toEqual([kept])
      expect(await admin.zrange(`${prefix}:deadlines`, '0', '-1')).toEqual([kept])
      expect(await new JobService(a.store, defaultCoreLimits, () => new Date(clock + 2_000)).deadlines.fireDue()).toBe(1)
      expect(await admin.zcard(`${prefix}:deadlines`)).toBe(0)
    })

    it('an event appended through node A or B reaches a subscription on node C, in order, once', async () => {
      const [a, b, c] = (await cluster(3)) as [Node, Node, Node]
      const { job } = await a.service.createJob({ type: 'fan' })
      const sink = watch()
      const subscription = await c.service.subscribe(job.id, 0, sink)
      for (let i = 0; i < 40; i++) await node([a, b], i).service.appendEvents(job.id, [chunk(`${i},`)])
      await a.service.appendEvents(job.id, [{ type: 'completed', data: { result: 'ok' } }])
      await vi.waitFor(() => expect(sink.ended).toBe(true))
      expect(sink.messages[0]).toEqual({ type: 'recovered', after: 0 })
      expect(seqs(sink.messages)).toEqual(Array.from({ length: 43 }, (_, i) => i + 1))
      expect((await c.service.getJob(job.id)).text).toBe(Array.from({ length: 40 }, (_, i) => `${i},`).join(''))
      expect(subscription.closed).toBe(true)
    })

    it('jobs created through node A wake claims waiting on node B (no periodic look), each job going to one of them', async () => {
      const [a, b] = (await cluster(2)) as [Node, Node]
      // No periodic look: only the queue's messages from A can wake B's claims.
      const dispatcher = new Dispatcher(b.service, Date.now, { claimRecheckMs: 3_600_000 })
      const stops = Array.from({ length: 4 }, () => new AbortController())
      const waiting = stops.map((stop, w) => dispatcher.claimMany({ types: ['cross'], worker: `b${w}`, leaseMs: 60_000, waitMs: 30_000, signal: stop.signal }))
      // Each has looked and found nothing once its queue's subscription is confirmed.
      await sleep(300)
      const created = [(await a.service.createJob({ type: 'cross' })).job.id, (await a.service.createJob({ type: 'cross' })).job.id]
      const first = await Promise.race(waiting.map((claim, w) => claim.then((claimed) => ({ w, claimed }))))
      const second = await Promise.race(waiting.filter((_, w) => w !== first.w).map((claim) => claim))
      expect([...first.claimed, ...second].map((one) => one.job.id).sort()).toEqual([...created].sort())
      for (const stop of stops) stop.abort()
      const all = await Promise.all(waiting)
      expect(all.flat().map((one) => one.job.id).sort()).toEqual([...created].sort())
    })

    it("a node's own commits reach its watchers at once, each batch once (Redis's echo is skipped), interleaved in order with another node's", async () => {
      const [a, b] = (await cluster(2)) as [Node, Node]
      const { job } = await a.service.createJob({ type: 'fan' })
      const batches: number[][] = []
      a.store.subscribe(job.id, (events) => batches.push(events.map((e) => e.seq)))
      await a.store.getJob(job.id) // listen first: resolves once Redis confirmed the channel
      const heardWhenAnswered: number[] = []
      for (let i = 0; i < 10; i++) {
        const { events } = await node([a, a, b], i).service.appendEvents(job.id, [chunk(`${i},`)])
        // A write through A is heard on A by the time it is answered: no wait for the echo.
        if (i % 3 !== 2) heardWhenAnswered.push(batches.flat().includes((events[0] as JobEvent).seq) ? 1 : 0)
      }
      expect(heardWhenAnswered.every((heard) => heard === 1)).toBe(true)
      // B's last write is published after every echo of A's: once it is heard, so are they.
      const last = await b.service.appendEvents(job.id, [chunk('last')])
      await vi.waitFor(() => expect(batches.flat()).toContain(last.job.seq))
      // Seqs 2 (started) to 13: every batch heard once, none twice.
      expect(batches.flat().sort((x, y) => x - y)).toEqual(Array.from({ length: 12 }, (_, i) => i + 2))
    })

    it('streamed text lives in its own key: a commit appends what its chunks add, the state stays small, a rewind sets it whole', async () => {
      const prefix = nextPrefix()
      const [a, b] = (await cluster(2, { prefix })) as [Node, Node]
      const { job } = await a.service.createJob({ type: 'text' })
      const jobKey = `${prefix}:job:{${job.id}}`
      const sizes: number[] = []
      for (let i = 0; i < 30; i++) {
        await node([a, b], i).service.appendEvents(job.id, [chunk('x'.repeat(100)), { type: 'checkpoint', data: { data: { i } } }])
        sizes.push(((await admin.hget(jobKey, 'state')) as string).length)
      }
      // 3,000 characters of text, and the state written last is no bigger than the first.
      expect(await admin.get(`${jobKey}:text`)).toBe('x'.repeat(3000))
      expect(sizes.at(-1)).toBeLessThan(1000)
      expect((await b.service.getJob(job.id)).text).toBe('x'.repeat(3000))
      expect((await a.store.listJobs({ limit: 5 })).jobs[0]?.textLength).toBe(3000)
      // A requeue back to the checkpoint after 10 chunks rewinds the text (written whole).
      await a.store.append(job.id, () => ({ events: [{ type: 'requeued', data: { reason: 'test', attempt: 1, retryAt: null, textLength: 1000 } }], lease: null, availableAt: 0 }))
      expect(await admin.get(`${jobKey}:text`)).toBe('x'.repeat(1000))
      await b.service.appendEvents(job.id, [chunk('y')])
      expect((await a.service.getJob(job.id)).text).toBe(`${'x'.repeat(1000)}y`)
    })

    it('a list shows each job\'s text length without reading its text; a job last written before the length was kept reads it', async () => {
      const { proxy, prefix, a, b } = await proxiedPair()
      const { job } = await b.service.createJob({ type: 'transcribe' })
      await b.service.appendEvents(job.id, [chunk('héllo 🙂 '.repeat(1000))])
      const textReads = proxy.watch(`${prefix}:job:{${job.id}}:text`)
      expect((await a.store.listJobs({ limit: 5 })).jobs).toEqual([expect.objectContaining({ id: job.id, textLength: 9000 })])
      expect(textReads()).toBe(0)
      // What an older version stored: no length beside the state.
      await admin.hdel(`${prefix}:job:{${job.id}}`, 'tlen')
      expect((await a.store.listJobs({ limit: 5 })).jobs).toEqual([expect.objectContaining({ id: job.id, textLength: 9000 })])
      expect(textReads()).toBe(1)
      // The next commit keeps it again.
      await b.service.appendEvents(job.id, [chunk('!')])
      expect(await admin.hget(`${prefix}:job:{${job.id}}`, 'tlen')).toBe('9001')
    })

    it('a job written before the text had its own key (text inside the state) reads the same, and its next commit moves the text out', async () => {
      const prefix = nextPrefix()
      const [a] = (await cluster(1, { prefix })) as [Node]
      const { job } = await a.service.createJob({ type: 'text' })
      await a.service.appendEvents(job.id, [chunk('old text, ')])
      const jobKey = `${prefix}:job:{${job.id}}`
      // What an older version stored: the whole state, text included, and no text key.
      const state = JSON.parse((await admin.hget(jobKey, 'state')) as string) as { text: string }
      await admin.multi().hset(jobKey, 'state', JSON.stringify({ ...state, text: 'old text, ' }), 'ver', '7').del(`${jobKey}:text`).exec()
      const [fresh] = (await cluster(1, { prefix })) as [Node]
      expect((await fresh.service.getJob(job.id)).text).toBe('old text, ')
      await fresh.service.appendEvents(job.id, [chunk('new')])
      expect(await admin.get(`${jobKey}:text`)).toBe('old text, new')
      expect((JSON.parse((await admin.hget(jobKey, 'state')) as string) as { text: string }).text).toBe('')
      expect((await fresh.service.getJob(job.id)).text).toBe('old text, new')
    })

    it('items live in their own key: a commit writes just the items it changed, the state stays small, and any node reads, lists and claims them whole, in order', async () => {
      const prefix = nextPrefix()
      const [a, b] = (await cluster(2, { prefix })) as [Node, Node]
      const { job } = await a.service.createJob({ type: 'export' })
      const jobKey = `${prefix}:job:{${job.id}}`
      const item = (i: number, status: 'running' | 'completed') => ({ type: 'item' as const, data: { id: `file-${i}`, status, message: `${status} ${i}` } })
      await a.service.appendEvents(job.id, Array.from({ length: 200 }, (_, i) => item(i, 'running')))
      const sizes: number[] = []
      for (let i = 0; i < 20; i++) {
        // Each write changes one item (twice: the last wins) beside a progress tick.
        await node([a, b], i).service.appendEvents(job.id, [item(i * 10, 'completed'), { type: 'progress', data: { percent: i } }, { type: 'item', data: { id: `file-${i * 10}`, percent: 100 } }])
        sizes.push(((await admin.hget(jobKey, 'state')) as string).length)
      }
      expect(Math.max(...sizes)).toBeLessThan(1000)
      expect(await admin.hlen(`${jobKey}:items`)).toBe(200)
      const expected = (await a.service.getJob(job.id)).items
      expect(expected.map((one) => one.id)).toEqual(Array.from({ length: 200 }, (_, i) => `file-${i}`))
      expect(expected[30]).toMatchObject({ status: 'completed', percent: 100, message: 'completed 30' })
      expect(expected[31]).toMatchObject({ status: 'running', percent: null, message: 'running 31' })
      expect(JSON.parse((await admin.hget(`${jobKey}:items`, '30')) as string)).toEqual(expected[30])
      const [fresh] = (await cluster(1, { prefix })) as [Node]
      expect((await fresh.service.getJob(job.id)).items).toEqual(expected)
      expect((await fresh.store.listJobs({ limit: 5 })).jobs[0]?.items).toEqual(expected)
      // Back in the queue (a requeue keeps the items): the claim's pick reads them too.
      await a.store.append(job.id, () => ({ events: [{ type: 'requeued', data: { reason: 'test', attempt: 1, retryAt: null } }], lease: null, availableAt: 0 }))
      expect((await fresh.dispatcher.claim({ types: ['export'], worker: 'w', leaseMs: 60_000, waitMs: 0 }))?.job.items).toEqual(expected)
    })

    it('a job written before items had their own key (items inside the state) reads the same, and its next commit moves them out', async () => {
      const prefix = nextPrefix()
      const [a] = (await cluster(1, { prefix })) as [Node]
      const { job } = await a.service.createJob({ type: 'export', dispatch: false })
      await a.service.appendEvents(job.id, Array.from({ length: 3 }, (_, i) => ({ type: 'item' as const, data: { id: `file-${i}`, status: 'running' as const } })))
      const items = (await a.service.getJob(job.id)).items
      const jobKey = `${prefix}:job:{${job.id}}`
      // What an older version stored: the items inside the state, and no items key.
      const state = JSON.parse((await admin.hget(jobKey, 'state')) as string) as object
      await admin.multi().hset(jobKey, 'state', JSON.stringify({ ...state, items }), 'ver', '7').del(`${jobKey}:items`).exec()
      const [fresh] = (await cluster(1, { prefix })) as [Node]
      expect((await fresh.service.getJob(job.id)).items).toEqual(items)
      await fresh.service.appendEvents(job.id, [{ type: 'item', data: { id: 'file-1', status: 'completed' } }])
      expect((JSON.parse((await admin.hget(jobKey, 'state')) as string) as { items: unknown[] }).items).toEqual([])
      expect(await admin.hlen(`${jobKey}:items`)).toBe(3)
      const [last] = (await cluster(1, { prefix })) as [Node]
      expect((await last.service.getJob(job.id)).items.map((one) => `${one.id}:${one.status}`)).toEqual(['file-0:running', 'file-1:completed', 'file-2:running'])
    })

    it('a large input lives in its own key, written once: commits leave it out of the state, and claims, reads, lists and re-creates on any node see it whole; an older state holding its input reads and commits the same', async () => {
      const prefix = nextPrefix()
      const [a, b] = (await cluster(2, { prefix })) as [Node, Node]
      const document = { title: 'report', body: 'lorem ipsum '.repeat(20_000) }
      const { job } = await a.service.createJob({ type: 'analyze', input: document, idempotencyKey: 'doc-1' })
      const small = await a.service.createJob({ type: 'other', input: { page: 3 }, dispatch: false })
      const jobKey = `${prefix}:job:{${job.id}}`
      expect(JSON.parse((await admin.get(`${jobKey}:input`)) as string)).toEqual(document)
      const claimed = await b.dispatcher.claim({ types: ['analyze'], worker: 'w', leaseMs: 60_000, waitMs: 0 })
      expect(claimed?.job).toMatchObject({ id: job.id, input: document })
      for (let i = 1; i <= 10; i++) await node([a, b], i).service.appendEvents(job.id, [{ type: 'progress', data: { percent: 10 * i } }], { lease: claimed?.lease.token, batch: i })
      const state = (await admin.hget(jobKey, 'state')) as string
      expect(state.length).toBeLessThan(2000)
      expect(JSON.parse(state)).toMatchObject({ input: null, progress: { percent: 100 } })
      const [fresh] = (await cluster(1, { prefix })) as [Node]
      expect(await fresh.service.getJob(job.id)).toMatchObject({ input: document, progress: { percent: 100 } })
      expect((await fresh.service.createJob({ type: 'analyze', input: document, idempotencyKey: 'doc-1' })).job).toMatchObject({ id: job.id, input: document })
      const listed = (await fresh.store.listJobs({ limit: 10 })).jobs
      // A list leaves inputs out, large or small.
      expect(listed.find((one) => one.id === job.id)).not.toHaveProperty('input')
      expect(listed.find((one) => one.id === small.job.id)).toMatchObject({ id: small.job.id, textLength: 0 })
      expect(await admin.exists(`${prefix}:job:{${small.job.id}}:input`)).toBe(0)

      // What an older version stored: the input inside the state, and no input key.
      await admin.multi().hset(jobKey, 'state', JSON.stringify({ ...JSON.parse(state), input: document }), 'ver', '7').del(`${jobKey}:input`).exec()
      const [older] = (await cluster(1, { prefix })) as [Node]
      expect(await older.service.getJob(job.id)).toMatchObject({ input: document })
      await older.service.appendEvents(job.id, [{ type: 'progress', data: { percent: 100, message: 'nearly' } }], { lease: claimed?.lease.token, batch: 11 })
      expect(JSON.parse((await admin.hget(jobKey, 'state')) as string).input).toEqual(document)
      const [last] = (await cluster(1, { prefix })) as [Node]
      expect(await last.service.getJob(job.id)).toMatchObject({ input: document, progress: { message: 'nearly' } })
    })

    it('each node subscribes only to the jobs its own watchers follow', async () => {
      const [a, b] = (await cluster(2)) as [Node, Node]
      const watched = (await a.service.createJob({ type: 'fan' })).job.id
      const other = (await a.service.createJob({ type: 'fan' })).job.id
      const sink = watch()
      const subscription = await b.service.subscribe(watched, undefined, sink)
      const channels = (await admin.pubsub('CHANNELS', `${base}:*:ch:job:*`)) as string[]
      expect(channels.filter((c) => c.endsWith(watched))).toHaveLength(1)
      expect(channels.filter((c) => c.endsWith(other))).toHaveLength(0)
      subscription.close()
      await vi.waitFor(async () => expect(((await admin.pubsub('CHANNELS', `${base}:*:ch:job:${watched}`)) as string[]).length).toBe(0))
    })

    it('three nodes appending to one job at once: seqs 1..N exactly once, every chunk kept (compare-and-set across nodes)', async () => {
      const nodes = await cluster(3)
      const { job } = await node(nodes, 0).service.createJob({ type: 'race' })
      const results = await Promise.all(
        Array.from({ length: 150 }, (_, i) => node(nodes, i).service.appendEvents(job.id, [chunk(`<${i}>`)])),
      )
      const log = await node(nodes, 1).store.readLog(job.id, 0, 1000)
      expect(log?.events.map((e) => e.seq)).toEqual(Array.from({ length: 152 }, (_, i) => i + 1))
      const texts = (log?.events ?? []).flatMap((e) => (e.type === 'chunk' ? [e.data.text] : []))
      expect(new Set(texts).size).toBe(150)
      expect((await node(nodes, 2).service.getJob(job.id)).text).toBe(texts.join(''))
      expect(results.flatMap((r) => r.events).sort((x, y) => x.seq - y.seq)).toEqual(log?.events.slice(1))
    })

    it('a node writes a job it wrote last without reading it first, and a write made through another node meanwhile is caught by the compare-and-set', async () => {
      const { proxy, a, b } = await proxiedPair()
      const { job } = await a.service.createJob({ type: 'cached' })
      const loads = scriptCalls(proxy, luaScripts.load)
      for (let i = 0; i < 5; i++) await a.service.appendEvents(job.id, [chunk(`a${i}`)])
      // The first write reads the job; the next four start from what node A committed.
      expect(loads()).toBe(1)
      await b.service.appendEvents(job.id, [chunk('b')])
      await a.service.appendEvents(job.id, [chunk('a5')])
      // Node A's copy was stale: its commit was refused, it read the job again and wrote after B's event.
      expect(loads()).toBe(2)
      const log = await b.store.readLog(job.id, 0, 100)
      expect(log?.events.map((e) => e.seq)).toEqual(Array.from({ length: 9 }, (_, i) => i + 1))
      expect((await b.service.getJob(job.id)).text).toBe('a0a1a2a3a4ba5')
      expect((await a.service.getJob(job.id)).seq).toBe(9)
    })

    it('what a node keeps of the jobs it wrote outlives its probes: writes spaced over many probes of the same Redis never read the job again', async () => {
      const { proxy, a } = await proxiedPair()
      const { job } = await a.service.createJob({ type: 'cached' })
      const loads = scriptCalls(proxy, luaScripts.load)
      // Node A probes every 200 ms; eight writes 150 ms apart span five or six probes.
      for (let i = 0; i < 8; i++) {
        await a.service.appendEvents(job.id, [chunk(`a${i}`)])
        await sleep(150)
      }
      expect(loads()).toBe(1)
      expect((await a.service.getJob(job.id)).text).toBe('a0a1a2a3a4a5a6a7')
    })

    it('a queue listener whose subscription Redis has not confirmed yet still hears a job created through its node enter the queue', async () => {
      const { proxy, a } = await proxiedPair()
      // Node A's SUBSCRIBEs reach Redis 300 ms late; the create must not publish before its queue's.
      expect(proxy.delay(':sub', 300)).toBe(1)
      let heard = 0
      a.store.subscribeQueue('late', () => heard++)
      await a.service.createJob({ type: 'late' })
      await vi.waitFor(() => expect(heard).toBe(1), { timeout: 3000 })
    })

    it('writes issued in separate callbacks of one pass of the event loop (requests read in one poll) leave in one script call', async () => {
      const { proxy, a, b } = await proxiedPair()
      const ids: string[] = []
      for (const name of ['p', 'q', 'r']) ids.push((await a.service.createJob({ type: 'one-pass', input: name, dispatch: false })).job.id)
      // A first write each, so node A holds their state: the writes below need no read first.
      for (const id of ids) await a.service.appendEvents(id, [chunk('1')])
      const commits = scriptCalls(proxy, luaScripts.commit)
      // Three callbacks of one check phase, each like a request's own turn: their microtasks run
      // between them, so a batch sent at the end of a turn would leave three times.
      const written = ids.map((id) => new Promise((resolve, reject) => setImmediate(() => a.service.appendEvents(id, [chunk('2')]).then(resolve, reject))))
      await Promise.all(written)
      expect(commits()).toBe(1)
      for (const id of ids) expect((await b.service.getJob(id)).text).toBe('12')
    })

    it("a turn's commits leave in one script call, each checked on its own: the one another node made stale is refused and retried alone, the others land once", async () => {
      const { proxy, prefix, a, b } = await proxiedPair()
      const jobs = []
      // Self-run jobs (their first chunk starts them): created, started, a1, then the writes below.
      for (const name of ['x', 'y', 'z']) jobs.push((await a.service.createJob({ type: 'batched', input: name, dispatch: false })).job)
      const [x, y, z] = jobs.map((job) => job.id) as [string, string, string]
      for (const id of [x, y, z]) await a.service.appendEvents(id, [chunk('a1')])
      const commits = scriptCalls(proxy, luaScripts.commit)
      const loads = scriptCalls(proxy, luaScripts.load)
      // Node B writes y: node A's copy of y is stale, its copies of x and z are not.
      await b.service.appendEvents(y, [chunk('b')])
      await Promise.all([x, y, z].map((id) => a.service.appendEvents(id, [chunk('a2')])))
      // One call for the three; y's refusal made node A read y again and commit it alone.
      expect(commits()).toBe(2)
      expect(loads()).toBe(1)
      for (const id of [x, z]) {
        expect((await b.store.readLog(id, 0, 100))?.events.map((e) => e.seq)).toEqual([1, 2, 3, 4])
        expect((await b.service.getJob(id)).text).toBe('a1a2')
      }
      expect((await b.store.readLog(y, 0, 100))?.events.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5])
      expect((await b.service.getJob(y)).text).toBe('a1ba2')

      // A claim of several jobs: one call commits them all, and their queue hears of it once.
      const queued = []
      for (let i = 0; i < 3; i++) queued.push((await b.service.createJob({ type: 'batched-claim' })).job.id)
      const subscriber = new Redis(redisUrl)
      cleanups.push(() => subscriber.quit())
      let queueMessages = 0
      subscriber.on('message', () => queueMessages++)
      await subscriber.subscribe(`${prefix}:ch:queue:batched-claim`)
      const before = commits()
      const claimed = await a.dispatcher.claimMany({ types: ['batched-claim'], worker: 'w', leaseMs: 60_000, waitMs: 0, max: 3 })
      expect(claimed.map((one) => one.job.id)).toEqual(queued)
      expect(commits() - before).toBe(1)
      // A message published before the reply is read by the subscriber within moments.
      await vi.waitFor(() => expect(queueMessages).toBeGreaterThan(0))
      await new Promise((resolve) => setTimeout(resolve, 50))
      expect(queueMessages).toBe(1)
    })

    it('spare claims: the next claims from a node take the jobs its last pick read beyond its own, without a pick; a job released back through the node comes first; one another node took is skipped, never claimed twice', async () => {
      const { proxy, a, b } = await proxiedPair()
      const ids: string[] = []
      for (let i = 0; i < 8; i++) ids.push((await b.service.createJob({ type: 'spares' })).job.id)
      const picks = scriptCalls(proxy, luaScripts.pick)
      let clock = Date.now()
      const claimA = (max: number) => claimIds(a, 'spares', clock, max)
      // One pick reads the first claim's 2 jobs and up to 3 claims' worth more.
      expect(await claimA(2)).toEqual(ids.slice(0, 2))
      expect(picks()).toBe(1)
      expect(await claimA(2)).toEqual(ids.slice(2, 4))
      expect(picks()).toBe(1)
      // Node B takes the next spare of node A's: A's compare-and-set refuses it, A takes the one after.
      const taken = await b.store.claim(['spares'], clock, 1, () => ({ events: [{ type: 'started', data: { attempt: 1, worker: 'b' } }], lease: { token: 'b', worker: 'b', expiresAt: clock + 60_000, lastBatch: 0 } }))
      expect(taken.map((r) => r.job.id)).toEqual([ids[4]])
      expect(await claimA(1)).toEqual([ids[5]])
      // A job given back through node A is older than the spares left: it comes first, by a pick.
      const released = ids[0] as string
      await a.store.append(released, () => ({ events: [{ type: 'requeued', data: { reason: 'released', attempt: 1, retryAt: null } }], lease: null, availableAt: 0 }))
      const before = picks()
      expect(await claimA(1)).toEqual([released])
      expect(picks()).toBe(before + 1)
      // Spares are used only shortly after their pick, on the claim's own clock.
      clock += 1_000
      expect(await claimA(1)).toEqual([ids[6]])
      expect(picks()).toBe(before + 2)
      expect(await claimA(5)).toEqual([ids[7]])
      expect(await claimA(5)).toEqual([])
      const leases = await Promise.all(ids.map(async (id) => (await b.store.getRecord(id))?.lease?.worker))
      expect(leases).toEqual(['a', 'a', 'a', 'a', 'b', 'a', 'a', 'a'])
    })

    it('spare claims cover whole claims only: a claim larger than the spares left picks afresh and gets all it asked for', async () => {
      const { proxy, a, b } = await proxiedPair()
      const ids: string[] = []
      for (let i = 0; i < 12; i++) ids.push((await b.service.createJob({ type: 'spares-large' })).job.id)
      const picks = scriptCalls(proxy, luaScripts.pick)
      const clock = Date.now()
      const claimA = (max: number) => claimIds(a, 'spares-large', clock, max)
      // The first pick reads 2 jobs and 6 spares; a claim of 8 is more than they cover.
      expect(await claimA(2)).toEqual(ids.slice(0, 2))
      expect(await claimA(8)).toEqual(ids.slice(2, 10))
      expect(picks()).toBe(2)
      // One the spares cover still takes them without a pick.
      expect(await claimA(2)).toEqual(ids.slice(10, 12))
      expect(picks()).toBe(2)
    })

    it('spares are read in whole claims: a claim of more jobs than the spares kept reads none beyond its own', async () => {
      const { proxy, a, b } = await proxiedPair()
      const ids = (await Promise.all(Array.from({ length: 103 }, () => b.service.createJob({ type: 'spares-none' })))).map((created) => created.job.id)
      const picks = scriptCalls(proxy, luaScripts.pick)
      const clock = Date.now()
      const claimA = (max: number) => claimIds(a, 'spares-none', clock, max)
      expect(await claimA(101)).toHaveLength(101)
      expect(picks()).toBe(1)
      // Spares of fewer than 101 jobs could serve no claim of its size: none were read, so this one picks.
      expect(await claimA(1)).toHaveLength(1)
      expect(picks()).toBe(2)
      const leases = await Promise.all(ids.map(async (id) => (await b.store.getRecord(id))?.lease?.worker))
      expect(leases.filter((worker) => worker === 'a')).toHaveLength(102)
    })

    it("a node that hands out a job created through another node keeps its facts: the worker's writes are authorized without reading the job", async () => {
      const { proxy, a, b } = await proxiedPair()
      const { job } = await b.service.createJob({ type: 'facts', owner: { tenant: 't1', user: 'u1' } })
      const loads = scriptCalls(proxy, luaScripts.load)
      const claimed = await a.dispatcher.claim({ types: ['facts'], worker: 'w', leaseMs: 60_000, waitMs: 0 })
      expect(claimed?.job.id).toBe(job.id)
      expect(await a.service.facts(job.id)).toEqual({ id: job.id, type: 'facts', owner: { tenant: 't1', user: 'u1' } })
      expect(loads()).toBe(0)
    })

    it('8 claimers on 3 nodes over 200 jobs: every job claimed exactly once, none left queued', async () => {
      const nodes = await cluster(3)
      const ids: string[] = []
      for (let i = 0; i < 200; i++) ids.push((await node(nodes, i).service.createJob({ type: i % 2 === 0 ? 'red' : 'blue' })).job.id)
      const owners = new Map<string, string>()
      const twice: string[] = []
      await Promise.all(
        Array.from({ length: 8 }, async (_, w) => {
          const { dispatcher } = node(nodes, w)
          for (;;) {
            const claimed = await dispatcher.claim({ types: ['red', 'blue'], worker: `w${w}`, leaseMs: 60_000, waitMs: 0 })
            if (claimed === null) return
            if (owners.has(claimed.job.id)) twice.push(claimed.job.id)
            owners.set(claimed.job.id, claimed.lease.token)
          }
        }),
      )
      expect(twice).toEqual([])
      expect([...owners.keys()].sort()).toEqual([...ids].sort())
      expect(new Set(owners.values()).size).toBe(200)
      for (const id of ids.slice(0, 20)) {
        const record = await node(nodes, 1).store.getRecord(id)
        expect(record?.lease?.token).toBe(owners.get(id))
        expect((await node(nodes, 2).store.readLog(id, 0, 10))?.events.map((e) => e.type)).toEqual(['created', 'started'])
      }
      expect((await node(nodes, 0).store.listJobs({ status: 'queued', limit: 10 })).jobs).toEqual([])
    })

    it('an owner feed on node B hears of each new job of that owner created on node A, once, and of nobody else\'s', async () => {
      const [a, b] = (await cluster(2)) as [Node, Node]
      const heard: string[] = []
      const stop = b.store.subscribeOwner({ tenant: 'acme', user: 'ann' }, (created) => heard.push(`${created.jobId}:${created.seq}`))
      const mine = await a.service.createJob({ type: 'feed', owner: { tenant: 'acme', user: 'ann' }, idempotencyKey: 'k1' })
      await a.service.createJob({ type: 'feed', owner: { tenant: 'acme', user: 'bob' } })
      await a.service.createJob({ type: 'feed', owner: { tenant: 'acme:ann', user: '' } })
      await a.service.createJob({ type: 'feed' })
      await a.service.createJob({ type: 'feed', owner: { tenant: 'acme', user: 'ann' }, idempotencyKey: 'k1' }) // a repeat: nothing new
      const second = await b.service.createJob({ type: 'feed', owner: { tenant: 'acme', user: 'ann' } })
      await vi.waitFor(() => expect(heard).toEqual([`${mine.job.id}:1`, `${second.job.id}:1`]))
      stop()
      await a.service.createJob({ type: 'feed', owner: { tenant: 'acme', user: 'ann' } })
      await new Promise((resolve) => setTimeout(resolve, 50))
      expect(heard).toHaveLength(2)
    })

    it('a sweep on any node deletes each expired job once and leaves none of its keys or index entries behind', async () => {
      const prefix = nextPrefix()
      const [a, b] = (await cluster(2, { prefix })) as [Node, Node]
      // With an input large enough to be kept in its own key, which goes too.
      const done = await a.service.createJob({ type: 'tidy', owner: { tenant: 't', user: 'u' }, idempotencyKey: 'once', input: { document: 'd'.repeat(2000) } })
      expect(await admin.exists(`${prefix}:job:{${done.job.id}}:input`)).toBe(1)
      const claimed = await a.dispatcher.claim({ types: ['tidy'], worker: 'w', leaseMs: 60_000, waitMs: 0 })
      // Its text and items live in keys of their own, which go too.
      await b.service.appendEvents(done.job.id, [chunk('x'), { type: 'item', data: { id: 'a' } }, { type: 'completed', data: { result: 1 } }], { lease: claimed?.lease.token, batch: 1 })
      expect(await admin.exists(`${prefix}:job:{${done.job.id}}:items`)).toBe(1)
      const cancelled = await b.service.createJob({ type: 'tidy', owner: { tenant: 't', user: 'v' } })
      await a.service.cancelJob(cancelled.job.id)
      const failed = await a.service.createJob({ type: 'other', dispatch: false })
      await b.service.appendEvents(failed.job.id, [{ type: 'failed', data: { code: 'e', message: 'm', retryable: false } }])
      const later = Date.now() + 3 * 24 * 3_600_000
      const swept = await Promise.all([a.store.sweep(later), b.store.sweep(later)])
      expect(swept[0].expiredJobs + swept[1].expiredJobs).toBe(3)
      expect(await keysUnder(admin, prefix)).toEqual([`${prefix}:gen`, `${prefix}:ordinal`])
      expect((await a.service.createJob({ type: 'tidy', idempotencyKey: 'once' })).created).toBe(true)
    })

    it('a claim waiting on node B wakes when a job of its type is created on node A', async () => {
      const [a, b] = (await cluster(2)) as [Node, Node]
      const waiting = b.dispatcher.claim({ types: ['wake'], worker: 'w', leaseMs: 10_000, waitMs: 600_000 })
      await new Promise((resolve) => setTimeout(resolve, 50))
      const { job } = await a.service.createJob({ type: 'wake' })
      expect((await waiting)?.job).toMatchObject({ id: job.id, status: 'running' })
    })

    it('a lapsed lease is taken back once though every node sweeps, and a cancel on one node reaches the worker waiting on another', async () => {
      const nodes = await cluster(3)
      const { job } = await node(nodes, 0).service.createJob({ type: 'lapse', maxAttempts: 3 })
      const first = await node(nodes, 1).dispatcher.claim({ types: ['lapse'], worker: 'w1', leaseMs: 1, waitMs: 0 })
      expect(first).not.toBeNull()
      await new Promise((resolve) => setTimeout(resolve, 10))
      const reclaimed = await Promise.all(nodes.map((n) => n.dispatcher.reclaimLapsed()))
      expect(reclaimed.reduce((x, y) => x + y, 0)).toBe(1)
      const second = await node(nodes, 2).dispatcher.claim({ types: ['lapse'], worker: 'w2', leaseMs: 60_000, waitMs: 0 })
      expect(second?.job).toMatchObject({ id: job.id, attempt: 2 })
      const signals = node(nodes, 2).dispatcher.signals([{ id: job.id, lease: second?.lease.token ?? '' }], 600_000)
      await new Promise((resolve) => setTimeout(resolve, 50))
      await node(nodes, 0).service.cancelJob(job.id)
      expect(await signals).toEqual([{ jobId: job.id, reason: 'cancelled' }])
    })
  })

  describe('Redis store: liveness', () => {
    let proxy: TcpProxy | null = null
    afterEach(async () => {
      await proxy?.close()
      proxy = null
    })

    it('a pub/sub connection that silently stops delivering is detected by the probe and remade, and the watcher misses nothing', async () => {
      proxy = await startTcpProxy(redisUrl)
      const prefix = nextPrefix()
      const [writer] = (await cluster(1, { prefix })) as [Node]
      const [reader] = (await cluster(1, { prefix, url: proxy.url })) as [Node]
      const { job } = await writer.service.createJob({ type: 'silent' })
      const sink = watch()
      await reader.service.subscribe(job.id, 0, sink)
      await writer.service.appendEvents(job.id, [chunk('a')])
      await vi.waitFor(() => expect(seqs(sink.messages)).toEqual([1, 2, 3]))

      // The reader's subscriber socket stays open, but nothing reaches it any more.
      expect(proxy.blackhole(':sub')).toBe(1)
      await writer.service.appendEvents(job.id, [chunk('b'), chunk('c')])
      await writer.service.appendEvents(job.id, [{ type: 'completed', data: { result: 1 } }])
      await vi.waitFor(() => expect(sink.ended).toBe(true), { timeout: 10_000 })
      expect(seqs(sink.messages)).toEqual([1, 2, 3, 4, 5, 6])
      expect(reader.warnings.some((w) => w.includes('stopped delivering'))).toBe(true)
      await expect(reader.store.ping()).resolves.toBeUndefined()
    })

    it('while Redis is unreachable calls fail fast with unavailable and ping fails; when it returns everything recovers by itself', async () => {
      proxy = await startTcpProxy(redisUrl)
      const prefix = nextPrefix()
      const [writer] = (await cluster(1, { prefix })) as [Node]
      const [cut] = (await cluster(1, { prefix, url: proxy.url })) as [Node]
      const { job } = await cut.service.createJob({ type: 'outage' })
      const sink = watch()
      await cut.service.subscribe(job.id, undefined, sink)

      await proxy.down()
      await vi.waitFor(async () => expect(await codeOf(cut.store.ping())).toBe('unavailable'))
      expect(await codeOf(cut.service.appendEvents(job.id, [chunk('lost?')]))).toBe('unavailable')
      expect(await codeOf(cut.service.getJob(job.id))).toBe('unavailable')
      expect(await codeOf(cut.service.createJob({ type: 'outage' }))).toBe('unavailable')
      expect(await codeOf(cut.store.listJobs({ limit: 5 }))).toBe('unavailable')
      // Meanwhile another node writes.
      await writer.service.appendEvents(job.id, [chunk('x'), chunk('y')])

      await proxy.up()
      await vi.waitFor(async () => expect(await codeOf(cut.store.ping())).toBe('resolved'), { timeout: 10_000 })
      // The refused append left nothing behind; the watcher catches up on what it missed.
      await vi.waitFor(() => expect(seqs(sink.messages)).toEqual([2, 3, 4]), { timeout: 10_000 })
      expect((await cut.service.getJob(job.id)).text).toBe('xy')
      const next = await cut.service.appendEvents(job.id, [chunk('z')])
      expect(next.events.map((e) => e.seq)).toEqual([5])
      await vi.waitFor(() => expect(seqs(sink.messages)).toEqual([2, 3, 4, 5]))
    })
  })

  describe('Redis store: Redis loses data', () => {
    it('keys deleted under the nodes: watchers and resumers get job_not_found, never a silent gap, and new jobs work', async () => {
      const prefix = nextPrefix()
      const [a, b] = (await cluster(2, { prefix })) as [Node, Node]
      const { job } = await a.service.createJob({ type: 'gone' })
      await a.service.appendEvents(job.id, [chunk('1'), chunk('2')])
      const sink = watch()
      await b.service.subscribe(job.id, 1, sink)
      await vi.waitFor(() => expect(seqs(sink.messages)).toEqual([2, 3, 4]))

      expect(await deleteKeys(admin, prefix)).toBeGreaterThan(0)
      // The probe sees the deployment's generation key gone and has every watcher re-read.
      await vi.waitFor(() => expect(sink.ended).toBe(true), { timeout: 10_000 })
      expect(sink.messages.at(-1)).toMatchObject({ type: 'error', error: { code: 'job_not_found' } })
      expect(await codeOf(a.service.subscribe(job.id, 4, watch()))).toBe('job_not_found')
      expect(await codeOf(b.service.poll(job.id, 4, 0))).toBe('job_not_found')
      expect(await codeOf(a.service.appendEvents(job.id, [chunk('3')]))).toBe('job_not_found')

      const fresh = await b.service.createJob({ type: 'gone' })
      expect(fresh.job.seq).toBe(1)
      const later = await a.service.appendEvents(fresh.job.id, [chunk('new')])
      expect(later.events.map((e) => e.seq)).toEqual([2, 3])
      expect((await a.store.listJobs({ limit: 10 })).jobs.map((j) => j.id)).toEqual([fresh.job.id])
    })

    it('a log that outlived a rollback of its job (the hash restored, the log not) starts over at the job\'s next seq instead of failing the write', async () => {
      const prefix = nextPrefix()
      const [a] = (await cluster(1, { prefix })) as [Node]
      const { job } = await a.service.createJob({ type: 'rollback' })
      for (let i = 0; i < 3; i++) await a.service.appendEvents(job.id, [chunk(`${i},`)])
      const hashKey = `${prefix}:job:{${job.id}}`
      const dump = await admin.dumpBuffer(hashKey)
      for (let i = 3; i < 8; i++) await a.service.appendEvents(job.id, [chunk(`${i},`)])
      expect((await a.service.getJob(job.id)).seq).toBe(10)
      // Only the hash goes back (seq 5); the log still runs to seq 10, and the generation is the same.
      await admin.restore(hashKey, 0, dump, 'REPLACE')
      const next = await a.service.appendEvents(job.id, [chunk('new')])
      expect(next.events.map((e) => e.seq)).toEqual([6])
      // The log holds what follows the job's head now, nothing of the lost tail.
      const log = await admin.xrange(`${prefix}:job:{${job.id}}:log`, '-', '+')
      expect(log.map(([id]) => id)).toEqual(['6-0'])
      expect((await a.service.getJob(job.id)).seq).toBe(6)
    })

    it('a job whose newest events were lost (rolled back) starts a new epoch: every old position gets a reset snapshot, no seq is reused', async () => {
      const prefix = nextPrefix()
      const [a, b] = (await cluster(2, { prefix })) as [Node, Node]
      const { job } = await a.service.createJob({ type: 'rollback' })
      for (let i = 0; i < 9; i++) await a.service.appendEvents(job.id, [chunk(`${i},`)])
      // What a replica (or an older RDB file) would still hold: the job at seq 11.
      const keys = [`${prefix}:job:{${job.id}}`, `${prefix}:job:{${job.id}}:log`, `${prefix}:job:{${job.id}}:text`]
      const dumps = await Promise.all(keys.map((key) => admin.dumpBuffer(key)))
      expect((await a.service.getJob(job.id)).seq).toBe(11)
      for (let i = 9; i < 19; i++) await a.service.appendEvents(job.id, [chunk(`${i},`)])
      const live = watch()
      await b.service.subscribe(job.id, 21, live)
      expect(live.messages).toEqual([{ type: 'recovered', after: 21 }])

      // Redis "fails over" to that older copy: the job is back at seq 11, and our generation is new.
      await admin
        .multi()
        .restore(keys[0] as string, 0, dumps[0] as Buffer, 'REPLACE')
        .restore(keys[1] as string, 0, dumps[1] as Buffer, 'REPLACE')
        .restore(keys[2] as string, 0, dumps[2] as Buffer, 'REPLACE')
        .del(`${prefix}:gen`)
        .exec()
      const head = 11 + epochSeqGap
      // The live watcher at 21 is told: a reset snapshot of what survives, not a silent wait.
      await vi.waitFor(() => expect(live.messages.at(-1)).toMatchObject({ type: 'snapshot', reset: true, job: { seq: head } }), { timeout: 10_000 })
      const survived = await a.service.getJob(job.id)
      expect(survived.text).toBe(Array.from({ length: 9 }, (_, i) => `${i},`).join(''))
      expect(survived.seq).toBe(head)

      // Resuming from a lost position (beyond what survives) or a surviving one: a reset, never position_ahead.
      for (const position of [21, 15, 11, 3]) {
        const sink = watch()
        const subscription = await a.service.subscribe(job.id, position, sink)
        expect(sink.messages, `from ${position}`).toEqual([{ type: 'snapshot', job: survived, reset: true, reason: 'trimmed' }])
        subscription.close()
        expect(await b.service.poll(job.id, position, 0)).toMatchObject({ snapshot: { reset: true }, next: head })
      }
      // New events continue after the jump, so none can be mistaken for a lost one.
      const next = await a.service.appendEvents(job.id, [chunk('new')])
      expect(next.events.map((e) => e.seq)).toEqual([head + 1])
      await vi.waitFor(() => expect(seqs(live.messages)).toEqual([head + 1]))
      const from = watch()
      await b.service.subscribe(job.id, head, from)
      expect(from.messages).toEqual([{ type: 'recovered', after: head }, { type: 'event', event: next.events[0] as JobEvent }])
    })
  })
}
