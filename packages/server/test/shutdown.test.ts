import { connect } from 'node:net'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { decodeWsFrame, isTerminalEvent, type JobState, type PollResponse } from '@jobwire/protocol'
import type { AppendPlan, Store } from '../src/core/store.js'
import { startServer } from '../src/server.js'
import { SqliteStore } from '../src/stores/sqlite-store.js'
import { freePort, makeTempDir, openSse, sleep, spawnServer, testApiKey, type SpawnedServer } from './fixtures.js'

/**
 * Graceful shutdown of a real `jobwire serve` process on SQLite: SIGTERM while SSE, WebSocket and
 * long-poll readers are mid-stream and a producer is writing; the node hands every stream off (a
 * short `retry:`, close code 1001, an immediate poll answer), exits 0, and a new process on the same
 * port and data directory takes over. Every reader resumes from its last seq and ends up with every
 * seq exactly once. In process: a write in flight when the shutdown starts is answered, not cut.
 */
const apiKey = 'shutdown-test-admin-key-0123456789'
const auth = { authorization: `Bearer ${apiKey}` }

const cleanups: (() => Promise<unknown> | void)[] = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

async function call<T>(base: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: { ...auth, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  return { status: response.status, body: (await response.json()) as T }
}

/** Writes until the write is acknowledged, retrying through the restart (refused connections, 503). */
async function writeThrough(base: string, jobId: string, body: unknown): Promise<void> {
  for (;;) {
    const answer = await call(base, 'POST', `/v1/jobs/${jobId}/events`, body).catch(() => null)
    if (answer?.status === 200) return
    await sleep(25)
  }
}

interface Reader {
  /** Seq of the first snapshot, then the seq of every event, in the order received. */
  snapshotSeq: number
  seqs: number[]
  /** The `retry:` hint each ended connection carried last. */
  retries: (number | undefined)[]
  done: Promise<void>
}

/** An SSE reader that reconnects as EventSource does, resuming with Last-Event-ID, until the job ends. */
function follow(base: string, jobId: string): Reader {
  const reader: Reader = { snapshotSeq: -1, seqs: [], retries: [], done: Promise.resolve() }
  reader.done = (async () => {
    let position: number | null = null
    for (;;) {
      const headers: Record<string, string> = { ...auth, ...(position === null ? {} : { 'last-event-id': String(position) }) }
      const connection = await openSse(`${base}/v1/jobs/${jobId}/stream`, { headers }).catch(() => null)
      if (connection === null || connection.status !== 200) {
        connection?.close()
        await sleep(25)
        continue
      }
      try {
        for await (const message of connection.messages()) {
          if (message.type === 'snapshot' && position === null) {
            reader.snapshotSeq = message.job.seq
            position = message.job.seq
          } else if (message.type === 'event') {
            reader.seqs.push(message.event.seq)
            position = message.event.seq
            if (isTerminalEvent(message.event.type)) {
              connection.close()
              return
            }
          }
        }
      } catch {
        // A reset connection: reconnect like any other end.
      }
      reader.retries.push(connection.retry)
      connection.close()
    }
  })()
  return reader
}

/** A WebSocket reader that reconnects after any close and resubscribes from its last seq, until the job ends. */
function followWs(base: string, jobId: string): Reader & { closeCodes: number[] } {
  const reader = { snapshotSeq: -1, seqs: [] as number[], retries: [] as (number | undefined)[], closeCodes: [] as number[], done: Promise.resolve() }
  reader.done = (async () => {
    let position: number | null = null
    for (;;) {
      const finished = await new Promise<boolean>((resolve) => {
        const socket = new WebSocket(`${base.replace(/^http/, 'ws')}/v1/ws`, { headers: auth })
        let ended = false
        socket.on('error', () => undefined)
        socket.on('open', () => socket.send(JSON.stringify(position === null ? { type: 'subscribe', jobId } : { type: 'subscribe', jobId, after: position })))
        socket.on('message', (data: Buffer) => {
          for (const message of decodeWsFrame(data.toString('utf8'))) {
            if (message.type === 'snapshot' && position === null) {
              reader.snapshotSeq = message.job.seq
              position = message.job.seq
            } else if (message.type === 'event' && message.event.jobId === jobId) {
              reader.seqs.push(message.event.seq)
              position = message.event.seq
              if (isTerminalEvent(message.event.type)) ended = true
            } else if (message.type === 'coalesced' && message.jobId === jobId) {
              // One message standing for seqs from..(its highest): a slow moment, not a loss.
              const last = Math.max(...message.events.map((e) => e.seq))
              for (let seq = message.from; seq <= last; seq++) reader.seqs.push(seq)
              position = last
            }
          }
          if (ended) socket.close()
        })
        socket.on('close', (code) => {
          if (!ended) reader.closeCodes.push(code)
          resolve(ended)
        })
      })
      if (finished) return
      await sleep(25)
    }
  })()
  return reader
}

/** A long-poll reader (`after` + `wait`) that retries through errors and refusals until the job ends. */
function followPoll(base: string, jobId: string): Reader {
  const reader: Reader = { snapshotSeq: -1, seqs: [], retries: [], done: Promise.resolve() }
  reader.done = (async () => {
    let position: number | null = null
    for (;;) {
      const path: string = `/v1/jobs/${jobId}/events${position === null ? '' : `?after=${position}&wait=5`}`
      const answer: { status: number; body: PollResponse } | null = await call<PollResponse>(base, 'GET', path).catch(() => null)
      if (answer?.status !== 200) {
        await sleep(25)
        continue
      }
      const { snapshot, events, next, done }: PollResponse = answer.body
      if (snapshot !== undefined && position === null) reader.snapshotSeq = snapshot.job.seq
      for (const event of events) reader.seqs.push(event.seq)
      position = next
      if (done) return
    }
  })()
  return reader
}

describe('graceful shutdown', () => {
  it('SIGTERM mid-stream: readers resume on the restarted node with every seq exactly once', async () => {
    const dir = await makeTempDir()
    cleanups.push(() => dir.remove())
    const port = await freePort()
    const base = `http://127.0.0.1:${port}`
    const args = ['--port', String(port), '--data-dir', dir.path, '--sse-retry', '5s']
    let server: SpawnedServer = await spawnServer(args, { JOBWIRE_API_KEY: apiKey })
    cleanups.push(() => server.kill('SIGKILL'))

    const jobs: JobState[] = []
    for (let i = 0; i < 3; i++) jobs.push((await call<JobState>(base, 'POST', '/v1/jobs', { type: 'render', dispatch: false })).body)
    const readers = jobs.flatMap((job) => [follow(base, job.id), follow(base, job.id), follow(base, job.id)].map((reader) => ({ job, reader })))
    const sockets = jobs.map((job) => ({ job, reader: followWs(base, job.id) }))
    const polls = jobs.map((job) => ({ job, reader: followPoll(base, job.id) }))

    let stopProducing = false
    let written = 0
    const producer = (async () => {
      for (let round = 0; !stopProducing; round++) {
        for (const job of jobs) await writeThrough(base, job.id, { type: 'progress', percent: round % 100, message: `round ${round}` })
        written++
        await sleep(5)
      }
    })()

    // Mid-stream: every reader has live events, and the producer keeps writing through the restart.
    while ([...readers, ...sockets, ...polls].some(({ reader }) => reader.seqs.length < 5)) await sleep(20)
    const exit = await server.kill('SIGTERM')
    expect(exit).toEqual({ code: 0, signal: null })
    expect(server.stderr).toContain('SIGTERM: shutting down')
    const writtenAtRestart = written
    server = await spawnServer(args, { JOBWIRE_API_KEY: apiKey })
    while (written < writtenAtRestart + 20) await sleep(20)
    stopProducing = true
    await producer
    for (const job of jobs) await writeThrough(base, job.id, { type: 'completed', result: { ok: true } })
    await Promise.all([...readers, ...sockets, ...polls].map(({ reader }) => reader.done))

    for (const { job, reader } of [...readers, ...sockets, ...polls]) {
      const final = (await call<JobState>(base, 'GET', `/v1/jobs/${job.id}`)).body
      expect(final.status).toBe('completed')
      // Every seq after the first snapshot, each once, in order, up to the terminal event.
      const expected = Array.from({ length: final.seq - reader.snapshotSeq }, (_, i) => reader.snapshotSeq + 1 + i)
      expect(reader.seqs).toEqual(expected)
    }
    // The shutdown handed each SSE stream off with a short retry, not the configured 5 s…
    for (const { reader } of readers) expect(reader.retries[0]).toBe(250)
    // …and closed each WebSocket with 1001 (going away: reconnect, elsewhere if need be, and resume).
    for (const { reader } of sockets) expect(reader.closeCodes[0]).toBe(1001)
  })

  it('a write in flight when the shutdown starts is answered, while new connections are already refused', async () => {
    // A real SQLite store whose next append waits for the test to let it go.
    const dir = await makeTempDir()
    cleanups.push(() => dir.remove())
    const path = join(dir.path, 'jobwire.db')
    const sqlite = new SqliteStore({ path })
    let entered: () => void = () => {}
    let release: () => void = () => {}
    let hold = false
    const store = new Proxy(sqlite, {
      get(target, property, receiver) {
        const value: unknown = Reflect.get(target, property, receiver)
        if (typeof value !== 'function') return value
        const method = (value as (...args: unknown[]) => unknown).bind(target)
        if (property !== 'append') return method
        return async (jobId: string, plan: AppendPlan) => {
          if (hold) {
            hold = false
            entered()
            await new Promise<void>((resolve) => (release = resolve))
          }
          return method(jobId, plan)
        }
      },
    }) as Store
    const server = await startServer({ logger: false, store, config: { apiKey: testApiKey, port: 0, host: '127.0.0.1', dataDir: dir.path } })
    cleanups.push(() => server.close())
    const headers = { authorization: `Bearer ${testApiKey}`, 'content-type': 'application/json' }
    const job = (await (await fetch(`${server.url}/v1/jobs`, { method: 'POST', headers, body: JSON.stringify({ type: 'slow', dispatch: false }) })).json()) as JobState

    hold = true
    const inside = new Promise<void>((resolve) => (entered = resolve))
    const write = fetch(`${server.url}/v1/jobs/${job.id}/events`, { method: 'POST', headers, body: JSON.stringify({ type: 'completed', result: 'kept' }) })
    await inside
    const closed = server.close()
    // The listener closes first: a newcomer is refused (and goes to another node), not served.
    for (;;) {
      const refused = await fetch(`${server.url}/healthz`, { headers: { connection: 'close' } }).then(
        () => false,
        () => true,
      )
      if (refused) break
      await sleep(10)
    }
    // Well past the old fixed 150 ms grace: the write still gets its answer.
    await sleep(300)
    release()
    const answer = await write
    expect(answer.status).toBe(200)
    expect(await answer.json()).toMatchObject({ status: 'completed', seq: 3 })
    await closed
    const reopened = new SqliteStore({ path })
    cleanups.push(() => reopened.close())
    expect((await reopened.getJob(job.id))?.status).toBe('completed')
  })

  it("the node's own workers (--demo) hand their running jobs back on shutdown: re-queued at once, not left to lapse", async () => {
    const dir = await makeTempDir()
    cleanups.push(() => dir.remove())
    const server = await startServer({ logger: false, config: { apiKey: testApiKey, port: 0, host: '127.0.0.1', dataDir: dir.path, demo: true } })
    cleanups.push(() => server.close())
    // The demo starts a few jobs at once; the agent job alone runs for about 20 s.
    let running: JobState[] = []
    while (running.length === 0) {
      const page = (await (await fetch(`${server.url}/v1/jobs?status=running`, { headers: { authorization: `Bearer ${testApiKey}` } })).json()) as { jobs: JobState[] }
      running = page.jobs
      if (running.length === 0) await sleep(20)
    }
    await server.close()
    const store = new SqliteStore({ path: join(dir.path, 'jobwire.db') })
    cleanups.push(() => store.close())
    let handedBack = 0
    for (const job of running) {
      const after = await store.getJob(job.id)
      // Finished in time, or given back with its checkpoint: never left running under a lease nobody renews.
      expect(after?.status, job.type).not.toBe('running')
      if (after?.status === 'queued') {
        const log = await store.readLog(job.id, 0, 10_000)
        expect(log?.events.at(-1)).toMatchObject({ type: 'requeued', data: { reason: 'worker stopping' } })
        handedBack++
      }
    }
    // Demo jobs run for seconds: the shutdown caught some mid-run.
    expect(handedBack).toBeGreaterThan(0)
  })

  it('a second signal during a slow shutdown exits at once', async () => {
    const dir = await makeTempDir()
    cleanups.push(() => dir.remove())
    const server = await spawnServer(['--port', '0', '--data-dir', dir.path], { JOBWIRE_API_KEY: apiKey })
    cleanups.push(() => server.kill('SIGKILL'))
    // A WebSocket client that never answers the close handshake holds the shutdown for its 1 s grace.
    const { port } = new URL(server.url)
    const socket = connect(Number(port), '127.0.0.1')
    cleanups.push(() => void socket.destroy())
    socket.on('error', () => undefined)
    socket.write(
      `GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer ${apiKey}\r\n\r\n`,
    )
    await new Promise<void>((resolve) => socket.once('data', () => resolve()))
    socket.pause()
    server.child.kill('SIGTERM')
    await sleep(200)
    server.child.kill('SIGTERM')
    expect(await server.exited).toEqual({ code: 130, signal: null })
    expect(server.stderr).toContain('SIGTERM again: exiting now')
  })
})
