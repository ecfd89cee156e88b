import { createServer as createTcpServer, type Socket as TcpSocket } from 'node:net'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { mintSubscriptionToken } from '@jobwire/backend'
import { eventTypes, sseEventNames } from '@jobwire/protocol'
import { EventSource } from 'eventsource'
import WebSocket from 'ws'
import { createJobwireClient, JobwireError, type ConnectionState, type JobState, type EventSourceConstructor, type JobwireClient, type WebSocketConstructor } from '@jobwire/client'
import {
  advanceUntil,
  comparable,
  createJob,
  createJsonClient,
  makeTempDir,
  ManualTimers,
  onlineSwitch,
  recordingWebSocket,
  seededRandom,
  serverState,
  sleep,
  startBufferingProxy,
  startServer,
  startTestServer,
  testApiKey,
  until,
  type TestServer,
} from './harness.js'

const cleanups: (() => unknown)[] = []
let server: TestServer | null = null
let client: JobwireClient | null = null
afterEach(async () => {
  client?.close()
  client = null
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
  await server?.close()
  server = null
})

/** Starts this test's server (closed after it). */
async function serve(options?: Parameters<typeof startTestServer>[0]): Promise<TestServer> {
  server = await startTestServer(options)
  return server
}

const fast = { backoff: { minMs: 10, maxMs: 100 } }
const secret = 'client-test-token-secret-0123456789abcdef'
const ann = { tenant: 'acme', user: 'ann' }
/** A user token for ann, minted as her app's backend would. */
const annToken = (): string => mintSubscriptionToken({ secret, ...ann, ttlSeconds: 600 }).token

async function append(s: { api: TestServer['api'] }, jobId: string, events: unknown[]): Promise<void> {
  const answer = await s.api.call('POST', `/v1/jobs/${jobId}/events`, { events })
  expect(answer.status, JSON.stringify(answer.body)).toBe(200)
}

/** Records the seqs of the events a watch applied, and whether it ended. */
function recorder() {
  const applied: number[] = []
  const states: ConnectionState[] = []
  let ended = false
  let error: JobwireError | null = null
  return {
    applied,
    states,
    get ended() {
      return ended
    },
    get error() {
      return error
    },
    options: {
      onUpdate: (_state: JobState, update: { event?: { seq: number } }) => {
        if (update.event !== undefined) applied.push(update.event.seq)
      },
      onConnection: (change: { to: ConnectionState }) => states.push(change.to),
      onEnd: (e: JobwireError | null) => {
        ended = true
        error = e
      },
    },
  }
}

/** A client for ann's jobs over one transport, polling every 100 ms. */
function annClient(s: TestServer, transport: 'ws' | 'sse' | 'poll', options: { backoff?: { minMs: number; maxMs: number }; myJobsKeepFinished?: number } = {}): JobwireClient {
  return createJobwireClient({ url: s.url, transports: [transport], pollIntervalMs: 100, getToken: annToken, WebSocket: recordingWebSocket().WebSocket, ...options })
}

/** A server, a client on the server's key, and a new job watched until it is live with its snapshot. */
async function watchNewJob(options?: Parameters<typeof startTestServer>[0]) {
  const s = await serve(options)
  const ws = recordingWebSocket()
  const c = createJobwireClient({ url: s.url, getToken: () => s.key, WebSocket: ws.WebSocket })
  client = c
  const job = await createJob(s)
  const record = recorder()
  const watch = c.watchJob(job.id, record.options)
  await until(() => watch.state !== null && watch.connection === 'live', 'a live watch with its snapshot')
  return { s, ws, client: c, job, record, watch }
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i)

describe('watchJob over WebSocket', () => {
  it('shows a snapshot, then every event live, and stops at the terminal event with the server state', async () => {
    const { s, ws, job, record, watch, client: c } = await watchNewJob()
    await append(s, job.id, [{ type: 'progress', stage: 'a', percent: 10 }, { type: 'chunk', text: 'hello ' }])
    await append(s, job.id, [{ type: 'item', id: 'f1', status: 'running' }, { type: 'chunk', text: 'world' }])
    await append(s, job.id, [{ type: 'completed', result: { ok: true } }])
    await until(() => record.ended, 'the terminal event')
    expect(comparable(watch.state)).toEqual(comparable(await serverState(s, job.id)))
    expect(watch.state?.text).toBe('hello world')
    expect(watch.connection).toBe('closed')
    expect(record.applied).toEqual(range(2, 7))
    expect(c.transport).toBe('ws')
    expect(ws.sockets).toHaveLength(1)
  })

  it('delivers every seq exactly once and in order while the socket is dropped at random points', async () => {
    const s = await serve()
    const ws = recordingWebSocket()
    client = createJobwireClient({ url: s.url, getToken: () => s.key, WebSocket: ws.WebSocket, ...fast })
    const job = await createJob(s)
    const record = recorder()
    const watch = client.watchJob(job.id, record.options)
    await until(() => watch.state !== null, 'the first snapshot')
    const random = seededRandom(7)
    for (let batch = 0; batch < 80; batch++) {
      const size = 1 + Math.floor(random() * 4)
      await append(
        s,
        job.id,
        Array.from({ length: size }, (_, i) => (i % 2 === 0 ? { type: 'chunk', text: `${batch}.${i} ` } : { type: 'progress', percent: batch })),
      )
      if (random() < 0.25) ws.dropAll()
      if (random() < 0.3) await sleep(random() * 30)
    }
    await append(s, job.id, [{ type: 'completed' }])
    await until(() => record.ended, 'the terminal event', 30_000)
    const head = (await serverState(s, job.id)).seq
    expect(record.applied).toEqual(range(2, head))
    expect(comparable(watch.state)).toEqual(comparable(await serverState(s, job.id)))
    expect(ws.sockets.length).toBeGreaterThan(5)
    expect(client.transport).toBe('ws')
  })

  it('resumes from its last seq after the server restarts on the same SQLite file', async () => {
    const dir = await makeTempDir()
    cleanups.push(() => dir.remove())
    const config = { apiKey: testApiKey, host: '127.0.0.1', dataDir: dir.path, memory: false }
    let running = await startServer({ logger: false, config: { ...config, port: 0 } })
    cleanups.push(() => running.close())
    const port = running.port
    let api = createJsonClient(running.url, testApiKey)
    cleanups.push(() => api.close())
    const ws = recordingWebSocket()
    client = createJobwireClient({ url: running.url, getToken: () => testApiKey, WebSocket: ws.WebSocket, ...fast })
    const job = (await api.call<JobState>('POST', '/v1/jobs', { type: 'test', dispatch: false })).body
    const record = recorder()
    const watch = client.watchJob(job.id, record.options)
    await until(() => watch.state !== null, 'the first snapshot')
    await append({ api }, job.id, [{ type: 'progress', stage: 'one' }, { type: 'chunk', text: 'before ' }])
    await until(() => watch.state?.seq === 4, 'the events before the restart')
    await running.close()
    await api.close()
    await until(() => watch.connection === 'reconnecting', 'the client to notice')
    running = await startServer({ logger: false, config: { ...config, port } })
    api = createJsonClient(running.url, testApiKey)
    await append({ api }, job.id, [{ type: 'chunk', text: 'after' }, { type: 'completed' }])
    await until(() => record.ended, 'the terminal event after the restart', 30_000)
    expect(record.applied).toEqual(range(2, 6))
    expect(watch.state?.text).toBe('before after')
    expect(client.transport).toBe('ws')
  })

  it('yields each new state to a for-await loop and ends after the terminal one', async () => {
    const s = await serve()
    client = createJobwireClient({ url: s.url, getToken: () => s.key, WebSocket: recordingWebSocket().WebSocket })
    const job = await createJob(s)
    const seen: string[] = []
    // Awaited after the loop: the terminal event can reach the watcher before the write's own answer
    // reaches the test, and a write still in flight when the server closes rejects unhandled.
    let writes: Promise<unknown> = Promise.resolve()
    const loop = (async () => {
      for await (const state of (client as JobwireClient).watchJob(job.id)) {
        seen.push(`${state.status}:${state.text}`)
        if (state.seq === 1) writes = append(s, job.id, [{ type: 'chunk', text: 'x' }]).then(() => append(s, job.id, [{ type: 'completed' }]))
      }
    })()
    await loop
    await writes
    expect(seen[0]).toBe('queued:')
    expect(seen.at(-1)).toBe('completed:x')
  })

  it('carries 500 subscriptions on one socket', async () => {
    const s = await serve()
    const ws = recordingWebSocket()
    client = createJobwireClient({ url: s.url, getToken: () => s.key, WebSocket: ws.WebSocket })
    const jobs: JobState[] = []
    for (let i = 0; i < 500; i++) jobs.push(await createJob(s))
    const watch = client.watchJobs(jobs.map((job) => job.id))
    await until(() => watch.states.size === 500, '500 snapshots')
    await Promise.all(jobs.map((job, i) => append(s, job.id, [{ type: 'progress', percent: i % 100 }])))
    await until(() => [...watch.states.values()].every((state) => state.seq === 3), 'an event on each of the 500 jobs')
    expect(ws.sockets).toHaveLength(1)
    watch.stop()
  })
})

describe('transport fallback', () => {
  it('falls back to SSE when the server refuses WebSockets, with the same states', async () => {
    const { s, ws, job, record, watch, client: c } = await watchNewJob({ websocket: false })
    expect(c.transport).toBe('sse')
    await append(s, job.id, [{ type: 'chunk', text: 'over SSE' }, { type: 'completed' }])
    await until(() => record.ended, 'the terminal event')
    expect(record.applied).toEqual(range(2, 4))
    expect(comparable(watch.state)).toEqual(comparable(await serverState(s, job.id)))
    expect(ws.sockets.length).toBeGreaterThanOrEqual(1)
  })

  it('moves back to WebSocket once it gets through again, without losing or repeating an event', async () => {
    const s = await serve()
    const ws = recordingWebSocket()
    let blocked = true
    const Flaky = class extends (ws.WebSocket as unknown as new (url: string) => object) {
      constructor(url: string) {
        super(blocked ? 'ws://127.0.0.1:9/v1/ws' : url)
      }
    } as unknown as typeof ws.WebSocket
    const clock = new ManualTimers(Date.now())
    client = createJobwireClient({ url: s.url, getToken: () => s.key, WebSocket: Flaky, upgradeIntervalMs: 300, random: () => 0.5, timers: clock, now: () => clock.now() })
    const job = await createJob(s)
    const record = recorder()
    const watch = client.watchJob(job.id, record.options)
    await until(() => client?.transport === 'sse' && watch.connection === 'live', 'the SSE fallback')
    await append(s, job.id, [{ type: 'chunk', text: 'a' }])
    await until(() => watch.state?.text === 'a', 'the event over SSE')
    blocked = false
    await clock.advance(300) // upgradeIntervalMs · (0.75 + random / 2)
    await until(() => client?.transport === 'ws' && watch.connection === 'live', 'the move back to WebSocket')
    await append(s, job.id, [{ type: 'chunk', text: 'b' }, { type: 'completed' }])
    await until(() => record.ended, 'the end')
    expect(watch.state?.text).toBe('ab')
    expect(record.applied).toEqual(range(2, 5))
  })

  it('falls back to polling when a buffering proxy holds SSE back, and never polls after the end', async () => {
    const s = await serve()
    const proxy = await startBufferingProxy(s.url)
    cleanups.push(() => proxy.close())
    const ws = recordingWebSocket()
    let polls = 0
    const countingFetch: typeof fetch = (input, init) => {
      if (String(input).includes('/events')) polls++
      return fetch(input, init)
    }
    const clock = new ManualTimers(Date.now())
    client = createJobwireClient({
      url: proxy.url,
      getToken: () => s.key,
      WebSocket: ws.WebSocket,
      fetch: countingFetch,
      pollIntervalMs: 100,
      firstMessageTimeoutMs: 500,
      timers: clock,
      now: () => clock.now(),
    })
    const job = await createJob(s)
    const record = recorder()
    const watch = client.watchJob(job.id, record.options)
    // The upgrade hangs in the proxy and the SSE stream is held there: each gives up after
    // firstMessageTimeoutMs without a byte, on the clock.
    await advanceUntil(clock, 100, () => proxy.heldStreams() === 1, 'the proxy to hold the SSE stream')
    await clock.advance(500)
    await until(() => client?.transport === 'poll' && watch.state !== null, 'polling through the proxy')
    await append(s, job.id, [{ type: 'progress', percent: 50 }, { type: 'completed', result: 42 }])
    await advanceUntil(clock, 100, () => record.ended, 'the terminal event by polling')
    expect(record.applied).toEqual(range(2, 4))
    expect(watch.state?.result).toBe(42)
    expect(record.states).toContain('polling')
    const after = polls
    await clock.advance(60 * 60_000)
    expect(polls).toBe(after)
  })
})

describe('SSE through an EventSource (platforms without streaming fetch)', () => {
  it('listens for every name a stream sends — each event type of the protocol — and follows a job to its end', async () => {
    const s = await serve({ tokenSecret: secret, websocket: false })
    const heard = new Set<string>()
    let opened = 0
    class Recording extends EventSource {
      constructor(url: string) {
        // The client has chosen the EventSource by now; the EventSource's own fetch needs the real ReadableStream.
        vi.unstubAllGlobals()
        super(url)
        opened++
        const listen = this.addEventListener.bind(this)
        this.addEventListener = ((...args: Parameters<typeof listen>) => {
          heard.add(String(args[0]))
          listen(...args)
        }) as typeof listen
      }
    }
    const job = await createJob(s)
    // The client reads SSE with fetch where responses stream, and through an EventSource where they do not.
    vi.stubGlobal('ReadableStream', undefined)
    cleanups.push(() => vi.unstubAllGlobals())
    client = createJobwireClient({
      url: s.url,
      getToken: () => mintSubscriptionToken({ secret, jobIds: [job.id] }).token,
      transports: ['sse'],
      EventSource: Recording as unknown as EventSourceConstructor,
    })
    const record = recorder()
    const watch = client.watchJob(job.id, record.options)
    await until(() => watch.connection === 'live' && watch.state !== null, 'a live stream through the EventSource')
    await append(s, job.id, [
      { type: 'started' },
      { type: 'progress', stage: 'one', percent: 10 },
      { type: 'item', id: 'a', status: 'running' },
      { type: 'chunk', text: 'text' },
      { type: 'checkpoint', data: { at: 1 } },
      { type: 'completed', result: { ok: true } },
    ])
    await until(() => record.ended, 'the terminal event')
    expect(record.applied).toEqual(range(2, 7))
    expect(comparable(watch.state)).toEqual(comparable(await serverState(s, job.id)))
    expect(opened).toBe(1)
    // A type the protocol gains is listened for with no change here (an EventSource drops names it does not listen for).
    expect([...heard].sort()).toEqual([...sseEventNames].sort())
    expect(eventTypes.filter((type) => !heard.has(type))).toEqual([])
  })
})

describe('SSE after the end', () => {
  it('takes a 204 for a finished job as its end: one snapshot request for the final state, no retry loop', async () => {
    const s = await serve({ websocket: false, sseRetry: 10 })
    const job = await createJob(s)
    await append(s, job.id, [{ type: 'chunk', text: 'done' }, { type: 'completed' }])
    const final = await serverState(s, job.id)
    const streamUrls: string[] = []
    // The first stream request asks from the job's last seq, as a feed that lost its state between
    // the last event and the end would: the server answers 204 No Content.
    const fetchAtEnd: typeof fetch = (input, init) => {
      let url = String(input instanceof Request ? input.url : input)
      if (url.includes('/stream')) {
        if (streamUrls.length === 0) url = `${url.split('?')[0]}?after=${final.seq}`
        streamUrls.push(url)
      }
      return fetch(url, init)
    }
    client = createJobwireClient({ url: s.url, getToken: () => s.key, transports: ['sse'], fetch: fetchAtEnd, ...fast })
    const record = recorder()
    const watch = client.watchJob(job.id, record.options)
    await until(() => record.ended, 'the watch to end')
    expect(record.error).toBeNull()
    expect(comparable(watch.state)).toEqual(comparable(final))
    expect(record.states).not.toContain('reconnecting')
    expect(streamUrls).toEqual([`${s.url}/v1/jobs/${job.id}/stream?after=${final.seq}`, `${s.url}/v1/jobs/${job.id}/stream`])
  })
})

describe('the last transport allowed keeps trying when it does not get through', () => {
  it('SSE only, its streams held by a buffering proxy: tried again with backoff after each first-message timeout (it stopped for good, "connecting")', async () => {
    const s = await serve()
    const proxy = await startBufferingProxy(s.url)
    cleanups.push(() => proxy.close())
    const clock = new ManualTimers(Date.now())
    const c = createJobwireClient({ url: proxy.url, transports: ['sse'], getToken: () => s.key, firstMessageTimeoutMs: 500, timers: clock, now: () => clock.now(), random: seededRandom(3) })
    client = c
    const watch = c.watchJob((await createJob(s)).id)
    await advanceUntil(clock, 100, () => proxy.heldStreams() >= 3, 'three held SSE streams')
    expect(watch.connection === 'reconnecting' || watch.connection === 'connecting').toBe(true)
    expect(c.transport).toBe('sse')
  })

  it('WebSocket only, upgrades refused by a proxy that passes plain HTTP: tried again with backoff (it stopped for good after the first)', async () => {
    const s = await serve()
    const proxy = await startBufferingProxy(s.url)
    cleanups.push(() => proxy.close())
    const ws = recordingWebSocket()
    const clock = new ManualTimers(Date.now())
    const c = createJobwireClient({ url: proxy.url, transports: ['ws'], getToken: () => s.key, WebSocket: ws.WebSocket, firstMessageTimeoutMs: 500, timers: clock, now: () => clock.now(), random: seededRandom(5) })
    client = c
    const watch = c.watchJob((await createJob(s)).id)
    await advanceUntil(clock, 100, () => ws.sockets.length >= 3, 'three WebSocket attempts')
    expect(watch.connection === 'reconnecting' || watch.connection === 'connecting').toBe(true)
  })

  it('polling a server that accepts connections and never answers: each poll is given up after the first-message timeout and tried again (it waited as long as fetch did)', async () => {
    const { port } = await silentServer()
    let polls = 0
    const clock = new ManualTimers(Date.now())
    const c = createJobwireClient({
      url: `http://127.0.0.1:${port}`,
      transports: ['poll'],
      getToken: () => 'any',
      fetch: (input, init) => (polls++, fetch(input, init)),
      firstMessageTimeoutMs: 500,
      timers: clock,
      now: () => clock.now(),
      random: seededRandom(9),
    })
    client = c
    const watch = c.watchJob('job_AAAAAAAAAAAAAAAAAAAAAA')
    await advanceUntil(clock, 100, () => polls >= 3, 'three polls')
    expect(watch.connection).toBe('reconnecting')
  })
})

/** A server that accepts connections and never answers (a stopped process, a half-open connection); closed after the test. */
async function silentServer(): Promise<{ port: number; held: Set<TcpSocket> }> {
  const held = new Set<TcpSocket>()
  const silent = createTcpServer((socket) => {
    held.add(socket)
    socket.on('close', () => held.delete(socket))
  })
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
  cleanups.push(() => {
    for (const socket of held) socket.destroy()
    return new Promise<void>((resolve) => silent.close(() => resolve()))
  })
  return { port: (silent.address() as { port: number }).port, held }
}

describe('one-shot requests to a server that accepts connections and never answers', () => {
  it('cancel, listJobs, fetchResult and fetchCheckpoint reject with unavailable after requestTimeoutMs, and cancel when its signal aborts (they waited as long as fetch did)', async () => {
    const { port, held } = await silentServer()
    const c = createJobwireClient({ url: `http://127.0.0.1:${port}`, transports: ['poll'], getToken: () => 'any', requestTimeoutMs: 200 })
    client = c
    const jobId = 'job_AAAAAAAAAAAAAAAAAAAAAA'
    const failure = (promise: Promise<unknown>): Promise<unknown> => promise.then(() => null, (error: unknown) => error)
    for (const call of [() => c.cancel(jobId), () => c.listJobs(), () => c.fetchResult(jobId), () => c.fetchCheckpoint(jobId)]) {
      const error = await failure(call())
      expect(error).toBeInstanceOf(JobwireError)
      expect(error).toMatchObject({ code: 'unavailable', details: { reason: 'no answer within 200 ms (requestTimeoutMs)' } })
    }
    // The caller's signal ends a cancel too, long before the timeout.
    const patient = createJobwireClient({ url: `http://127.0.0.1:${port}`, transports: ['poll'], getToken: () => 'any', requestTimeoutMs: 600_000 })
    cleanups.push(() => patient.close())
    const aborting = new AbortController()
    const cancelling = failure(patient.cancel(jobId, 'no longer needed', { signal: aborting.signal }))
    await until(() => held.size >= 1, 'the cancel request to arrive')
    aborting.abort()
    expect(await cancelling).toMatchObject({ code: 'unavailable' })
  })
})

describe('a for await loop over a watch', () => {
  for (const transport of ['ws', 'sse', 'poll'] as const) {
    for (const how of ['watch.stop()', 'client.close()'] as const) {
      it(`${transport}: ends when ${how} is called while it waits for the next state (it waited for good before)`, async () => {
        const s = await serve()
        const job = await createJob(s)
        const c = createJobwireClient({ url: s.url, transports: [transport], getToken: () => s.key, WebSocket: recordingWebSocket().WebSocket })
        client = c
        const watch = c.watchJob(job.id)
        const seen: string[] = []
        const loop = (async () => {
          for await (const state of watch) seen.push(state.status)
          return 'ended'
        })()
        await until(() => seen.length === 1, 'the first state')
        if (how === 'watch.stop()') watch.stop()
        else c.close()
        let timer: ReturnType<typeof setTimeout> | undefined
        const outcome = await Promise.race([loop, new Promise((resolve) => (timer = setTimeout(() => resolve('still waiting after 10 s'), 10_000)))])
        clearTimeout(timer)
        expect(outcome).toBe('ended')
        expect(seen).toEqual(['queued'])
        if (how === 'client.close()') expect(watch.connection).toBe('closed')
      })
    }
  }
})

describe('a getToken that hands out a token already expired', () => {
  for (const transport of ['ws', 'sse', 'poll'] as const) {
    it(`${transport}: backs off and goes offline after maxRetries (before: asked getToken and the server again at once, hundreds of times a second, for good)`, async () => {
      const s = await serve({ tokenSecret: secret })
      const job = await createJob(s, { owner: ann })
      // Minted an hour ago for a minute, as a getToken that returns a cached token would hand it over.
      const stale = mintSubscriptionToken({ secret, ...ann, now: Date.now() - 3_600_000, ttlSeconds: 60 }).token
      let calls = 0
      const clock = new ManualTimers(Date.now())
      const c = createJobwireClient({
        url: s.url,
        transports: [transport],
        getToken: () => (calls++, stale),
        WebSocket: recordingWebSocket().WebSocket,
        timers: clock,
        now: () => clock.now(),
        random: seededRandom(11),
        maxRetries: 3,
      })
      client = c
      const watch = c.watchJob(job.id)
      await advanceUntil(clock, 100, () => watch.connection === 'offline', 'offline')
      // The first attempt and three backoff retries, each with the token getToken gave.
      expect(calls).toBe(4)
      await clock.advance(60 * 60_000) // nothing retries, however long
      expect(calls).toBe(4)
    })
  }
})

/** Watches a job with `getToken`, until the watch ends unauthorized; checks nothing retried an hour later. */
async function watchUntilRefused(getToken: () => string) {
  const s = await serve()
  const job = await createJob(s)
  let calls = 0
  const ws = recordingWebSocket()
  const clock = new ManualTimers(Date.now())
  const c = createJobwireClient({ url: s.url, getToken: () => (calls++, getToken()), WebSocket: ws.WebSocket, timers: clock, now: () => clock.now() })
  client = c
  const record = recorder()
  c.watchJob(job.id, record.options)
  await until(() => record.ended, 'the watch to end')
  expect(record.error?.code).toBe('unauthorized')
  await clock.advance(60 * 60_000) // nothing retries, however long
  expect(calls).toBe(1)
  return { ws, client: c }
}

describe('credentials', () => {
  it('refreshes an expiring token in band over WebSocket without reconnecting or losing position', async () => {
    const s = await serve({ tokenSecret: secret, tokenNotice: '2s' })
    const job = await createJob(s, { owner: { tenant: 'acme', user: 'ann' } })
    let calls = 0
    const ws = recordingWebSocket()
    client = createJobwireClient({
      url: s.url,
      getToken: () => {
        calls++
        return mintSubscriptionToken({ secret, jobIds: [job.id], ttlSeconds: 3 }).token
      },
      WebSocket: ws.WebSocket,
    })
    const record = recorder()
    const watch = client.watchJob(job.id, record.options)
    await until(() => watch.connection === 'live', 'live')
    const firstExpiry = Date.now() + 3_000
    for (let i = 0; i < 4; i++) await append(s, job.id, [{ type: 'chunk', text: `${i}` }])
    // The server says token_expiring 2 s before the 3 s token lapses; the client refreshes in band.
    await until(() => calls >= 2, 'the refresh')
    // Past the first token's expiry (the server's clock): the socket lives on the refreshed one.
    await until(() => Date.now() > firstExpiry + 200, "the first token's expiry")
    for (let i = 4; i < 8; i++) await append(s, job.id, [{ type: 'chunk', text: `${i}` }])
    await append(s, job.id, [{ type: 'completed' }])
    await until(() => record.ended, 'the terminal event')
    expect(record.error).toBeNull()
    expect(calls).toBeGreaterThanOrEqual(2)
    expect(ws.sockets).toHaveLength(1)
    expect(watch.state?.text).toBe('01234567')
    expect(record.applied).toEqual(range(2, 11))
  })

  it('reconnects an SSE stream that ended with token_expired with a fresh token, from its position', async () => {
    const s = await serve({ tokenSecret: secret })
    const job = await createJob(s, { owner: { tenant: 'acme', user: 'ann' } })
    let calls = 0
    client = createJobwireClient({
      url: s.url,
      transports: ['sse'],
      getToken: () => {
        calls++
        return mintSubscriptionToken({ secret, jobIds: [job.id], ttlSeconds: 2 }).token
      },
    })
    const record = recorder()
    const watch = client.watchJob(job.id, record.options)
    await until(() => watch.state !== null, 'the first snapshot')
    for (let i = 0; i < 3; i++) await append(s, job.id, [{ type: 'chunk', text: `${i}` }])
    // The stream ends with token_expired when the 2 s token lapses; the reconnect asks getToken again.
    await until(() => calls >= 2, 'the reconnect with a fresh token')
    for (let i = 3; i < 6; i++) await append(s, job.id, [{ type: 'chunk', text: `${i}` }])
    await append(s, job.id, [{ type: 'completed' }])
    await until(() => record.ended, 'the terminal event')
    expect(calls).toBeGreaterThanOrEqual(2)
    expect(watch.state?.text).toBe('012345')
    expect(record.applied).toEqual(range(2, 9))
  })

  it('stops retrying with unauthorized when getToken refuses', async () => {
    const { ws, client: c } = await watchUntilRefused(() => {
      throw new JobwireError('unauthorized')
    })
    expect(ws.sockets).toHaveLength(0)
    expect(c.connection.state).toBe('closed')
  })

  it('stops with unauthorized when the server refuses a token fresh from getToken', async () => {
    const { ws } = await watchUntilRefused(() => 'not-a-credential')
    expect(ws.sockets).toHaveLength(1)
  })
})

describe('online and offline', () => {
  it('waits while offline and catches up once online again', async () => {
    const s = await serve()
    const net = onlineSwitch()
    const ws = recordingWebSocket()
    const clock = new ManualTimers(Date.now())
    client = createJobwireClient({ url: s.url, getToken: () => s.key, WebSocket: ws.WebSocket, online: net.source, timers: clock, now: () => clock.now() })
    const job = await createJob(s)
    const record = recorder()
    const watch = client.watchJob(job.id, record.options)
    await until(() => watch.connection === 'live', 'live')
    net.set(false)
    await until(() => watch.connection === 'reconnecting', 'reconnecting while offline')
    const sockets = ws.sockets.length
    await append(s, job.id, [{ type: 'chunk', text: 'while away' }])
    await clock.advance(60 * 60_000) // no retry while offline, however long
    expect(ws.sockets).toHaveLength(sockets)
    net.set(true)
    await until(() => watch.state?.text === 'while away', 'the missed event')
    await append(s, job.id, [{ type: 'completed' }])
    await until(() => record.ended, 'the end')
    expect(record.applied).toEqual(range(2, 4))
  })
})

describe('watchMyJobs', () => {
  it.for(['ws', 'sse', 'poll'] as const)('shows the same jobs over %s: unfinished ones, then new ones as they are created', async (transport) => {
    const s = await serve({ tokenSecret: secret })
    const running = await createJob(s, { owner: ann })
    const finished = await createJob(s, { owner: ann })
    await append(s, finished.id, [{ type: 'completed' }])
    await createJob(s, { owner: { tenant: 'acme', user: 'bob' } })
    client = annClient(s, transport)
    const lists: string[][] = []
    const watch = client.watchMyJobs({ onUpdate: (jobs) => lists.push(jobs.map((job) => job.id)) })
    await until(() => watch.loaded && watch.jobs.length === 1, 'the unfinished job')
    expect(watch.jobs.map((job) => job.id)).toEqual([running.id])
    const later = await createJob(s, { owner: ann })
    await until(() => watch.jobs.length === 2, 'the job created later')
    expect(watch.jobs.map((job) => job.id)).toEqual([later.id, running.id])
    await append(s, later.id, [{ type: 'chunk', text: 'x' }, { type: 'completed', result: 1 }])
    await until(() => watch.jobs[0]?.status === 'completed', 'the new job to finish')
    expect(watch.jobs[0]?.result).toBe(1)
    expect(lists.flat()).not.toContain(finished.id)
    watch.stop()
  })
})

describe('watchMyJobs keeps the newest finished jobs', () => {
  it.for(['ws', 'sse', 'poll'] as const)('over %s: past myJobsKeepFinished, the oldest finished jobs leave the list; unfinished ones stay', async (transport) => {
    const s = await serve({ tokenSecret: secret })
    client = annClient(s, transport, { myJobsKeepFinished: 2 })
    const watch = client.watchMyJobs()
    await until(() => watch.loaded, 'the list')
    const ids: string[] = []
    for (let i = 0; i < 5; i++) {
      ids.push((await createJob(s, { owner: ann })).id)
      // Distinct creation times, so "newest" is one order.
      await new Promise((resolve) => setTimeout(resolve, 3))
    }
    await until(() => watch.jobs.length === 5, 'the five jobs')
    const [first, second, running, fourth, fifth] = ids as [string, string, string, string, string]
    for (const id of [fifth, first, second, fourth]) await append(s, id, [{ type: 'completed', result: id }])
    await until(() => watch.jobs.filter((job) => job.status === 'completed').length === 2 && watch.jobs.length === 3, 'two finished jobs kept')
    expect(watch.jobs.map((job) => job.id)).toEqual([fifth, fourth, running])
    expect(watch.jobs.map((job) => job.status)).toEqual(['completed', 'completed', 'queued'])
    // A job created later still joins, and pushes the oldest finished one out when it finishes.
    const sixth = (await createJob(s, { owner: ann })).id
    await until(() => watch.jobs[0]?.id === sixth, 'the sixth job')
    await append(s, sixth, [{ type: 'completed', result: sixth }])
    await until(() => watch.jobs.length === 3 && watch.jobs[0]?.status === 'completed', 'the sixth job finished')
    expect(watch.jobs.map((job) => job.id)).toEqual([sixth, fifth, running])
    watch.stop()
  })
})

describe('watchMyJobs owners', () => {
  it('switches to another owner at once when the previous owner’s watch just stopped (a filter changed)', async () => {
    const s = await serve()
    const ann = await createJob(s, { owner: { tenant: 'acme', user: 'ann' } })
    const bob = await createJob(s, { owner: { tenant: 'acme', user: 'bob' } })
    client = createJobwireClient({ url: s.url, getToken: () => s.key, WebSocket: recordingWebSocket().WebSocket, lingerMs: 5_000 })
    const first = client.watchMyJobs({ owner: { tenant: 'acme', user: 'ann' } })
    await until(() => first.loaded && first.jobs.length === 1, "ann's job")
    expect(first.jobs[0]?.id).toBe(ann.id)
    first.stop()
    // Regression: this threw "one client watches the jobs of one owner at a time" while ann's feed lingered.
    const second = client.watchMyJobs({ owner: { tenant: 'acme', user: 'bob' } })
    await until(() => second.loaded && second.jobs.length === 1, "bob's job")
    expect(second.jobs.map((job) => job.id)).toEqual([bob.id])
    expect(() => client?.watchMyJobs({ owner: { tenant: 'acme', user: 'ann' } })).toThrow(TypeError)
    second.stop()
  })
})

describe('listJobs', () => {
  it('pages through every job newest first with status, type and owner filters', async () => {
    const s = await serve()
    const created: JobState[] = []
    for (let i = 0; i < 7; i++) {
      created.push(await createJob(s, { type: i % 2 === 0 ? 'even' : 'odd', owner: { tenant: i < 4 ? 'acme' : 'umbrella', user: `u${i % 3}` } }))
    }
    await append(s, created[2]?.id ?? '', [{ type: 'completed' }])
    client = createJobwireClient({ url: s.url, getToken: () => s.key, WebSocket: recordingWebSocket().WebSocket })
    const seen: string[] = []
    let cursor: string | undefined
    for (let page = 0; page < 10; page++) {
      const answer = await client.listJobs({ limit: 3, ...(cursor === undefined ? {} : { cursor }) })
      expect(answer.jobs.length).toBeLessThanOrEqual(3)
      seen.push(...answer.jobs.map((job) => job.id))
      if (answer.nextCursor === null) break
      cursor = answer.nextCursor
    }
    expect(seen).toEqual(created.map((job) => job.id).reverse())
    const even = await client.listJobs({ type: 'even' })
    expect(even.jobs.map((job) => job.id)).toEqual([6, 4, 2, 0].map((i) => created[i]?.id))
    expect(even.jobs[0]).toMatchObject({ finished: false, textLength: 0 })
    expect(even.jobs[0]).not.toHaveProperty('text')
    expect((await client.listJobs({ status: 'completed' })).jobs.map((job) => job.id)).toEqual([created[2]?.id])
    expect((await client.listJobs({ owner: { tenant: 'umbrella' } })).jobs).toHaveLength(3)
    expect((await client.listJobs({ owner: { tenant: 'acme', user: 'u0' } })).jobs.map((job) => job.id)).toEqual([created[3]?.id, created[0]?.id])
  })

  it("lists only the token's own jobs, renewing an expired token once through getToken", async () => {
    const s = await serve({ tokenSecret: secret })
    const mine = await createJob(s, { owner: { tenant: 'acme', user: 'ann' } })
    await createJob(s, { owner: { tenant: 'acme', user: 'bob' } })
    const tokens = [mintSubscriptionToken({ secret, tenant: 'acme', user: 'ann', ttlSeconds: -10 }).token]
    let asked = 0
    client = createJobwireClient({
      url: s.url,
      getToken: () => tokens[asked++] ?? annToken(),
      WebSocket: recordingWebSocket().WebSocket,
    })
    const page = await client.listJobs({ owner: { tenant: 'acme', user: 'bob' } })
    expect(page.jobs).toEqual([])
    expect((await client.listJobs()).jobs.map((job) => job.id)).toEqual([mine.id])
    expect(asked).toBe(2)
  })

  it('rejects with the server’s error code', async () => {
    const s = await serve()
    client = createJobwireClient({ url: s.url, getToken: () => s.key, WebSocket: recordingWebSocket().WebSocket })
    await expect(client.listJobs({ limit: 500 })).rejects.toMatchObject({ code: 'invalid_request' })
  })
})

describe('refollow: a resumed job is followed again', () => {
  it.for(['ws', 'sse', 'poll'] as const)('the same watch goes on over %s after cancel → resume, through to the result', async (transport) => {
    const s = await serve()
    client = createJobwireClient({ url: s.url, getToken: () => s.key, transports: [transport], pollIntervalMs: 100, WebSocket: recordingWebSocket().WebSocket, lingerMs: 20, ...fast })
    const job = await createJob(s)
    const statuses: string[] = []
    let ends = 0
    const watch = client.watchJob(job.id, { onUpdate: (state) => statuses.push(state.status), onEnd: () => ends++ })
    await until(() => watch.state !== null, 'the snapshot')
    await append(s, job.id, [{ type: 'chunk', text: 'part one. ' }, { type: 'checkpoint', data: { step: 1 } }])
    await s.api.call('POST', `/v1/jobs/${job.id}/cancel`, {})
    await until(() => watch.done, 'the cancel')
    expect(watch.state?.status).toBe('cancelled')
    // Long after the end (past the linger), the watch still holds the job's feed.
    await sleep(100)
    expect((await s.api.call('POST', `/v1/jobs/${job.id}/resume`, {})).status).toBe(200)
    expect(client.refollow(job.id)).toBe(true)
    expect(watch.done).toBe(false)
    await until(() => watch.state?.status === 'queued', 'the resumed job')
    expect(watch.state?.checkpoint).toEqual({ step: 1 })
    await append(s, job.id, [{ type: 'chunk', text: 'part two.' }, { type: 'completed', result: 2 }])
    await until(() => watch.done, 'the second end')
    expect(comparable(watch.state)).toEqual(comparable(await serverState(s, job.id)))
    expect(watch.state?.text).toBe('part one. part two.')
    expect(ends).toBe(2)
    expect(statuses).toContain('running')
    watch.stop()
  })

  it('ends again, without reconnecting in a loop, when the job did not move on after all', async () => {
    const s = await serve()
    const ws = recordingWebSocket()
    const clock = new ManualTimers(Date.now())
    client = createJobwireClient({ url: s.url, getToken: () => s.key, WebSocket: ws.WebSocket, timers: clock, now: () => clock.now() })
    const job = await createJob(s)
    let ends = 0
    const watch = client.watchJob(job.id, { onEnd: () => ends++ })
    await s.api.call('POST', `/v1/jobs/${job.id}/cancel`, {})
    await until(() => watch.done, 'the cancel')
    expect(client.refollow(job.id)).toBe(true)
    await until(() => ends === 2, 'the terminal snapshot')
    expect(watch.done).toBe(true)
    expect(watch.state?.status).toBe('cancelled')
    expect(watch.connection).toBe('closed')
    // Nothing that is not following a finished job is refollowed.
    expect(client.refollow('job_unknown')).toBe(false)
    expect(client.refollow((await createJob(s)).id)).toBe(false)
    // Any retry loop would have run by now (30 s stays short of the heartbeat watchdog's 35 s:
    // the server's real heartbeats do not arrive on this clock).
    await clock.advance(30_000)
    expect(ends).toBe(2)
    expect(ws.sockets).toHaveLength(1)
    watch.stop()
  })

  it.for(['ws', 'poll'] as const)('brings a resumed job back to life in watchMyJobs over %s', async (transport) => {
    const s = await serve({ tokenSecret: secret })
    const job = await createJob(s, { owner: ann })
    client = annClient(s, transport, fast)
    const mine = client.watchMyJobs()
    await until(() => mine.jobs[0]?.status === 'queued', 'the queued job')
    await append(s, job.id, [{ type: 'failed', code: 'boom', message: 'it broke' }])
    await until(() => mine.jobs[0]?.status === 'failed', 'the failure')
    await s.api.call('POST', `/v1/jobs/${job.id}/resume`, {})
    expect(client.refollow(job.id)).toBe(true)
    await until(() => mine.jobs[0]?.status === 'queued', 'the resumed job in the list')
    await append(s, job.id, [{ type: 'completed', result: 'ok' }])
    await until(() => mine.jobs[0]?.status === 'completed', 'its completion')
    expect(mine.jobs).toHaveLength(1)
    mine.stop()
  })
})

describe('watchMyJobs on a socket that is already open', () => {
  it('is live at once (regression: it stayed "connecting" when a job watch had opened the socket first)', async () => {
    const s = await serve()
    const job = await createJob(s, { owner: ann })
    const ws = recordingWebSocket()
    client = createJobwireClient({ url: s.url, getToken: () => s.key, WebSocket: ws.WebSocket })
    const watch = client.watchJob(job.id)
    await until(() => watch.connection === 'live', 'the job watch')
    const mine = client.watchMyJobs({ owner: ann })
    await until(() => mine.loaded, 'the user feed')
    expect(mine.connection).toBe('live')
    expect(ws.sockets).toHaveLength(1)
    mine.stop()
    watch.stop()
  })
})

describe('watchMyJobs and a job watched as it is created', () => {
  it('counts the job among my jobs when a watch subscribed to it before the user feed announced it', async () => {
    const s = await serve()
    // Holds back the user feed's announcements, so the watch below gets there first.
    const held: (() => void)[] = []
    let holding = false
    class Gated extends WebSocket {
      constructor(url: string) {
        super(url)
        const descriptor = Object.getOwnPropertyDescriptor(WebSocket.prototype, 'onmessage') as PropertyDescriptor
        Object.defineProperty(this, 'onmessage', {
          configurable: true,
          get: () => descriptor.get?.call(this) as unknown,
          set: (handler: ((event: { data: unknown }) => void) | null) =>
            descriptor.set?.call(
              this,
              handler === null
                ? null
                : (event: { data: unknown }) => {
                    if (holding && String(event.data).includes('"via":"user"')) held.push(() => handler(event))
                    else handler(event)
                  },
            ),
        })
      }
    }
    client = createJobwireClient({ url: s.url, getToken: () => s.key, WebSocket: Gated as unknown as WebSocketConstructor })
    const mine = client.watchMyJobs({ owner: ann })
    await until(() => mine.loaded, 'the user feed')
    holding = true
    const job = await createJob(s, { owner: ann })
    const watch = client.watchJob(job.id)
    await until(() => watch.connection === 'live' && watch.state !== null, 'the job watch')
    await until(() => held.length > 0, 'the user feed to announce the job')
    holding = false
    for (const deliver of held.splice(0)) deliver()
    await until(() => mine.jobs.length === 1, 'the job among my jobs')
    await append(s, job.id, [{ type: 'completed' }])
    await until(() => mine.jobs[0]?.status === 'completed', 'its completion in my jobs')
    mine.stop()
    watch.stop()
  })
})
