import {
  decodeWsFrame,
  errorCodeOfClose,
  JobwireError,
  wsCloseCodes,
  wsPath,
  type Owner,
  type WsClientMessage,
  type WsServerMessage,
} from '@jobwire/protocol'
import { backoffDelay, ConnectionStateMachine, type ConnectionState, type RetryState } from './connection.js'
import { asJobwireError, decide, Retry, type ClientCore } from './core.js'
import type { TimerHandle, WebSocketLike } from './environment.js'
import type { Carrier, JobFeed } from './job-feed.js'
import type { Credential, TokenRequest } from './tokens.js'

/** Up to this long before a client of a node that is going away (1001) reconnects. */
const movingJitterMs = 250

/** The user feed ("all my jobs") as the WebSocket link sees it. */
export interface UserFeedPeer {
  readonly owner: Owner | undefined
  /** What to resume after a reconnect: the jobs it holds with their positions, and `since`. */
  resumeFrom(): { positions: Record<string, number>; since: string | undefined }
  /** A job the server streams for the user feed: its feed, or null if no longer wanted. */
  adopt(jobId: string): JobFeed | null
  synced(at: string): void
  fail(error: JobwireError): void
  setConnection(state: ConnectionState, reason: string): void
}

const requestTimeoutMs = 10_000

/**
 * The client's one WebSocket: every job watched over WebSocket and the user feed share it. It
 * resubscribes everything from its last position after each reconnect, refreshes the credential
 * in band when the server says it expires, and tells the client when WebSockets cannot work here
 * (a socket that never opens) so that it falls back to SSE.
 *
 * Credentials: a credential for everything (the app's JWT, a user token) is the socket's own. A
 * per-job token travels with its job's `subscribe` instead (the socket then opens without one if
 * it has no other), and expires, is refreshed and can be refused for that job alone.
 */
export class WsLink {
  readonly connection = new ConnectionStateMachine()
  readonly #feeds = new Map<string, JobFeed>()
  readonly #resubscribeTimers = new Map<string, TimerHandle>()
  /**
   * Refused subscriptions in a row per job (none once one is accepted): the attempt of its
   * backoff, so that a job whose token the server keeps refusing as expired is asked about less
   * and less often, not every 0.5–2.5 s for good.
   */
  readonly #refusedInARow = new Map<string, number>()
  #user: UserFeedPeer | null = null
  #socket: WebSocketLike | null = null
  #connecting = false
  #welcomed = false
  #everWelcomed = false
  #failuresBeforeWelcome = 0
  /** The socket's own credential (null token: the socket opened without one). */
  #credential: Credential = { token: null, fresh: false, perJob: false }
  /** What the socket's credential was asked for, to ask again when it expires. */
  #credentialRequest: TokenRequest = { scope: 'user' }
  /** Per-job tokens sent with the subscriptions of the jobs they are for. */
  readonly #jobCredentials = new Map<string, Credential>()
  #disconnectedAt = -Infinity
  #heartbeatTimeoutMs = 35_000
  /** The server's limit on one client frame (from `welcome`). */
  #maxFrameBytes = 64 * 1024
  #watchdog: TimerHandle | null = null
  #openTimer: TimerHandle | null = null
  #lingerTimer: TimerHandle | null = null
  #refreshing = false
  readonly #requests = new Map<string, { resolve: () => void; reject: (error: JobwireError) => void; timer: TimerHandle }>()
  #nextRef = 1
  #probe: ((ok: boolean) => void) | null = null
  #shut = false
  readonly #retry: Retry
  readonly #stopOnline: () => void

  constructor(private readonly core: ClientCore) {
    this.#retry = new Retry(core, () => void this.#connect(), (attempts) => this.#setState('offline', `gave up after ${attempts} failed attempts`))
    this.#stopOnline = core.onOnline((online) => {
      if (online || this.#socket === null) return
      this.#abandon('offline')
    })
  }

  get open(): boolean {
    return this.#welcomed
  }

  /** Carries `feed` over this socket from its position; the carrier's `stop` unsubscribes. */
  carry(feed: JobFeed, subscribe = true): Carrier {
    this.#feeds.set(feed.jobId, feed)
    if (subscribe && this.#welcomed) this.#subscribe(feed)
    else if (this.#welcomed) feed.connection.set('live', 'over WebSocket')
    this.#ensure()
    const retryState = (): RetryState => this.retryState
    return {
      kind: 'ws',
      get retryState() {
        return retryState()
      },
      reconnect: () => this.reconnect(),
      resync: () => {
        if (this.#feeds.get(feed.jobId) === feed && this.#welcomed) this.#subscribe(feed)
      },
      stop: () => this.#remove(feed),
    }
  }

  attachUser(peer: UserFeedPeer): void {
    this.#user = peer
    if (this.#welcomed) {
      void this.#userCredential().then((ready) => {
        if (!ready || this.#user !== peer || !this.#welcomed) return
        this.#send([this.#subscribeUser(peer)])
        // The socket is open already: no welcome will come to say so.
        peer.setConnection('live', 'over WebSocket')
      })
    }
    this.#ensure()
  }

  /**
   * The user feed needs the socket's own credential to be one for the person: a socket opened
   * without one (per-job tokens) gets it in band. Resolves whether the feed can go ahead.
   */
  async #userCredential(): Promise<boolean> {
    if (!this.core.tokens.hasSource || (this.#credential.token !== null && !this.#credential.perJob)) return true
    const socket = this.#socket
    let credential: Credential
    try {
      credential = await this.core.tokens.get(this.#userRequest())
    } catch (error) {
      this.#user?.fail(asJobwireError(error))
      return false
    }
    if (this.#socket !== socket || !this.#welcomed) return false
    try {
      await this.#request({ type: 'refresh_token', token: credential.token ?? '' })
    } catch (error) {
      this.#user?.fail(asJobwireError(error))
      return false
    }
    this.#credential = credential
    this.#credentialRequest = this.#userRequest()
    return true
  }

  #userRequest(): TokenRequest {
    const owner = this.#user?.owner
    return owner === undefined ? { scope: 'user' } : { scope: 'user', owner }
  }

  detachUser(peer: UserFeedPeer): void {
    if (this.#user !== peer) return
    this.#user = null
    if (this.#welcomed) this.#send([{ type: 'unsubscribe_user' }])
    this.#idleCheck()
  }

  /** Cancels over the socket; rejects with `unavailable` when it is not open (use HTTP then). */
  cancel(jobId: string, reason?: string): Promise<void> {
    return this.#request(reason === undefined ? { type: 'cancel', jobId } : { type: 'cancel', jobId, reason })
  }

  /** Tries to open a socket with nothing on it; resolves whether the server welcomed it. */
  probe(): Promise<boolean> {
    if (this.#welcomed) return Promise.resolve(true)
    this.#probe?.(false)
    return new Promise((resolve) => {
      this.#probe = resolve
      this.#shut = false
      void this.#connect()
    })
  }

  /** Closes the socket for good (the client closed, or WebSockets do not work from here). */
  shutdown(): void {
    this.#shut = true
    this.#retry.cancel()
    for (const timer of this.#resubscribeTimers.values()) this.core.env.timers.clearTimeout(timer)
    this.#resubscribeTimers.clear()
    this.#refusedInARow.clear()
    this.#closeSocket(1000, 'client closed')
    this.#stopOnline()
  }

  /** Failed attempts in a row and the next retry's time. */
  get retryState(): RetryState {
    return this.#retry.state
  }

  /** Tries again now, forgetting the attempts so far (after `offline`, say). */
  reconnect(): void {
    this.#retry.reset()
    if (this.#socket === null && !this.#connecting && this.#hasWork()) void this.#connect()
  }

  /** Stops retrying without forgetting anything (the client moved to another transport). */
  idle(): void {
    this.#retry.cancel()
    this.#closeSocket(1000, 'transport changed')
  }

  #hasWork(): boolean {
    return this.#feeds.size > 0 || this.#user !== null || this.#probe !== null
  }

  #ensure(): void {
    if (this.#lingerTimer !== null) {
      this.core.env.timers.clearTimeout(this.#lingerTimer)
      this.#lingerTimer = null
    }
    this.#shut = false
    if (this.#socket === null && !this.#connecting) void this.#connect()
  }

  #remove(feed: JobFeed): void {
    if (this.#feeds.get(feed.jobId) !== feed) return
    this.#feeds.delete(feed.jobId)
    const timer = this.#resubscribeTimers.get(feed.jobId)
    if (timer !== undefined) this.core.env.timers.clearTimeout(timer)
    this.#resubscribeTimers.delete(feed.jobId)
    this.#refusedInARow.delete(feed.jobId)
    this.#jobCredentials.delete(feed.jobId)
    if (this.#welcomed && !feed.done) this.#send([{ type: 'unsubscribe', jobId: feed.jobId }])
    this.#idleCheck()
  }

  /** With nothing left to carry, the socket closes after a short linger (a remount reuses it). */
  #idleCheck(): void {
    if (this.#hasWork() || this.#lingerTimer !== null) return
    this.#lingerTimer = this.core.env.timers.setTimeout(() => {
      this.#lingerTimer = null
      if (this.#hasWork()) return
      this.#retry.cancel()
      this.#closeSocket(1000, 'nothing to watch')
      // No socket is open, and none needs to be, until the next watch.
      this.connection.set('idle', 'nothing to watch')
    }, this.core.settings.lingerMs)
  }

  async #connect(): Promise<void> {
    if (this.#shut || this.#socket !== null || this.#connecting || !this.#hasWork()) return
    const WebSocketImpl = this.core.env.WebSocket
    if (WebSocketImpl === null) {
      this.#failed('this platform has no WebSocket')
      return
    }
    this.#connecting = true
    this.#setState(this.#everWelcomed ? 'reconnecting' : 'connecting', 'opening a WebSocket')
    const request = this.#connectRequest()
    let credential: Credential = { token: null, fresh: false, perJob: false }
    if (request !== null) {
      try {
        credential = await this.core.tokens.get(request, this.#disconnectedAt)
      } catch (error) {
        this.#connecting = false
        const refused = asJobwireError(error)
        const feed = request.scope === 'jobs' ? this.#feeds.get(request.jobIds[0] as string) : undefined
        if (feed !== undefined && this.core.tokens.perJob && refused.code === 'unauthorized') {
          // Refused for this one job: it ends, and the socket goes on for the others.
          feed.fail(refused)
          void this.#connect()
          return
        }
        this.#onError(refused, true)
        return
      }
    }
    this.#connecting = false
    if (this.#shut || this.#socket !== null || !this.#hasWork()) return
    const url = new URL(this.core.url(wsPath))
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:'
    // A per-job token goes with its subscription, not on the socket.
    if (credential.perJob) credential = { token: null, fresh: false, perJob: false }
    else if (request !== null) this.#credentialRequest = request
    if (credential.token !== null) url.searchParams.set('access_token', credential.token)
    let socket: WebSocketLike
    try {
      socket = new WebSocketImpl(url.toString())
    } catch (error) {
      this.#closed(1006, '', `the WebSocket could not be created: ${asJobwireError(error).message}`)
      return
    }
    this.#socket = socket
    this.#credential = credential
    this.#welcomed = false
    socket.onopen = () => undefined
    socket.onerror = () => undefined
    socket.onmessage = (event) => {
      if (this.#socket === socket) this.#onFrame(event.data)
    }
    socket.onclose = (event) => {
      if (this.#socket === socket) this.#closed(event.code, event.reason, event.reason === '' ? `closed (${event.code})` : event.reason)
    }
    this.#openTimer = this.core.env.timers.setTimeout(() => {
      this.#openTimer = null
      if (this.#socket === socket && !this.#welcomed) this.#abandon(`no welcome within ${this.core.settings.firstMessageTimeoutMs} ms`)
    }, this.core.settings.firstMessageTimeoutMs)
  }

  /** What to ask getToken for the socket's own credential: the user feed's, else the first job's; null: none to ask. */
  #connectRequest(): TokenRequest | null {
    if (!this.core.tokens.hasSource) return null
    if (this.#user !== null) return this.#userRequest()
    for (const feed of this.#feeds.values()) if (!feed.done) return { scope: 'jobs', jobIds: [feed.jobId] }
    // A probe with nothing to carry: the credential in use, if any (a socket may open without one).
    return this.#credential.token === null ? null : this.#credentialRequest
  }

  #onFrame(data: unknown): void {
    const text = typeof data === 'string' ? data : data instanceof ArrayBuffer ? new TextDecoder().decode(data) : String(data)
    let messages: WsServerMessage[]
    try {
      messages = decodeWsFrame(text)
    } catch {
      this.#abandon('a frame that is not JSON')
      return
    }
    this.#alive()
    for (const message of messages) this.#onMessage(message)
  }

  #onMessage(message: WsServerMessage): void {
    switch (message.type) {
      case 'welcome':
        return this.#onWelcome(message)
      case 'subscribed': {
        let feed = this.#feeds.get(message.jobId) ?? null
        if (message.via === 'user') {
          // One of the user's jobs, even when a watch subscribed to it first (it opened the job's page as it was created).
          const adopted = this.#user?.adopt(message.jobId) ?? null
          if (feed === null && adopted !== null && this.#feeds.get(message.jobId) !== adopted) adopted.carrier = this.carry(adopted, false)
          feed ??= adopted
        }
        if (feed === null) {
          this.#send([{ type: 'unsubscribe', jobId: message.jobId }])
          return
        }
        feed.connection.set('live', 'over WebSocket')
        this.#refusedInARow.delete(message.jobId)
        // Its token worked: a later refusal of it is worth one more getToken.
        const own = this.#jobCredentials.get(message.jobId)
        if (own?.fresh === true) this.#jobCredentials.set(message.jobId, { ...own, fresh: false })
        return
      }
      case 'snapshot':
        this.#feeds.get(message.jobId)?.receive({ type: 'snapshot', job: message.job, reset: message.reset, reason: message.reason })
        return
      case 'event':
        this.#feeds.get(message.event.jobId)?.receive(message)
        return
      case 'coalesced':
        this.#feeds.get(message.jobId)?.receive(message)
        return
      case 'queue':
        this.#feeds.get(message.jobId)?.receive({ type: 'queue', position: message.position })
        return
      case 'user_synced':
        this.#user?.synced(message.at)
        return
      case 'error':
        return this.#onErrorMessage(message)
      case 'token_expiring':
        if (message.jobId === undefined) void this.#refreshToken()
        else void this.#refreshJobToken(message.jobId)
        return
      case 'ack':
      case 'token_refreshed':
      case 'pong':
        if (message.ref !== undefined) this.#answered(message.ref)
        return
      case 'heartbeat':
        return
      default:
        return assertNever(message)
    }
  }

  #onWelcome(message: Extract<WsServerMessage, { type: 'welcome' }>): void {
    this.#welcomed = true
    this.#everWelcomed = true
    this.#failuresBeforeWelcome = 0
    this.#retry.succeeded()
    if (this.#openTimer !== null) this.core.env.timers.clearTimeout(this.#openTimer)
    this.#openTimer = null
    this.#heartbeatTimeoutMs = this.core.settings.heartbeatTimeoutMs ?? 2 * message.heartbeatMs + 5_000
    this.#maxFrameBytes = message.maxMessageBytes
    this.#alive()
    this.connection.set('live', 'WebSocket open')
    const probe = this.#probe
    this.#probe = null
    probe?.(true)
    void this.#resubscribeAll()
  }

  /** Everything this socket carries, from where it stands, in one frame (once each job's credential is at hand). */
  async #resubscribeAll(): Promise<void> {
    const socket = this.#socket
    const feeds = [...this.#feeds.values()].filter((feed) => !feed.done && (feed.holders > 0 || !feed.inMyJobs))
    const messages = await Promise.all(feeds.map((feed) => this.#subscription(feed)))
    if (this.#socket !== socket || !this.#welcomed) return
    const out = messages.filter((message, i): message is WsClientMessage => message !== null && this.#feeds.get((feeds[i] as JobFeed).jobId) === feeds[i])
    const user = this.#user
    if (user !== null && (await this.#userCredential()) && this.#user === user && this.#socket === socket) out.push(this.#subscribeUser(user))
    if (out.length > 0) this.#send(out)
    this.#user?.setConnection('live', 'WebSocket open')
  }

  /**
   * The `subscribe` of `feed`, with the job's own token when it has one; null when getToken
   * refused it (the feed has ended) or failed for now (a retry is scheduled).
   */
  async #subscription(feed: JobFeed): Promise<WsClientMessage | null> {
    if (!this.core.tokens.hasSource) return subscription(feed, null)
    let credential: Credential
    try {
      credential = await this.core.tokens.get({ scope: 'jobs', jobIds: [feed.jobId] })
    } catch (error) {
      this.#onFeedError(feed, asJobwireError(error), true)
      return null
    }
    // Stopped while getToken ran: its credential must not be kept for a feed that is gone.
    if (this.#feeds.get(feed.jobId) !== feed) return null
    if (!credential.perJob || credential.token === this.#credential.token) {
      this.#jobCredentials.delete(feed.jobId)
      return subscription(feed, null)
    }
    this.#jobCredentials.set(feed.jobId, credential)
    return subscription(feed, credential.token)
  }

  #subscribeUser(peer: UserFeedPeer): WsClientMessage {
    const { positions, since } = peer.resumeFrom()
    const message: Extract<WsClientMessage, { type: 'subscribe_user' }> = { type: 'subscribe_user', positions }
    if (peer.owner !== undefined) message.owner = peer.owner
    if (since !== undefined) message.since = since
    return message
  }

  #subscribe(feed: JobFeed): void {
    const socket = this.#socket
    void this.#subscription(feed).then((message) => {
      if (message !== null && this.#socket === socket && this.#feeds.get(feed.jobId) === feed) this.#send([message])
    })
  }

  #answered(ref: string): void {
    const request = this.#requests.get(ref)
    if (request === undefined) return
    this.#requests.delete(ref)
    this.core.env.timers.clearTimeout(request.timer)
    request.resolve()
  }

  #onErrorMessage(message: Extract<WsServerMessage, { type: 'error' }>): void {
    const error = JobwireError.fromBody(message.error)
    if (message.ref !== undefined) {
      const request = this.#requests.get(message.ref)
      if (request === undefined) return
      this.#requests.delete(message.ref)
      this.core.env.timers.clearTimeout(request.timer)
      request.reject(error)
      return
    }
    if (message.jobId !== undefined) {
      const feed = this.#feeds.get(message.jobId)
      if (feed !== undefined) this.#onFeedError(feed, error)
      return
    }
    if (message.feed === 'user') {
      this.#user?.fail(error)
      return
    }
    // About the socket: a fatal one is followed by the close that carries its code.
  }

  #onFeedError(feed: JobFeed, error: JobwireError, fromGetToken = false): void {
    const own = this.#jobCredentials.get(feed.jobId)
    if (fromGetToken && error.code === 'unauthorized' && !this.core.tokens.perJob) {
      // getToken said no to a credential for everything: nothing can be watched.
      this.core.fatal(error)
      return
    }
    // The job's own token, refused or expired: forgotten, so that the resubscribe asks getToken again.
    if (own !== undefined && (error.code === 'token_expired' || error.code === 'unauthorized' || error.code === 'invalid_token')) this.core.tokens.invalidate(own.token)
    const decision = decide(error, fromGetToken || own?.fresh === true)
    switch (decision.kind) {
      case 'snapshot':
        feed.wantSnapshot()
        this.#subscribe(feed)
        return
      case 'poll':
        this.core.pollFeed(feed)
        return
      case 'retry': {
        feed.connection.set('reconnecting', decision.reason)
        const refused = this.#refusedInARow.get(feed.jobId) ?? 0
        this.#refusedInARow.set(feed.jobId, refused + 1)
        const delay = decision.delayMs ?? backoffDelay(refused, this.core.settings.backoff, this.core.env.random)
        const timer = this.core.env.timers.setTimeout(() => {
          this.#resubscribeTimers.delete(feed.jobId)
          if (this.#feeds.get(feed.jobId) === feed && this.#welcomed) this.#subscribe(feed)
        }, delay)
        this.#resubscribeTimers.set(feed.jobId, timer)
        return
      }
      case 'fatal':
      case 'fail':
        feed.fail(error)
        return
      default:
        return assertNever(decision)
    }
  }

  /** The server says the credential expires soon: get a new one and swap it in without reconnecting. */
  async #refreshToken(): Promise<void> {
    if (this.#refreshing) return
    this.#refreshing = true
    try {
      this.core.tokens.invalidate(this.#credential.token)
      let credential: Credential
      try {
        credential = await this.core.tokens.get(this.#credentialRequest, this.core.env.now())
      } catch (error) {
        // getToken refused: the user may not watch any more. Anything else: the server closes at
        // expiry with token_expired, and the reconnect asks getToken again.
        if (error instanceof JobwireError && error.code === 'unauthorized') this.core.fatal(error)
        return
      }
      const token = credential.token
      if (token === null || !this.#welcomed) return
      this.#credential = credential
      try {
        await this.#request({ type: 'refresh_token', token })
      } catch (error) {
        if (decide(asJobwireError(error), true).kind === 'fatal') this.core.fatal(asJobwireError(error))
      }
    } finally {
      this.#refreshing = false
    }
  }

  /** A job's own token expires soon: get a new one for that job and swap it in; other jobs are not touched. */
  async #refreshJobToken(jobId: string): Promise<void> {
    const feed = this.#feeds.get(jobId)
    const own = this.#jobCredentials.get(jobId)
    if (feed === undefined || own === undefined) return
    this.core.tokens.invalidate(own.token)
    let credential: Credential
    try {
      credential = await this.core.tokens.get({ scope: 'jobs', jobIds: [jobId] }, this.core.env.now())
    } catch (error) {
      // Refused: this job may not be watched any more. Anything else: its stream ends at expiry
      // with token_expired, and the resubscribe asks getToken again.
      const refused = asJobwireError(error)
      if (refused.code === 'unauthorized' && this.#feeds.get(jobId) === feed) {
        this.#remove(feed)
        feed.fail(refused)
      }
      return
    }
    if (this.#feeds.get(jobId) !== feed || !this.#welcomed || credential.token === null) return
    this.#jobCredentials.set(jobId, { ...credential, fresh: false })
    // A refused refresh changes nothing: the stream ends at expiry with token_expired, and its resubscribe asks getToken again.
    await this.#request({ type: 'refresh_token', jobId, token: credential.token }).catch(() => undefined)
  }

  #request(message: WsClientMessage): Promise<void> {
    if (!this.#welcomed) return Promise.reject(new JobwireError('unavailable', { reason: 'the WebSocket is not open' }))
    const ref = String(this.#nextRef++)
    return new Promise((resolve, reject) => {
      const timer = this.core.env.timers.setTimeout(() => {
        this.#requests.delete(ref)
        reject(new JobwireError('unavailable', { reason: 'no answer over the WebSocket' }))
      }, requestTimeoutMs)
      this.#requests.set(ref, { resolve, reject, timer })
      this.#send([{ ...message, ref } as WsClientMessage])
    })
  }

  /** Sends messages batched into as few frames as the server's frame limit allows. */
  #send(messages: readonly WsClientMessage[]): void {
    const socket = this.#socket
    if (socket === null || !this.#welcomed) return
    // Characters, not bytes: leave room for multi-byte text.
    const budget = Math.max(256, Math.floor(this.#maxFrameBytes / 4))
    let frame = ''
    try {
      for (const message of messages) {
        const line = JSON.stringify(message)
        if (frame !== '' && frame.length + 1 + line.length > budget) {
          socket.send(frame)
          frame = ''
        }
        frame = frame === '' ? line : `${frame}\n${line}`
      }
      if (frame !== '') socket.send(frame)
    } catch {
      this.#abandon('send failed')
    }
  }

  #alive(): void {
    const { timers } = this.core.env
    if (this.#watchdog !== null) timers.clearTimeout(this.#watchdog)
    this.#watchdog = timers.setTimeout(() => {
      this.#watchdog = null
      if (this.#socket !== null) this.#abandon('no heartbeat')
    }, this.#heartbeatTimeoutMs)
  }

  /** Gives up on the current socket at once (dead, offline, garbled) and handles it as a drop. */
  #abandon(reason: string): void {
    this.#closeSocket(4000, reason)
    this.#closed(1006, '', reason)
  }

  #closeSocket(code: number, reason: string): void {
    const socket = this.#socket
    this.#socket = null
    this.#welcomed = false
    this.#clearTimers()
    if (socket === null) return
    socket.onmessage = null
    socket.onclose = null
    try {
      socket.close(code, reason)
    } catch {
      // already closing
    }
  }

  #clearTimers(): void {
    const { timers } = this.core.env
    if (this.#watchdog !== null) timers.clearTimeout(this.#watchdog)
    if (this.#openTimer !== null) timers.clearTimeout(this.#openTimer)
    this.#watchdog = null
    this.#openTimer = null
    for (const [ref, request] of this.#requests) {
      timers.clearTimeout(request.timer)
      request.reject(new JobwireError('unavailable', { reason: 'the WebSocket closed' }))
      this.#requests.delete(ref)
    }
  }

  /** The socket is gone: retry, refresh the credential, give up, or fall back, by what closed it. */
  #closed(code: number, reason: string, description: string): void {
    const wasWelcomed = this.#welcomed
    this.#closeSocket(1000, '')
    this.#disconnectedAt = this.core.env.now()
    if (this.#shut) return
    const probe = this.#probe
    if (probe !== null && !wasWelcomed) {
      this.#probe = null
      probe(false)
      if (!this.#hasWork()) return
    }
    if (!this.#hasWork()) {
      this.connection.set('idle', 'nothing to watch')
      return
    }
    const errorCode = errorCodeOfClose(code, reason)
    if (errorCode !== null) {
      // A credential that expired after the socket was welcomed worked until then: renewed at once.
      this.#onError(new JobwireError(errorCode), this.#credential.fresh && !(errorCode === 'token_expired' && wasWelcomed))
      return
    }
    this.#setState('reconnecting', description)
    if (code === wsCloseCodes.goingAway && wasWelcomed) {
      // The node is shutting down (a deploy, a rolling restart): move elsewhere now — a load
      // balancer sends the new socket to a live node — with a little jitter so that every client
      // of that node does not arrive at once, and resume from the last seq.
      this.#retry.schedule(this.core.env.random() * movingJitterMs)
      return
    }
    if (!wasWelcomed) {
      this.#failuresBeforeWelcome++
      // Never welcomed here (or three times in a row since it was): refused or blocked on the way —
      // if plain HTTP gets through. If nothing does, the server is down: keep trying WebSockets.
      if (!this.#everWelcomed || this.#failuresBeforeWelcome >= 3) {
        this.#connecting = true
        void this.core.reachable().then((reachable) => {
          this.#connecting = false
          if (this.#shut || this.#socket !== null || !this.#hasWork()) return
          if (reachable) this.#failed(`the WebSocket did not open: ${description}`)
          else this.#retry.schedule()
        })
        return
      }
    }
    this.#retry.schedule()
  }

  #onError(error: JobwireError, freshToken: boolean): void {
    if (this.#shut) return
    const decision = decide(error, freshToken)
    switch (decision.kind) {
      case 'retry':
        if (error.code === 'token_expired' || error.code === 'unauthorized' || error.code === 'invalid_token') this.core.tokens.invalidate(this.#credential.token)
        this.#setState('reconnecting', decision.reason)
        this.#retry.schedule(decision.delayMs)
        return
      case 'fatal':
      case 'fail':
        this.core.fatal(error)
        return
      case 'snapshot':
      case 'poll':
        this.#setState('reconnecting', error.code)
        this.#retry.schedule()
        return
      default:
        return assertNever(decision)
    }
  }

  /** WebSockets do not get through: the client moves on to the next transport, or, when this is the last one allowed, tries again with backoff. */
  #failed(reason: string): void {
    this.#retry.cancel()
    if (this.core.transportFailed('ws', reason) || this.#shut) return
    this.#setState('reconnecting', reason)
    this.#retry.schedule()
  }

  #setState(state: ConnectionState, reason: string): void {
    this.connection.set(state, reason)
    for (const feed of this.#feeds.values()) feed.connection.set(state, reason)
    this.#user?.setConnection(state, reason)
  }
}

function subscription(feed: JobFeed, token: string | null): WsClientMessage {
  const message: Extract<WsClientMessage, { type: 'subscribe' }> = { type: 'subscribe', jobId: feed.jobId }
  if (feed.position !== undefined) message.after = feed.position
  if (token !== null) message.token = token
  return message
}

function assertNever(value: never): never {
  throw new Error(`unhandled message ${JSON.stringify(value)}`)
}
