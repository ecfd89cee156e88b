import {
  activeStatuses,
  JobwireError,
  type JobEvent,
  type Owner,
  type StreamMessage,
  type WsClientMessage,
  type WsServerMessage,
} from '@jobwire/protocol'
import type { JobService } from '../core/jobs.js'
import type { JsonShapeLimits } from '../core/json-shape.js'
import { authorizedJob, expiryOf, feedOwner, jobFor, notFound, watchExpiry } from '../core/access.js'
import { limitSubject, type Principal } from '../core/scopes.js'
import type { JobSubscription, StreamSink } from '../core/subscription.js'
import type { WsConnection } from './ws-connection.js'
import { parseClientMessage, RefusedMessage, type MessageTarget } from './ws-messages.js'

export interface WsSessionContext {
  service: JobService
  /** Turns a credential into a principal (in-band `refresh_token`). */
  authenticate(credential: string): Promise<Principal>
  /** Registers a socket opened with an API key so that revoking the key closes it. */
  trackKey(principal: Principal, fail: (error: JobwireError) => void): () => void
  maxSubscriptions: number
  /** How long before `exp` the `token_expiring` notice goes out. */
  tokenNoticeMs: number
  /** Without `Store.subscribeOwner`: how often the user feed lists the owner's jobs to find new ones. */
  ownerRescanMs: number
  /** Logs an unexpected failure; returns the id the client is told. */
  logInternal(error: unknown, where: string): string
  /** Moves the socket's stream slot to a refreshed credential's person; rejects (`too_many_streams`) when they have none left. */
  recount(principal: Principal): Promise<void>
  /**
   * One of a person's streams, for a subscription whose own credential names someone the socket's
   * credential does not (null: not counted, e.g. an API key); rejects with `too_many_streams`.
   */
  takePerson(principal: Principal): Promise<(() => void) | null>
  /** Nesting and width allowed in a client message. */
  jsonShape: JsonShapeLimits
}

/** One job's stream on this socket. It may be wanted by the client (`explicit`), by the user feed, or both. */
interface JobStream {
  jobId: string
  explicit: boolean
  inFeed: boolean
  subscription: JobSubscription | null
  started: boolean
  closed: boolean
  /** The last seq queued to the socket for this job (null before the first snapshot or event). */
  position: number | null
  /** The job's own credential (`subscribe` with `token`), checked instead of the socket's; null: the socket's. */
  credential: StreamCredential | null
  /** The person this stream counts against through its own credential (a key of `#people`), if not the socket's. */
  person: string | null
}

/** A person this socket carries through subscriptions' own credentials: one of their streams while any is open. */
interface CarriedPerson {
  slot: Promise<(() => void) | null>
  streams: number
}

/** A stream's own credential and the timers of its expiry notice and end. */
interface StreamCredential {
  principal: Principal
  stop: () => void
}

/** The "all my jobs" feed of this socket. */
interface UserFeed {
  owner: Owner
  /** The owner the client named (API keys must), to re-check after a token refresh. */
  requested: Owner | undefined
  syncing: boolean
  /** Jobs created while the initial listing ran, opened once it is done. */
  created: string[]
  stop: () => void
  closed: boolean
}

/**
 * The protocol of one WebSocket: subscriptions (each a core JobSubscription, so replay and
 * hand-off are exactly SSE's), the user feed, cancel, in-band token refresh, and credential expiry
 * and revocation. Scope is checked on every subscription and again after every refresh.
 *
 * A subscription may bring its own credential (a per-job token): it is checked against that one,
 * expires and is refreshed on its own, so one socket carries jobs under many credentials. A socket
 * opened without a credential (`principal` null) carries only such subscriptions.
 */
export class WsSession {
  #principal: Principal | null
  readonly #streams = new Map<string, JobStream>()
  readonly #people = new Map<string, CarriedPerson>()
  #feed: UserFeed | null = null
  #stopWatchingCredential: () => void = () => {}
  #closed = false

  constructor(
    private readonly connection: WsConnection,
    principal: Principal | null,
    private readonly context: WsSessionContext,
  ) {
    this.#principal = principal
    this.#watchCredential()
  }

  get streamCount(): number {
    return this.#streams.size
  }

  handleLine(line: string): void {
    let message: WsClientMessage
    try {
      message = parseClientMessage(line, { maxPositions: this.context.maxSubscriptions, jsonShape: this.context.jsonShape })
    } catch (error) {
      if (error instanceof RefusedMessage) this.#sendError(error.error, error.target)
      else this.#sendError(this.#internal(error, 'parse'), {})
      return
    }
    const target = targetOf(message)
    this.#handle(message).catch((error: unknown) => {
      if (this.#closed) return
      this.#sendError(error instanceof JobwireError ? error : this.#internal(error, message.type), target)
    })
  }

  close(): void {
    if (this.#closed) return
    this.#closed = true
    this.#stopWatchingCredential()
    this.#endFeed()
    for (const stream of [...this.#streams.values()]) this.#drop(stream)
  }

  async #handle(message: WsClientMessage): Promise<void> {
    switch (message.type) {
      case 'subscribe':
        return this.#open(message.jobId, message.after, 'job', false, message.token)
      case 'unsubscribe': {
        const stream = this.#streams.get(message.jobId)
        if (stream === undefined) return
        stream.explicit = false
        if (!stream.inFeed) this.#drop(stream)
        return
      }
      case 'subscribe_user':
        return this.#subscribeUser(message)
      case 'unsubscribe_user':
        this.#endFeed()
        return
      case 'cancel':
        return this.#cancel(message)
      case 'refresh_token':
        return this.#refresh(message)
      case 'ping':
        this.#send(message.ref === undefined ? { type: 'pong' } : { type: 'pong', ref: message.ref })
        return
      default:
        return assertNever(message)
    }
  }

  /**
   * Opens (or restarts) a job's stream. Scope is checked first; a job out of scope is answered
   * like a missing one, or not at all when the user feed only tried it (`quiet`).
   */
  async #open(jobId: string, after: number | undefined, via: 'job' | 'user', quiet = false, token?: string): Promise<void> {
    const own = token === undefined ? null : await this.context.authenticate(token)
    if (this.#closed) return
    const reader = own ?? this.#principal
    if (reader === null) throw new JobwireError('unauthorized', { reason: 'this socket has no credential: subscribe with a token' })
    const existing = this.#streams.get(jobId)
    if (via === 'user' && existing !== undefined) {
      // The user feed takes over a job this socket already follows: say so, so that the client
      // counts it among the user's jobs. Nothing is replayed — it continues after what was sent.
      if (!existing.inFeed && existing.started && !existing.closed && existing.position !== null) {
        this.connection.send([{ type: 'subscribed', jobId, via: 'user', recovered: true, after: existing.position }])
      }
      existing.inFeed = true
      return
    }
    if (existing === undefined && this.#streams.size >= this.context.maxSubscriptions) {
      this.#sendError(new JobwireError('too_many_streams', { scope: 'this connection', max: this.context.maxSubscriptions }), { jobId })
      return
    }
    const stream: JobStream = {
      jobId,
      explicit: via === 'job' || existing?.explicit === true,
      inFeed: via === 'user' || existing?.inFeed === true,
      subscription: null,
      started: false,
      closed: false,
      position: null,
      credential: null,
      person: null,
    }
    if (existing !== undefined) this.#drop(existing)
    this.#streams.set(jobId, stream)
    const { service } = this.context
    try {
      const { error } = await jobFor(service.store, reader, 'read', jobId)
      if (stream.closed) return
      if (error !== null) {
        this.#drop(stream)
        if (!quiet) this.#sendError(error, { jobId })
        return
      }
      if (own !== null) {
        const person = await this.#carryPerson(own)
        if (stream.closed) {
          this.#dropPerson(person)
          return
        }
        stream.person = person
        this.#watchStreamCredential(stream, own)
      }
      const subscription = await service.subscribe(jobId, after, this.#sinkFor(stream), 'ws')
      if (stream.closed) subscription.close(false)
      else stream.subscription = subscription
    } catch (error) {
      const wasClosed = stream.closed
      this.#drop(stream)
      if (!wasClosed) this.#sendError(error instanceof JobwireError ? error : this.#internal(error, 'subscribe'), { jobId })
    }
  }

  /** Turns a subscription's messages into this socket's, keyed by job. */
  #sinkFor(stream: JobStream): StreamSink {
    const { jobId } = stream
    return {
      write: (messages: readonly StreamMessage[], publishedAt?: number) => {
        if (stream.closed || this.#closed) return
        const out: WsServerMessage[] = []
        const via = stream.explicit ? 'job' : 'user'
        for (const message of messages) {
          switch (message.type) {
            case 'snapshot':
              if (!stream.started) out.push({ type: 'subscribed', jobId, via, recovered: false, after: null })
              out.push({ type: 'snapshot', jobId, job: message.job, reset: message.reset, reason: message.reason })
              stream.position = message.job.seq
              break
            case 'recovered':
              out.push({ type: 'subscribed', jobId, via, recovered: true, after: message.after })
              stream.position = message.after
              break
            case 'event':
              out.push(message)
              stream.position = message.event.seq
              break
            case 'queue':
              out.push({ type: 'queue', jobId, position: message.position })
              break
            case 'error':
              out.push({ type: 'error', jobId, error: message.error })
              break
            default:
              assertNever(message)
          }
          stream.started = true
        }
        this.connection.send(out, publishedAt)
      },
      events: (batch: readonly JobEvent[], publishedAt?: number) => {
        const last = batch[batch.length - 1]
        if (stream.closed || this.#closed || last === undefined) return
        this.connection.sendEvents(batch, publishedAt)
        stream.position = last.seq
        stream.started = true
      },
      // The subscription is over (terminal event or error): the job leaves this socket.
      end: () => this.#forget(stream),
    }
  }

  #forget(stream: JobStream): void {
    if (stream.closed) return
    stream.closed = true
    stream.credential?.stop()
    this.#dropPerson(stream.person)
    stream.person = null
    if (this.#streams.get(stream.jobId) === stream) this.#streams.delete(stream.jobId)
    this.connection.forgetJob(stream.jobId)
  }

  /**
   * Counts a stream's own credential against its person, once per socket like the socket's own
   * credential (a socket is one stream, whatever it carries). Returns the key to give back.
   */
  async #carryPerson(principal: Principal): Promise<string | null> {
    const subject = principal.kind === 'key' ? null : limitSubject(principal)
    const own = this.#principal
    if (subject === null || (own !== null && own.kind !== 'key' && limitSubject(own) === subject)) return null
    let person = this.#people.get(subject)
    if (person === undefined) {
      person = { slot: this.context.takePerson(principal), streams: 0 }
      this.#people.set(subject, person)
    }
    person.streams++
    try {
      await person.slot
    } catch (error) {
      this.#dropPerson(subject)
      throw error
    }
    return subject
  }

  #dropPerson(subject: string | null): void {
    if (subject === null) return
    const person = this.#people.get(subject)
    if (person === undefined || --person.streams > 0) return
    this.#people.delete(subject)
    person.slot.then(
      (release) => release?.(),
      () => {},
    )
  }

  #drop(stream: JobStream): void {
    const subscription = stream.subscription
    this.#forget(stream)
    subscription?.close(false)
  }

  async #subscribeUser(message: Extract<WsClientMessage, { type: 'subscribe_user' }>): Promise<void> {
    const owner = feedOwner(this.#principal, message.owner)
    this.#endFeed()
    const feed: UserFeed = { owner, requested: message.owner, syncing: true, created: [], stop: () => {}, closed: false }
    this.#feed = feed
    const { store } = this.context.service
    // Listen before listing, so a job created meanwhile is not missed; `at` is what a reconnect sends as `since`.
    const at = new Date().toISOString()
    if (store.subscribeOwner !== undefined) {
      feed.stop = store.subscribeOwner(owner, (created) => this.#onCreated(feed, created.jobId))
    } else {
      const timer = setInterval(() => void this.#rescan(feed), this.context.ownerRescanMs)
      timer.unref()
      feed.stop = () => clearInterval(timer)
    }
    const wanted = new Map<string, { after: number | undefined; quiet: boolean }>()
    for (const [jobId, after] of Object.entries(message.positions ?? {})) wanted.set(jobId, { after, quiet: false })
    const room = (): boolean => wanted.size < this.context.maxSubscriptions
    for (const status of activeStatuses) {
      await this.#listOwnerJobs(owner, status, (job) => {
        if (!wanted.has(job.id)) wanted.set(job.id, { after: undefined, quiet: true })
        return room()
      })
    }
    if (message.since !== undefined) {
      // Jobs created while the client was away (it resumes the ones it knew through `positions`).
      const since = message.since
      await this.#listOwnerJobs(owner, undefined, (job) => {
        if (job.createdAt < since) return false
        if (!wanted.has(job.id)) wanted.set(job.id, { after: undefined, quiet: true })
        return room()
      })
    }
    // Every job at once (each open counts its stream before its first await, so the limit holds):
    // one after another, a person with 200 jobs waited 200 rounds of reads on a busy Redis node.
    if (feed.closed) return
    await Promise.all([...wanted].map(([jobId, { after, quiet }]) => this.#open(jobId, after, 'user', quiet)))
    if (feed.closed) return
    feed.syncing = false
    for (const jobId of feed.created.splice(0)) this.#openFromFeed(jobId)
    this.#send({ type: 'user_synced', owner, at })
  }

  /** Pages through the owner's jobs, newest first, while `each` returns true. */
  async #listOwnerJobs(owner: Owner, status: 'queued' | 'running' | undefined, each: (job: { id: string; createdAt: string }) => boolean): Promise<void> {
    let cursor: string | undefined
    for (;;) {
      const page = await this.context.service.listJobs({ tenant: owner.tenant, user: owner.user, status, cursor, limit: 200 })
      for (const job of page.jobs) if (!each(job)) return
      if (page.nextCursor === null) return
      cursor = page.nextCursor
    }
  }

  #onCreated(feed: UserFeed, jobId: string): void {
    if (feed.closed || this.#closed) return
    if (feed.syncing) feed.created.push(jobId)
    else this.#openFromFeed(jobId)
  }

  #openFromFeed(jobId: string): void {
    this.#open(jobId, undefined, 'user', true).catch((error: unknown) => this.#internal(error, 'user feed'))
  }

  /** The user feed's fallback on stores without an owner fan-out: new unfinished jobs, found by listing. */
  async #rescan(feed: UserFeed): Promise<void> {
    if (feed.closed || feed.syncing) return
    try {
      for (const status of activeStatuses) {
        const page = await this.context.service.listJobs({ tenant: feed.owner.tenant, user: feed.owner.user, status, limit: 200 })
        for (const job of page.jobs) if (!feed.closed && !this.#streams.has(job.id)) this.#openFromFeed(job.id)
      }
    } catch {
      // The next rescan tries again; a store that stays down ends the socket's streams with their own errors.
    }
  }

  #endFeed(): void {
    const feed = this.#feed
    if (feed === null) return
    this.#feed = null
    feed.closed = true
    feed.stop()
    for (const stream of [...this.#streams.values()]) {
      if (!stream.inFeed) continue
      stream.inFeed = false
      if (!stream.explicit) this.#drop(stream)
    }
  }

  async #cancel(message: Extract<WsClientMessage, { type: 'cancel' }>): Promise<void> {
    const { service } = this.context
    // The job's own credential, if its stream has one, then the socket's.
    const principals = [this.#streams.get(message.jobId)?.credential?.principal ?? null, this.#principal].filter((p): p is Principal => p !== null)
    const job = await authorizedJob(service.store, principals, 'cancel', message.jobId)
    await service.cancelJob(job.id, message.reason ?? null)
    if (message.ref !== undefined) this.#send({ type: 'ack', ref: message.ref })
  }

  /** Swaps the credential, keeping every stream's position; streams the new one may not read end. */
  async #refresh(message: Extract<WsClientMessage, { type: 'refresh_token' }>): Promise<void> {
    if (message.jobId !== undefined) return this.#refreshStream(message.jobId, message)
    const principal = await this.context.authenticate(message.token)
    if (this.#closed) return
    // A credential of another person counts against their streams: refused (the old one stays) when they have none left.
    await this.context.recount(principal)
    if (this.#closed) return
    this.#principal = principal
    this.#watchCredential()
    const expiresAt = expiryOf(principal)
    const answer: WsServerMessage = { type: 'token_refreshed', expiresAt: expiresAt === null ? null : new Date(expiresAt).toISOString() }
    this.#send(message.ref === undefined ? answer : { ...answer, ref: message.ref })
    // The streams the socket's credential reads, checked against the new one all at once.
    const streams = [...this.#streams.values()].filter((stream) => stream.credential === null)
    const checked = await Promise.all(streams.map((stream) => jobFor(this.context.service.store, principal, 'read', stream.jobId)))
    streams.forEach((stream, index) => {
      const error = checked[index]?.error ?? null
      if (stream.closed || stream.credential !== null || this.#principal !== principal || error === null) return
      this.#drop(stream)
      this.#sendError(error, { jobId: stream.jobId })
    })
    const feed = this.#feed
    if (feed !== null && this.#principal === principal) {
      try {
        const owner = feedOwner(this.#principal, feed.requested)
        if (owner.tenant !== feed.owner.tenant || owner.user !== feed.owner.user) throw new JobwireError('forbidden', { action: 'watch the jobs of another user' })
      } catch (error) {
        this.#endFeed()
        this.#sendError(error instanceof JobwireError ? error : this.#internal(error, 'refresh'), { feed: true })
      }
    }
  }

  /** Swaps one stream's own credential, keeping its position; a job the new one may not read ends. */
  async #refreshStream(jobId: string, message: Extract<WsClientMessage, { type: 'refresh_token' }>): Promise<void> {
    const principal = await this.context.authenticate(message.token)
    const stream = this.#streams.get(jobId)
    if (this.#closed || stream === undefined || stream.closed) throw notFound(jobId)
    const { error } = await jobFor(this.context.service.store, principal, 'read', jobId)
    if (stream.closed || this.#streams.get(jobId) !== stream) throw notFound(jobId)
    if (error !== null) {
      this.#drop(stream)
      throw error
    }
    const person = await this.#carryPerson(principal)
    if (stream.closed) {
      this.#dropPerson(person)
      throw notFound(jobId)
    }
    this.#dropPerson(stream.person)
    stream.person = person
    this.#watchStreamCredential(stream, principal)
    const expiresAt = expiryOf(principal)
    const answer: WsServerMessage = { type: 'token_refreshed', jobId, expiresAt: expiresAt === null ? null : new Date(expiresAt).toISOString() }
    this.#send(message.ref === undefined ? answer : { ...answer, ref: message.ref })
  }

  /** A stream's own credential: its `token_expiring`, its end at `exp`, and its API key's revocation. */
  #watchStreamCredential(stream: JobStream, principal: Principal): void {
    stream.credential?.stop()
    const { jobId } = stream
    const end = (error: JobwireError): void => {
      if (stream.closed) return
      this.#drop(stream)
      this.#sendError(error, { jobId })
    }
    const stops = [
      this.context.trackKey(principal, end),
      watchExpiry(principal, end, { noticeMs: this.context.tokenNoticeMs, expiring: (expiresAt) => this.#send({ type: 'token_expiring', jobId, expiresAt }) }),
    ]
    stream.credential = {
      principal,
      stop: () => {
        for (const stop of stops) stop()
      },
    }
  }

  /** Schedules `token_expiring` and the close at `exp`, and ties the socket to its API key's revocation. */
  #watchCredential(): void {
    this.#stopWatchingCredential()
    const principal = this.#principal
    if (principal === null) return
    const fail = (error: JobwireError): void => this.connection.fail(error)
    const stops = [
      this.context.trackKey(principal, fail),
      watchExpiry(principal, fail, { noticeMs: this.context.tokenNoticeMs, expiring: (expiresAt) => this.#send({ type: 'token_expiring', expiresAt }) }),
    ]
    this.#stopWatchingCredential = () => {
      for (const stop of stops) stop()
    }
  }

  #send(message: WsServerMessage): void {
    if (!this.#closed) this.connection.send([message])
  }

  #sendError(error: JobwireError, target: MessageTarget & { feed?: boolean }): void {
    const message: WsServerMessage = { type: 'error', error: error.toBody() }
    if (target.jobId !== undefined) message.jobId = target.jobId
    if (target.ref !== undefined) message.ref = target.ref
    if (target.feed === true) message.feed = 'user'
    this.#send(message)
  }

  #internal(error: unknown, where: string): JobwireError {
    return new JobwireError('internal', { requestId: this.context.logInternal(error, where) })
  }
}

function targetOf(message: WsClientMessage): MessageTarget & { feed?: boolean } {
  switch (message.type) {
    case 'subscribe':
    case 'unsubscribe':
      return { jobId: message.jobId }
    case 'cancel':
      return message.ref === undefined ? { jobId: message.jobId } : { ref: message.ref }
    case 'subscribe_user':
    case 'unsubscribe_user':
      return { feed: true }
    case 'refresh_token':
      if (message.ref !== undefined) return { ref: message.ref }
      return message.jobId === undefined ? {} : { jobId: message.jobId }
    case 'ping':
      return message.ref === undefined ? {} : { ref: message.ref }
    default:
      return assertNever(message)
  }
}

function assertNever(value: never): never {
  throw new Error(`unhandled message ${JSON.stringify(value)}`)
}
