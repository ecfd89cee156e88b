/**
 * A raw WebSocket client for the server's tests: real sockets, the protocol's own frame decoding,
 * and a way to stop reading (a stalled reader) without closing.
 */
import type { Socket } from 'node:net'
import WebSocket from 'ws'
import { decodeWsFrame, type WsClientMessage, type WsServerMessage } from '@jobwire/protocol'

export interface WsTestClient {
  socket: WebSocket
  /** Every message received so far, in order. */
  readonly received: readonly WsServerMessage[]
  /** Frames received so far, and their bytes. */
  readonly frames: number
  readonly bytes: number
  send(message: WsClientMessage | string): void
  /** The first message (from `from` on) matching `predicate`, waiting for it if need be. */
  next<T extends WsServerMessage = WsServerMessage>(predicate: (message: WsServerMessage) => boolean, from?: number, ms?: number): Promise<T>
  /** Stops reading from the TCP socket (the server's writes back up); `resume()` reads again. */
  pause(): void
  resume(): void
  close(): void
  readonly closed: Promise<{ code: number; reason: string }>
}

export function wsUrl(httpUrl: string, query = ''): string {
  return `${httpUrl.replace(/^http/, 'ws')}/v1/ws${query}`
}

export async function openWs(url: string, options: { token?: string; headers?: Record<string, string> } = {}): Promise<WsTestClient> {
  const headers = { ...(options.token === undefined ? {} : { authorization: `Bearer ${options.token}` }), ...options.headers }
  const socket = new WebSocket(url, { headers, maxPayload: 256 * 1024 * 1024 })
  const received: WsServerMessage[] = []
  let frames = 0
  let bytes = 0
  let wake: (() => void)[] = []
  const notify = (): void => {
    const woken = wake
    wake = []
    for (const fn of woken) fn()
  }
  socket.on('message', (data: Buffer) => {
    frames++
    bytes += data.length
    received.push(...decodeWsFrame(data.toString('utf8')))
    notify()
  })
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    socket.once('close', (code, reason) => {
      resolve({ code, reason: reason.toString() })
      notify()
    }),
  )
  socket.on('error', () => undefined)
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve())
    socket.once('unexpected-response', (_request, response) => reject(new Error(`upgrade answered HTTP ${response.statusCode}`)))
    socket.once('error', reject)
  })
  let ended = false
  void closed.then(() => (ended = true))
  return {
    socket,
    get received() {
      return received
    },
    get frames() {
      return frames
    },
    get bytes() {
      return bytes
    },
    send(message) {
      socket.send(typeof message === 'string' ? message : JSON.stringify(message))
    },
    async next<T extends WsServerMessage>(predicate: (message: WsServerMessage) => boolean, from = 0, ms = 10_000): Promise<T> {
      const deadline = Date.now() + ms
      for (;;) {
        const found = received.slice(from).find(predicate)
        if (found !== undefined) return found as T
        if (ended) throw new Error(`the socket closed before the awaited message; got ${JSON.stringify(received.slice(-3))}`)
        const left = deadline - Date.now()
        if (left <= 0) throw new Error(`no awaited message within ${ms} ms; last: ${JSON.stringify(received.slice(-3))}`)
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, left)
          wake.push(() => {
            clearTimeout(timer)
            resolve()
          })
        })
      }
    },
    pause() {
      ;(socket as unknown as { _socket: Socket })._socket.pause()
    },
    resume() {
      ;(socket as unknown as { _socket: Socket })._socket.resume()
    },
    close() {
      socket.terminate()
    },
    closed,
  }
}
