/**
 * Client test harness: real servers (the server package's fixtures), real sockets, and a
 * WebSocket class that records every socket the client opens so a test can drop them.
 */
import { createServer, request } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import WebSocket from 'ws'
import { expect } from 'vitest'
import type { JobState } from '@jobwire/protocol'
import type { OnlineSource, WebSocketConstructor } from '@jobwire/client'
import type { ManualTimers } from '../../../test/support/manual-timers.js'
import type { TestServer } from '../../server/test/fixtures.js'

export { createJsonClient, makeTempDir, seededRandom, sleep, startTestServer, testApiKey, type TestServer } from '../../server/test/fixtures.js'
export { startServer } from '../../server/src/server.js'
export { ManualTimers, settle } from '../../../test/support/manual-timers.js'
export { until } from '../../../test/support/wait.js'

/** A `ws` WebSocket class that remembers its instances. */
export function recordingWebSocket(): { WebSocket: WebSocketConstructor; sockets: WebSocket[]; dropAll(): void } {
  const sockets: WebSocket[] = []
  class Recorded extends WebSocket {
    constructor(url: string) {
      super(url)
      sockets.push(this)
    }
  }
  return {
    WebSocket: Recorded as unknown as WebSocketConstructor,
    sockets,
    /** Cuts every open socket at the TCP level, as a network failure would. */
    dropAll() {
      for (const socket of sockets) if (socket.readyState === WebSocket.OPEN) socket.terminate()
    },
  }
}



/**
 * For a client on `clock` talking to a real server: moves the clock on `stepMs` at a time until
 * `predicate` holds. Real time passes between steps only to let the sockets carry their bytes.
 */
export async function advanceUntil(clock: ManualTimers, stepMs: number, predicate: () => boolean, what: string, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await clock.advance(stepMs)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

/** A job of type `test` that no worker claims (`body` adds to or overrides that), created over the API. */
export async function createJob(server: TestServer, body: Record<string, unknown> = {}): Promise<JobState> {
  const answer = await server.api.call<JobState>('POST', '/v1/jobs', { type: 'test', dispatch: false, ...body })
  expect(answer.status).toBe(201)
  return answer.body
}

/** The job as the server sees it (its own reducer's state). */
export async function serverState(server: { api: { call<T>(method: string, path: string): Promise<{ body: T }> } }, jobId: string): Promise<JobState> {
  return (await server.api.call<JobState>('GET', `/v1/jobs/${jobId}`)).body
}

/** Drops the fields only a snapshot carries (queue position is filled by the server, not by events). */
export function comparable(state: JobState | null): Omit<JobState, 'queuePosition'> | null {
  if (state === null) return null
  const { queuePosition: _queuePosition, ...rest } = state
  return rest
}

/**
 * An HTTP proxy in front of `target` that holds back every `text/event-stream` body (as a proxy
 * with response buffering on does) and passes everything else. It answers no WebSocket upgrade.
 */
export async function startBufferingProxy(target: string): Promise<{ url: string; heldStreams: () => number; close(): Promise<void> }> {
  const upstream = new URL(target)
  let held = 0
  const open = new Set<Socket>()
  const server = createServer((req, res) => {
    const forward = request(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers, agent: false },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers)
        if (String(answer.headers['content-type'] ?? '').startsWith('text/event-stream')) {
          held++
          const chunks: Buffer[] = []
          answer.on('data', (chunk: Buffer) => chunks.push(chunk))
          answer.on('end', () => res.end(Buffer.concat(chunks)))
        } else {
          answer.pipe(res)
        }
        res.on('close', () => answer.destroy())
      },
    )
    forward.on('error', () => res.destroy())
    req.pipe(forward)
  })
  server.on('connection', (socket) => {
    open.add(socket)
    socket.on('close', () => open.delete(socket))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${address.port}`,
    heldStreams: () => held,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of open) socket.destroy()
        server.close(() => resolve())
      }),
  }
}

/** An online/offline switch for the client. */
export function onlineSwitch(): { source: OnlineSource; set(online: boolean): void } {
  let online = true
  const listeners = new Set<(online: boolean) => void>()
  return {
    source: {
      isOnline: () => online,
      subscribe(listener) {
        listeners.add(listener)
        return () => listeners.delete(listener)
      },
    },
    set(value) {
      online = value
      for (const listener of [...listeners]) listener(value)
    },
  }
}
