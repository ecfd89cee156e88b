/**
 * A protocol-level fake Jobwire server for the client's timing tests: real HTTP, SSE, long-poll and
 * WebSocket on a real socket on 127.0.0.1, speaking the wire protocol of `@jobwire/protocol`, but
 * scripted. It keeps a log per job (the shared reducer folds it), answers `subscribe`, streams and
 * polls from it by default, and lets a test send anything (welcome, snapshots, events, errors,
 * `token_expiring`), hold answers back, close or cut connections, refuse everything (`down()`),
 * and count what the client did: connection attempts, sockets, streams, polls, frames.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { WebSocketServer, type WebSocket } from 'ws'
import {
  applyEvent,
  isTerminal,
  encodeSseMessage,
  encodeWsFrame,
  JobwireError,
  protocolVersion,
  type ErrorCode,
  type EventDraft,
  type JobEvent,
  type JobState,
  type PollResponse,
  type StreamMessage,
  type WsClientMessage,
  type WsServerMessage,
} from '@jobwire/protocol'

/** One WebSocket the client opened. */
export interface FakeSocket {
  /** The credential it opened with (`access_token`), or null. */
  readonly token: string | null
  /** Every message the client sent on it, in order. */
  readonly received: WsClientMessage[]
  /** How it closed, once it has: the code and reason the client (or the fake) gave. */
  readonly closed: { code: number; reason: string } | null
  /** Sends `messages` in one frame. */
  send(...messages: WsServerMessage[]): void
  /** A clean close with `code` (1001 going away, 4401 token_expired…). */
  close(code: number, reason?: string): void
  /** Cuts the TCP connection without a close frame, as a dead network would. */
  drop(): void
}

/** One SSE stream the client opened (`GET /v1/jobs/:id/stream`). */
export interface FakeStream {
  readonly jobId: string
  readonly after: number | null
  readonly token: string | null
  /** True once the client went away or the fake ended it. */
  readonly ended: boolean
  send(message: StreamMessage): void
  /** Ends the response (the client sees the stream end). */
  end(): void
}

/** One long-poll request (`GET /v1/jobs/:id/events`). */
export interface FakePoll {
  readonly jobId: string
  readonly after: number | null
  readonly token: string | null
}

/** A scripted answer: the default (from the job's log), an error, or nothing yet (`hold`: the test answers later). */
export type Answer = 'default' | 'hold' | { error: ErrorCode; details?: Record<string, unknown> }

export interface FakeServerOptions {
  /** Answers the WebSocket upgrade; false: 404 as a server or proxy without WebSockets (default true). */
  websocket?: boolean
  /** What a new socket is sent first; 'hold' sends nothing (default: a welcome). */
  onSocket?: (socket: FakeSocket) => 'default' | 'hold'
  /** How a client message is answered (default: `subscribe` from the log, `refresh_token` → `token_refreshed`, `ping` → `pong`). */
  onMessage?: (socket: FakeSocket, message: WsClientMessage) => Answer
  /** How an SSE stream is answered (default: snapshot or exact replay from the log, then live events). */
  onStream?: (stream: FakeStream) => Answer
  /** How a poll is answered (default: from the log). */
  onPoll?: (poll: FakePoll) => Answer
  /** The welcome's `heartbeatMs` (default 15 000). */
  heartbeatMs?: number
  /** The welcome's `expiresAt` (default null). */
  expiresAt?: string | null
}

export interface FakeServer {
  readonly url: string
  /** Whether WebSocket upgrades are answered (from `options.websocket`); settable, to block or unblock them. */
  websocket: boolean
  /** TCP connections that reached the server, refused ones (while `down`) included. */
  readonly attempts: number
  readonly sockets: FakeSocket[]
  readonly streams: FakeStream[]
  readonly polls: FakePoll[]
  /** `METHOD path` of every HTTP request (upgrades included), in order. */
  readonly requests: string[]
  /** A running job: `created` and `started` (seq 2), then `drafts`; returns its state. */
  job(jobId: string, drafts?: EventDraft[]): JobState
  /** Appends events to a job's log and delivers them to every socket subscribed to it and every stream of it. */
  append(jobId: string, drafts: EventDraft[]): JobEvent[]
  state(jobId: string): JobState
  /** Sends `messages` in one frame to every open socket. */
  broadcast(...messages: WsServerMessage[]): void
  /** Cuts every connection as it arrives (each still counts as an attempt) until `up()`. */
  down(): void
  up(): void
  close(): Promise<void>
}

const created = (type = 'test'): EventDraft => ({ type: 'created', data: { type, input: null, owner: null, dispatch: false, maxAttempts: 1 } })

export async function startFakeServer(options: FakeServerOptions = {}): Promise<FakeServer> {
  const logs = new Map<string, JobEvent[]>()
  const states = new Map<string, JobState>()
  const sockets: FakeSocket[] = []
  const streams: FakeStream[] = []
  const polls: FakePoll[] = []
  const requests: string[] = []
  const live = new Set<Socket>()
  /** Per socket: the jobs it is subscribed to. */
  const subscriptions = new Map<FakeSocket, Set<string>>()
  let attempts = 0
  let isDown = false
  let clock = Date.UTC(2026, 0, 1)

  function stateOf(jobId: string): JobState {
    const state = states.get(jobId)
    if (state === undefined) throw new Error(`the fake server has no job ${jobId}`)
    return state
  }

  function append(jobId: string, drafts: EventDraft[]): JobEvent[] {
    const log = logs.get(jobId) ?? []
    logs.set(jobId, log)
    let state = states.get(jobId) ?? null
    const out: JobEvent[] = []
    for (const draft of drafts) {
      const event = { ...draft, jobId, seq: log.length + 1, at: new Date((clock += 1000)).toISOString() } as JobEvent
      state = applyEvent(state, event)
      log.push(event)
      out.push(event)
    }
    if (state !== null) states.set(jobId, state)
    if (drafts[0]?.type === 'created') return out
    for (const [socket, jobs] of subscriptions) if (jobs.has(jobId) && socket.closed === null) socket.send(...out.map((event) => ({ type: 'event' as const, event })))
    for (const stream of streams) if (stream.jobId === jobId && !stream.ended) for (const event of out) stream.send({ type: 'event', event })
    return out
  }

  /** What a stream of `jobId` from `after` starts with: exactly the missing events, or a snapshot. */
  function opening(jobId: string, after: number | null): StreamMessage[] {
    const log = logs.get(jobId) ?? []
    if (after !== null && after <= log.length) return [{ type: 'recovered', after }, ...log.slice(after).map((event) => ({ type: 'event' as const, event }))]
    return [{ type: 'snapshot', job: stateOf(jobId), reset: after !== null, reason: after === null ? 'initial' : 'position_ahead' } as StreamMessage]
  }

  const errorBody = (answer: Exclude<Answer, 'default' | 'hold'>) => new JobwireError(answer.error, answer.details).toBody()

  const http = createServer((req, res) => void onRequest(req, res))
  http.on('connection', (socket: Socket) => {
    attempts++
    if (isDown) {
      socket.destroy()
      return
    }
    live.add(socket)
    socket.on('close', () => live.delete(socket))
  })

  function onRequest(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://fake')
    requests.push(`${req.method} ${url.pathname}${url.search}`)
    const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1] ?? null
    const after = url.searchParams.has('after') ? Number(url.searchParams.get('after')) : null
    const route = /^\/v1\/jobs\/([^/]+)\/(stream|events)$/.exec(url.pathname)
    if (url.pathname === '/healthz') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}')
      return
    }
    if (route === null) {
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: new JobwireError('route_not_found', { method: req.method, url: url.pathname }).toBody() }))
      return
    }
    const jobId = decodeURIComponent(route[1] as string)
    const refuse = (answer: Exclude<Answer, 'default' | 'hold'>): void => {
      const body = errorBody(answer)
      res.writeHead(new JobwireError(answer.error).status, { 'content-type': 'application/json' }).end(JSON.stringify({ error: body }))
    }
    if (route[2] === 'events') {
      const poll: FakePoll = { jobId, after, token }
      polls.push(poll)
      const answer = options.onPoll?.(poll) ?? 'default'
      if (answer === 'hold') return
      if (answer !== 'default') return refuse(answer)
      const log = logs.get(jobId) ?? []
      const state = stateOf(jobId)
      const from = after !== null && after <= log.length ? after : null
      const body: PollResponse = {
        ...(from === null ? { snapshot: { job: state, reset: after !== null, reason: after === null ? 'initial' : 'position_ahead' } } : {}),
        events: from === null ? [] : log.slice(from),
        next: log.length,
        done: isTerminal(state.status),
        // The fake answers the whole log at once: nothing more is ever waiting.
        more: false,
      } as PollResponse
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body))
      return
    }
    let ended = false
    const stream: FakeStream = {
      jobId,
      after,
      token,
      get ended() {
        return ended
      },
      send(message) {
        if (!ended) res.write(encodeSseMessage(message))
      },
      end() {
        ended = true
        res.end()
      },
    }
    res.on('close', () => (ended = true))
    streams.push(stream)
    const answer = options.onStream?.(stream) ?? 'default'
    if (answer !== 'default' && answer !== 'hold') return refuse(answer)
    const log = logs.get(jobId) ?? []
    if (answer === 'default' && after !== null && after === log.length && isTerminal(stateOf(jobId).status)) {
      ended = true
      res.writeHead(204).end()
      return
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' })
    res.flushHeaders()
    if (answer === 'default') for (const message of opening(jobId, after)) stream.send(message)
  }

  const wss = new WebSocketServer({ noServer: true })
  http.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    const url = new URL(req.url ?? '/', 'http://fake')
    requests.push(`GET ${url.pathname} (upgrade)`)
    if (!server.websocket || url.pathname !== '/v1/ws') {
      socket.end('HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n')
      return
    }
    wss.handleUpgrade(req, socket, head, (ws) => accept(ws, url.searchParams.get('access_token')))
  })

  function accept(ws: WebSocket, token: string | null): void {
    const received: WsClientMessage[] = []
    let closed: { code: number; reason: string } | null = null
    const fake: FakeSocket = {
      token,
      received,
      get closed() {
        return closed
      },
      send(...messages) {
        if (ws.readyState === ws.OPEN) ws.send(encodeWsFrame(messages))
      },
      close(code, reason = '') {
        ws.close(code, reason)
      },
      drop() {
        ws.terminate()
      },
    }
    sockets.push(fake)
    subscriptions.set(fake, new Set())
    ws.on('close', (code, reason) => {
      closed = { code, reason: reason.toString() }
      subscriptions.delete(fake)
    })
    ws.on('message', (data) => {
      for (const line of data.toString().split('\n')) {
        if (line === '') continue
        const message = JSON.parse(line) as WsClientMessage
        received.push(message)
        onMessage(fake, message)
      }
    })
    if ((options.onSocket?.(fake) ?? 'default') === 'default') welcome(fake)
  }

  function welcome(socket: FakeSocket): void {
    socket.send({
      type: 'welcome',
      protocol: protocolVersion,
      heartbeatMs: options.heartbeatMs ?? 15_000,
      expiresAt: options.expiresAt ?? null,
      maxMessageBytes: 64 * 1024,
      maxSubscriptions: 1000,
    })
  }

  function onMessage(socket: FakeSocket, message: WsClientMessage): void {
    const answer = options.onMessage?.(socket, message) ?? 'default'
    if (answer === 'hold') return
    const ref = 'ref' in message && message.ref !== undefined ? { ref: message.ref } : {}
    const jobId = 'jobId' in message && message.jobId !== undefined ? { jobId: message.jobId } : {}
    if (answer !== 'default') {
      socket.send({ type: 'error', error: errorBody(answer), ...(message.type === 'subscribe' ? jobId : ref) })
      return
    }
    switch (message.type) {
      case 'subscribe': {
        subscriptions.get(socket)?.add(message.jobId)
        const after = message.after ?? null
        const first = opening(message.jobId, after)
        const recovered = first[0]?.type === 'recovered'
        socket.send(
          { type: 'subscribed', jobId: message.jobId, via: 'job', recovered, after },
          ...first.flatMap((one): WsServerMessage[] =>
            one.type === 'event' ? [one] : one.type === 'snapshot' ? [{ type: 'snapshot', jobId: message.jobId, job: one.job, reset: one.reset, reason: one.reason }] : [],
          ),
        )
        return
      }
      case 'unsubscribe':
        subscriptions.get(socket)?.delete(message.jobId)
        return
      case 'refresh_token':
        socket.send({ type: 'token_refreshed', expiresAt: null, ...jobId, ...ref })
        return
      case 'ping':
        socket.send({ type: 'pong', ...ref })
        return
      case 'cancel':
        socket.send({ type: 'ack', ref: message.ref ?? '' })
        return
      default:
        return
    }
  }

  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve))
  const address = http.address() as AddressInfo
  const server: FakeServer = {
    url: `http://127.0.0.1:${address.port}`,
    websocket: options.websocket ?? true,
    get attempts() {
      return attempts
    },
    sockets,
    streams,
    polls,
    requests,
    job(jobId, drafts = []) {
      append(jobId, [created(), { type: 'started', data: { attempt: 1, worker: 'fake' } }, ...drafts])
      return stateOf(jobId)
    },
    append,
    state: stateOf,
    broadcast(...messages) {
      for (const socket of sockets) if (socket.closed === null) socket.send(...messages)
    },
    down() {
      isDown = true
      for (const socket of live) socket.destroy()
      for (const client of wss.clients) client.terminate()
    },
    up() {
      isDown = false
    },
    async close() {
      for (const client of wss.clients) client.terminate()
      for (const socket of live) socket.destroy()
      wss.close()
      await new Promise<void>((resolve) => http.close(() => resolve()))
    },
  }
  return server
}
