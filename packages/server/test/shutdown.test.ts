import { connect, createServer } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { isTerminalEvent, type JobState } from '@jobwire/protocol'
import { makeTempDir, openSse, sleep, spawnServer, type SpawnedServer } from './fixtures.js'

/**
 * Graceful shutdown of a real `jobwire serve` process on SQLite: SIGTERM while SSE readers are
 * mid-stream and a producer is writing; the node hands every stream off with a short `retry:`,
 * exits 0, and a new process on the same port and data directory takes over. Every reader
 * resumes with Last-Event-ID and ends up with every seq exactly once.
 */
const apiKey = 'shutdown-test-admin-key-0123456789'
const auth = { authorization: `Bearer ${apiKey}` }

const cleanups: (() => Promise<unknown> | void)[] = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

/** A port free right now, so that the restarted node can listen where the first one did. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer()
    probe.once('error', reject)
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address()
      probe.close(() => resolve(typeof address === 'object' && address !== null ? address.port : 0))
    })
  })
}

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
    while (readers.some(({ reader }) => reader.seqs.length < 5)) await sleep(20)
    const exit = await server.kill('SIGTERM')
    expect(exit).toEqual({ code: 0, signal: null })
    expect(server.stderr).toContain('SIGTERM: shutting down')
    const writtenAtRestart = written
    server = await spawnServer(args, { JOBWIRE_API_KEY: apiKey })
    while (written < writtenAtRestart + 20) await sleep(20)
    stopProducing = true
    await producer
    for (const job of jobs) await writeThrough(base, job.id, { type: 'completed', result: { ok: true } })
    await Promise.all(readers.map(({ reader }) => reader.done))

    for (const { job, reader } of readers) {
      const final = (await call<JobState>(base, 'GET', `/v1/jobs/${job.id}`)).body
      expect(final.status).toBe('completed')
      // Every seq after the first snapshot, each once, in order, up to the terminal event.
      const expected = Array.from({ length: final.seq - reader.snapshotSeq }, (_, i) => reader.snapshotSeq + 1 + i)
      expect(reader.seqs).toEqual(expected)
      // The shutdown handed the stream off with a short retry, not the configured 5 s.
      expect(reader.retries[0]).toBe(250)
    }
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
