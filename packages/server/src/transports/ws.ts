import type { IncomingMessage, Server } from 'node:http'
import type { Duplex } from 'node:stream'
import { WebSocketServer } from 'ws'
import { JobwireError, protocolVersion, wsCloseCodes, wsPath, type WsServerMessage } from '@jobwire/protocol'
import type { JobService } from '../core/jobs.js'
import { expiryOf } from '../core/access.js'
import { clientAddress, type Principal } from '../core/scopes.js'
import type { JsonShapeLimits } from '../core/json-shape.js'
import type { StreamSlot } from '../core/keys.js'
import { WsConnection, type WsFlowSettings } from './ws-connection.js'
import { SpreadTicker } from './spread-ticker.js'
import { WsSession } from './ws-session.js'

export interface WsOptions extends WsFlowSettings {
  /** Job streams per socket. */
  maxSubscriptions: number
  /** How long before a credential's `exp` the socket gets `token_expiring`. */
  tokenNoticeMs: number
  /** User feed on a store without an owner fan-out: how often to list the owner's jobs. Default 2 s. */
  ownerRescanMs?: number
  /** Nesting and width allowed in a client message (the body limits). */
  jsonShape: JsonShapeLimits
}

/** What the endpoint needs from the HTTP layer: the same authentication, limits and revocation as `/v1`. */
export interface WsEndpointContext {
  service: JobService
  /**
   * The upgrade request's principal, from the same credential sources and checks as the `/v1`
   * hook; null when it carries no credential at all (its subscriptions must each bring one).
   */
  authenticateUpgrade(request: IncomingMessage): Promise<Principal | null>
  authenticate(credential: string): Promise<Principal>
  /**
   * Takes the stream slots a socket needs (it counts as one stream; one opened without a
   * credential counts against its address only); the result gives them back, or moves them to a
   * refreshed credential.
   */
  openStream(principal: Principal | null, ip: string): Promise<StreamSlot>
  /** One of a person's streams, for a subscription that brings its own credential (see WsSessionContext). */
  takePerson(principal: Principal): Promise<(() => void) | null>
  trackKey(principal: Principal, fail: (error: JobwireError) => void): () => void
  /** Logs an unexpected failure and returns the id the client is told. */
  logInternal(error: unknown, where: string): string
}

/**
 * The WebSocket transport at `/v1/ws` on the API's own HTTP server. The upgrade is authenticated
 * before it completes; a refused one still completes, then closes at once with `error` and the
 * error's close code (4401, 4429, 4503…), because a browser cannot read the status of a failed
 * upgrade and must tell "refused" from "WebSockets do not get through".
 */
export class WsEndpoint {
  readonly #wss: WebSocketServer
  readonly #live = new Map<WsConnection, WsSession | null>()
  /** Pings and heartbeats, spread over the interval (a few sockets per slice, not all at once). */
  readonly #ticks: SpreadTicker<WsConnection>
  readonly #onUpgrade: (request: IncomingMessage, socket: Duplex, head: Buffer) => void
  #closing = false
  /** Events coalesced on sockets that have since closed. */
  #coalescedBefore = 0

  constructor(
    private readonly server: Server,
    private readonly options: WsOptions,
    private readonly context: WsEndpointContext,
  ) {
    // Messages up to 4× the limit are read and answered `message_too_large`; beyond that ws closes with 1009 unread.
    this.#wss = new WebSocketServer({ noServer: true, maxPayload: options.maxMessageBytes * 4, perMessageDeflate: false, clientTracking: false })
    // An invalid handshake (not a GET, no or a bad Sec-WebSocket-Key, an unknown version): ws answers
    // it itself, in text/html and with 405 for a method, unless someone listens here. Answer it as
    // every other refusal, in Jobwire's error body with a registry code and status.
    this.#wss.on('wsClientError', (error: Error, socket: Duplex, request: IncomingMessage) => {
      const refusal =
        request.method === 'GET'
          ? new JobwireError('invalid_request', { reason: `not a valid WebSocket handshake: ${error.message}` })
          : new JobwireError('route_not_found', { method: request.method ?? '', url: wsPath })
      const version = request.headers['sec-websocket-version']
      // RFC 6455 4.4: a refused version is answered with the versions the server speaks (as ws does).
      const extra = version === '13' || version === '8' ? '' : 'Sec-WebSocket-Version: 13, 8\r\n'
      // Closed once written, as ws does, so the stream slot #accept took comes back even if the client stays.
      socket.once('finish', () => socket.destroy())
      socket.end(httpAnswer(refusal.status, JSON.stringify({ error: refusal.toBody() }), extra))
    })
    this.#onUpgrade = (request, socket, head) => {
      socket.on('error', () => undefined)
      const path = (request.url ?? '').split('?')[0]
      if (path !== wsPath || this.#closing) {
        const error = new JobwireError('route_not_found', { method: 'GET', url: path })
        socket.end(httpAnswer(404, JSON.stringify({ error: error.toBody() })))
        return
      }
      void this.#accept(request, socket, head)
    }
    server.on('upgrade', this.#onUpgrade)
    this.#ticks = new SpreadTicker(options.heartbeatMs, (connection) => connection.tick())
  }

  get connections(): number {
    return this.#live.size
  }

  /** Job streams open on all sockets (a socket following 500 jobs counts 500). */
  get subscriptions(): number {
    let count = 0
    for (const session of this.#live.values()) count += session?.streamCount ?? 0
    return count
  }

  /** Latest-wins events coalesced for slow readers since start, on open and closed sockets. */
  get coalesced(): number {
    let count = this.#coalescedBefore
    for (const connection of this.#live.keys()) count += connection.coalesced
    return count
  }

  /** Live sessions, for tests and metrics. */
  get sessions(): WsSession[] {
    return [...this.#live.values()].filter((session): session is WsSession => session !== null)
  }

  /** Closes every socket with 1001 (clients reconnect elsewhere and resume) and stops accepting. */
  close(): void {
    if (this.#closing) return
    this.#closing = true
    this.#ticks.close()
    this.server.off('upgrade', this.#onUpgrade)
    for (const connection of this.#live.keys()) connection.close(wsCloseCodes.goingAway, 'server shutting down', 1_000)
    this.#wss.close()
  }

  async #accept(request: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    let principal: Principal | null = null
    let refusal: JobwireError | null = null
    let slot: StreamSlot | null = null
    const release = (): void => slot?.release()
    try {
      principal = await this.context.authenticateUpgrade(request)
      // Gone (reset, or closed) while its credential was checked: no address to count against.
      const address = clientAddress(request.socket)
      if (address === null) {
        socket.destroy()
        return
      }
      slot = await this.context.openStream(principal, address)
    } catch (error) {
      refusal = error instanceof JobwireError ? error : new JobwireError('internal', { requestId: this.context.logInternal(error, 'upgrade') })
    }
    // ws answers an invalid handshake itself without calling back: the slot must come back then too.
    socket.once('close', () => release())
    if (socket.destroyed || this.#closing) {
      release()
      socket.destroy()
      return
    }
    this.#wss.handleUpgrade(request, socket, head, (ws) => {
      let session: WsSession | null = null
      const connection = new WsConnection(ws, this.options, (line) => session?.handleLine(line))
      this.#live.set(connection, null)
      this.#ticks.add(connection)
      void connection.closedPromise.then(() => {
        session?.close()
        this.#live.delete(connection)
        this.#ticks.delete(connection)
        this.#coalescedBefore += connection.coalesced
        release()
      })
      // Authenticated but over a stream limit is refused too (the limit's error, then the close).
      if (refusal !== null) {
        connection.fail(refusal)
        return
      }
      session = new WsSession(connection, principal, {
        service: this.context.service,
        authenticate: (credential) => this.context.authenticate(credential),
        trackKey: (p, fail) => this.context.trackKey(p, fail),
        maxSubscriptions: this.options.maxSubscriptions,
        tokenNoticeMs: this.options.tokenNoticeMs,
        ownerRescanMs: this.options.ownerRescanMs ?? 2_000,
        logInternal: (error, where) => this.context.logInternal(error, `ws ${where}`),
        recount: (next) => slot?.moveTo(next) ?? Promise.resolve(),
        takePerson: (person) => this.context.takePerson(person),
        jsonShape: this.options.jsonShape,
      })
      this.#live.set(connection, session)
      const expiresAt = principal === null ? null : expiryOf(principal)
      const welcome: WsServerMessage = {
        type: 'welcome',
        protocol: protocolVersion,
        heartbeatMs: this.options.heartbeatMs,
        expiresAt: expiresAt === null ? null : new Date(expiresAt).toISOString(),
        maxMessageBytes: this.options.maxMessageBytes,
        maxSubscriptions: this.options.maxSubscriptions,
      }
      connection.send([welcome])
      // The upgrade completed after close() went through the sockets: this one goes away too.
      if (this.#closing) connection.close(wsCloseCodes.goingAway, 'server shutting down', 1_000)
    })
  }
}

function httpAnswer(status: number, body: string, extraHeaders = ''): string {
  const reason = status === 404 ? 'Not Found' : 'Error'
  return `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extraHeaders}Connection: close\r\n\r\n${body}`
}
