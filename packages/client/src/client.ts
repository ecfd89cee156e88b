import { JobwireError, type CancelRequest, type JobCheckpoint, type JobPage, type JobResult, type JobState, type JobStatus, type JobSummary, type Owner } from '@jobwire/protocol'
import { ConnectionStateMachine, type BackoffOptions, type ConnectionState, type RetryState, type StateChange } from './connection.js'
import { asJobwireError, authHeaders, errorOf, timeBox, type ClientCore, type Settings } from './core.js'
import { resolveEnvironment, type EnvironmentOptions, type TimerHandle } from './environment.js'
import { JobFeed, type FeedListener, type JobUpdate, type TransportName } from './job-feed.js'
import { MyJobsFeed, type MyJobsListener } from './my-jobs.js'
import { PollCarrier } from './poll-carrier.js'
import { SseCarrier } from './sse-carrier.js'
import { TokenSource, type GetToken } from './tokens.js'
import { WsLink } from './ws-link.js'

export interface ClientOptions extends EnvironmentOptions {
  /** The Jobwire server, e.g. `https://jobs.example.com` (the API is under `/v1`). */
  url: string
  /** The credential, asked for on connect, on reconnect and before it expires (see GetToken). Omit to rely on a cookie. */
  getToken?: GetToken
  /** Transports in order of preference. Default `['ws', 'sse', 'poll']`. */
  transports?: readonly TransportName[]
  /** Polling interval. Default 5 s. */
  pollIntervalMs?: number
  /** Reconnect backoff with full jitter. Defaults 500 ms doubling up to 20 s. */
  backoff?: BackoffOptions
  /** Silence after which a stream counts as dead. Default: 2 × the server's heartbeat + 5 s (35 s for SSE). */
  heartbeatTimeoutMs?: number
  /** Time a new WebSocket or SSE stream has to deliver its first message, else it counts as blocked. Default 10 s. */
  firstMessageTimeoutMs?: number
  /**
   * Longest a one-shot request — `cancel` over HTTP, `listJobs`, `fetchResult`, `fetchCheckpoint` —
   * waits for its whole answer before it rejects with `unavailable`: a server that accepted the
   * connection and never answers would otherwise hold it as long as `fetch` waits (minutes in Node,
   * without limit in a browser). Default 30 s.
   */
  requestTimeoutMs?: number
  /** While on a fallback, how often to try the preferred transport again. Default 60 s. */
  upgradeIntervalMs?: number
  /** How long an unwatched job (and an idle socket) is kept, so a quick re-watch (a remount) reuses it. Default 1 s. */
  lingerMs?: number
  /**
   * Finished jobs `watchMyJobs` keeps in its list: the newest this many (by creation); older
   * finished ones leave it, and the client lets go of them. Unfinished jobs always stay. Default
   * 1,000, so a list left open for weeks does not grow with every job its owner ever ran.
   */
  myJobsKeepFinished?: number
  /**
   * Failed attempts in a row after which the client stops retrying and says `offline` (e.g. 3 for
   * "3 retries, then CONNECTION LOST"). A new watch, the device coming back online, or
   * `client.reconnect()` tries again. Default: retry for ever.
   */
  maxRetries?: number
}

export interface WatchJobOptions {
  /** Every new state, with what changed it. */
  onUpdate?: (state: JobState, update: JobUpdate) => void
  onConnection?: (change: StateChange) => void
  /** The watch is over: the job is terminal (`error` null), or it cannot be watched (`job_not_found`, `unauthorized`…). */
  onEnd?: (error: JobwireError | null) => void
  /** Stops the watch when aborted. */
  signal?: AbortSignal
}

/** A live view of one job. Iterate it (`for await`) for each new state until the job ends. */
export interface JobWatch extends AsyncIterable<JobState> {
  readonly jobId: string
  /** The job's true state as of its last applied event; null until the first snapshot. */
  readonly state: JobState | null
  readonly connection: ConnectionState
  /** Why watching failed, when it did. */
  readonly error: JobwireError | null
  /** True after the terminal event (or a terminal error): nothing more will come, unless the job is resumed and `client.refollow` is called. */
  readonly done: boolean
  /** Cancels the job (over the WebSocket when open, else HTTP). Needs the `cancel` right. */
  cancel(reason?: string): Promise<void>
  stop(): void
}

export interface WatchJobsOptions extends Omit<WatchJobOptions, 'onUpdate' | 'onEnd'> {
  onUpdate?: (states: ReadonlyMap<string, JobState>, update: JobUpdate & { jobId: string }) => void
  onEnd?: (jobId: string, error: JobwireError | null) => void
}

export interface JobsWatch {
  readonly jobIds: readonly string[]
  /** Known states by job id (a job appears once its first snapshot arrived). */
  readonly states: ReadonlyMap<string, JobState>
  readonly watches: readonly JobWatch[]
  stop(): void
}

export interface WatchMyJobsOptions {
  /** With an API key: whose jobs. People's credentials imply their own. */
  owner?: Owner
  /** Which jobs to show (applied to each job's state). */
  filter?: (job: JobState) => boolean
  /** The list, newest first, whenever a job in it changes or one joins. */
  onUpdate?: (jobs: readonly JobState[]) => void
  onConnection?: (change: StateChange) => void
  onEnd?: (error: JobwireError | null) => void
  signal?: AbortSignal
}

export interface MyJobsWatch {
  readonly jobs: readonly JobState[]
  /** True once every job the owner had when watching started is in `jobs`. */
  readonly loaded: boolean
  readonly connection: ConnectionState
  readonly error: JobwireError | null
  stop(): void
}

/** What `listJobs` asks for; every field is optional. */
export interface JobListQuery {
  status?: JobStatus
  type?: string
  /** With an API key: a tenant's jobs, or one user's. People's credentials imply their own. */
  owner?: { tenant: string; user?: string }
  /** Jobs per page, 1–200. Default 50 (the server's). */
  limit?: number
  /** `nextCursor` of the previous page. */
  cursor?: string
  signal?: AbortSignal
}

export type { JobSummary }
/** One page of `listJobs`: `nextCursor` goes back as `cursor` for the next (older) page; null after the last one. */
export type JobListPage = JobPage

/**
 * A Jobwire client: one WebSocket (or, where that cannot get through, SSE streams, then polling)
 * for every job it watches. Create one per app and share it.
 */
export class JobwireClient {
  /** The transport link's state: the WebSocket's, the SSE streams' together, or `polling`. */
  readonly connection = new ConnectionStateMachine()
  readonly #core: ClientCore
  readonly #order: TransportName[]
  #mode: TransportName
  readonly #feeds = new Map<string, JobFeed>()
  readonly #lingering = new Map<JobFeed, TimerHandle>()
  readonly #link: WsLink | null
  #myJobs: MyJobsFeed | null = null
  #myJobsHolders = 0
  #upgradeTimer: TimerHandle | null = null
  #closed = false
  #error: JobwireError | null = null

  constructor(options: ClientOptions) {
    const env = resolveEnvironment(options)
    const base = options.url.replace(/\/+$/, '')
    const settings: Settings = {
      pollIntervalMs: options.pollIntervalMs ?? 5_000,
      backoff: { minMs: options.backoff?.minMs ?? 500, maxMs: options.backoff?.maxMs ?? 20_000 },
      heartbeatTimeoutMs: options.heartbeatTimeoutMs ?? null,
      sseHeartbeatTimeoutMs: 35_000,
      firstMessageTimeoutMs: options.firstMessageTimeoutMs ?? 10_000,
      requestTimeoutMs: options.requestTimeoutMs ?? 30_000,
      upgradeIntervalMs: options.upgradeIntervalMs ?? 60_000,
      lingerMs: options.lingerMs ?? 1_000,
      maxRetries: options.maxRetries ?? Infinity,
      myJobsKeepFinished: options.myJobsKeepFinished ?? 1_000,
    }
    this.#core = {
      env,
      tokens: new TokenSource(options.getToken, env),
      settings,
      url: (path) => `${base}${path}`,
      transportFailed: (kind, reason) => this.#transportFailed(kind, reason),
      pollFeed: (feed) => this.#pollFeed(feed),
      fatal: (error) => this.#fatal(error),
      online: () => env.online.isOnline(),
      reachable: async () => {
        const box = timeBox(env.timers, settings.firstMessageTimeoutMs)
        try {
          await env.fetch(`${base}/healthz`, { signal: box.controller.signal, cache: 'no-store' })
          return true
        } catch {
          return false
        } finally {
          box.clear()
        }
      },
      onOnline: (listener) => env.online.subscribe(listener),
    }
    const wanted = options.transports ?? ['ws', 'sse', 'poll']
    this.#order = wanted.filter((kind) => kind !== 'ws' || env.WebSocket !== null)
    if (this.#order.length === 0) this.#order = ['poll']
    this.#mode = this.#order[0] as TransportName
    this.#link = this.#order.includes('ws') ? new WsLink(this.#core) : null
    this.#link?.connection.subscribe((change) => this.#recompute(change.reason))
    if (this.#mode === 'poll') this.connection.set('polling', 'polling only')
  }

  /** The transport in use: `ws`, `sse` or `poll`. */
  get transport(): TransportName {
    return this.#mode
  }

  get error(): JobwireError | null {
    return this.#error
  }

  /**
   * Failed attempts in a row of the transport in use (the WebSocket's, or the most of any job's
   * SSE stream or poll); 0 while connected.
   */
  get attempt(): number {
    return this.#retryState().attempt
  }

  /** When the next retry runs (epoch ms), or null when none is scheduled (connected, idle, or `offline`). */
  get nextRetryAt(): number | null {
    return this.#retryState().nextRetryAt
  }

  /** Tries again now, forgetting the attempts so far: after `offline`, for a "retry" button. */
  reconnect(): void {
    if (this.#closed) return
    if (this.#mode === 'ws') this.#link?.reconnect()
    else for (const feed of this.#feeds.values()) if (!feed.done) feed.carrier?.reconnect()
  }

  #retryState(): RetryState {
    if (this.#mode === 'ws') return this.#link?.retryState ?? { attempt: 0, nextRetryAt: null }
    let attempt = 0
    let nextRetryAt: number | null = null
    for (const feed of this.#feeds.values()) {
      const state = feed.carrier?.retryState
      if (state === undefined || feed.done) continue
      attempt = Math.max(attempt, state.attempt)
      if (state.nextRetryAt !== null && (nextRetryAt === null || state.nextRetryAt < nextRetryAt)) nextRetryAt = state.nextRetryAt
    }
    return { attempt, nextRetryAt }
  }

  /** Whether the device is online (as far as the platform says). */
  get online(): boolean {
    return this.#core.online()
  }

  watchJob(jobId: string, options: WatchJobOptions = {}): JobWatch {
    return new Watch(this, this.#acquire(jobId), options)
  }

  watchJobs(jobIds: readonly string[], options: WatchJobsOptions = {}): JobsWatch {
    const states = new Map<string, JobState>()
    const unique = [...new Set(jobIds)]
    const watches = unique.map((jobId) =>
      this.watchJob(jobId, {
        onUpdate: (state, update) => {
          states.set(jobId, state)
          // Field by field: a spread then a key its source lacks takes V8's slow path, per update.
          options.onUpdate?.(states, update.event === undefined ? { cause: update.cause, jobId } : { cause: update.cause, event: update.event, jobId })
        },
        onConnection: options.onConnection,
        onEnd: (error) => options.onEnd?.(jobId, error),
      }),
    )
    for (const watch of watches) if (watch.state !== null) states.set(watch.jobId, watch.state)
    const stop = (): void => {
      stopOnAbort()
      for (const watch of watches) watch.stop()
    }
    const stopOnAbort = onAbort(options.signal, stop)
    return { jobIds: unique, states, watches, stop }
  }

  watchMyJobs(options: WatchMyJobsOptions = {}): MyJobsWatch {
    const feed = this.#acquireMyJobs(options.owner)
    const filter = options.filter ?? (() => true)
    let stopped = false
    const listener: MyJobsListener = {
      update: (jobs) => options.onUpdate?.(jobs.filter(filter)),
      end: (error) => options.onEnd?.(error),
    }
    feed.listeners.add(listener)
    const stopConnection = options.onConnection === undefined ? () => {} : feed.connection.subscribe(options.onConnection)
    if (feed.members.size > 0 || feed.loaded) queueMicrotask(() => !stopped && options.onUpdate?.(feed.jobs.filter(filter)))
    const release = (): void => this.#releaseMyJobs(feed)
    const watch: MyJobsWatch = {
      get jobs() {
        return feed.jobs.filter(filter)
      },
      get loaded() {
        return feed.loaded
      },
      get connection() {
        return feed.connection.state
      },
      get error() {
        return feed.error
      },
      stop() {
        if (stopped) return
        stopped = true
        stopOnAbort()
        feed.listeners.delete(listener)
        stopConnection()
        release()
      },
    }
    const stopOnAbort = onAbort(options.signal, () => watch.stop())
    return watch
  }

  /**
   * Cancels a job: over the WebSocket when it is open, else `POST /v1/jobs/:id/cancel` (within
   * `requestTimeoutMs`, and until `options.signal` aborts).
   */
  async cancel(jobId: string, reason?: string, options: { signal?: AbortSignal } = {}): Promise<void> {
    if (this.#link?.open === true && this.#mode === 'ws') {
      try {
        await this.#link.cancel(jobId, reason)
        return
      } catch (error) {
        if (!(error instanceof JobwireError) || error.code !== 'unavailable') throw error
      }
    }
    const { token } = await this.#core.tokens.get({ scope: 'jobs', jobIds: [jobId] })
    const refused = await this.#oneShot(
      this.#core.url(`/v1/jobs/${encodeURIComponent(jobId)}/cancel`),
      {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...authHeaders(token) },
        body: JSON.stringify((reason === undefined ? {} : { reason }) satisfies CancelRequest),
      },
      options.signal,
      async (response) => (response.ok ? null : await errorOf(response)),
    )
    if (refused !== null) throw refused
  }

  /**
   * One request and its whole answer (read by `read`), given up after `requestTimeoutMs` or when
   * `signal` aborts: either rejects with a JobwireError (`unavailable` for no answer).
   */
  async #oneShot<T>(url: string, init: RequestInit, signal: AbortSignal | undefined, read: (response: Response) => Promise<T>): Promise<T> {
    const timeoutMs = this.#core.settings.requestTimeoutMs
    const box = timeBox(this.#core.env.timers, timeoutMs, signal)
    try {
      return await read(await this.#core.env.fetch(url, { ...init, signal: box.controller.signal }))
    } catch (error) {
      if (box.timedOut()) throw new JobwireError('unavailable', { reason: `no answer within ${timeoutMs} ms (requestTimeoutMs)` })
      throw asJobwireError(error)
    } finally {
      box.clear()
    }
  }

  /**
   * Follows a finished job again after it was resumed (`POST /v1/jobs/:id/resume`, or your
   * backend's route for it): the watches and the user feed that ended with it go on from a fresh
   * snapshot, then live — the same watch objects, the same hook views. Call it once the resume
   * succeeded; if the job did not move on after all, the snapshot simply ends it again. Returns
   * whether anything here was following the job (a later watch starts fresh anyway).
   */
  refollow(jobId: string): boolean {
    const feed = this.#feeds.get(jobId)
    if (feed === undefined || this.#closed || !feed.done || feed.error !== null) return false
    if (feed.holders === 0 && !feed.inMyJobs) {
      // Only lingering: forget it, so the next watch starts from the server's state.
      this.#unlinger(feed)
      this.#feeds.delete(jobId)
      this.#core.tokens.forget(jobId)
      return false
    }
    feed.reopen()
    this.#attach(feed)
    return true
  }

  /**
   * One page of the jobs the credential may see, newest first (`GET /v1/jobs`): summaries without
   * `text`, `input`, `result` or `checkpoint`. Pass `nextCursor` back as `cursor` for the next
   * page; it is null after the last. People's credentials list only their own jobs whatever the
   * filters say; with an API key, `owner` narrows to a tenant or one user. Rejects with a
   * JobwireError (an expired token is renewed through getToken and the request made once more).
   */
  async listJobs(query: JobListQuery = {}): Promise<JobListPage> {
    const params = new URLSearchParams()
    if (query.status !== undefined) params.set('status', query.status)
    if (query.type !== undefined) params.set('type', query.type)
    if (query.owner !== undefined) params.set('owner', query.owner.user === undefined ? query.owner.tenant : `${query.owner.tenant}:${query.owner.user}`)
    if (query.limit !== undefined) params.set('limit', String(query.limit))
    if (query.cursor !== undefined) params.set('cursor', query.cursor)
    const search = params.size > 0 ? `?${params}` : ''
    for (let attempt = 0; ; attempt++) {
      const credential = await this.#core.tokens.get(query.owner?.user === undefined ? { scope: 'user' } : { scope: 'user', owner: { tenant: query.owner.tenant, user: query.owner.user } })
      const answer = await this.#oneShot(
        this.#core.url(`/v1/jobs${search}`),
        { headers: { accept: 'application/json', ...authHeaders(credential.token) }, cache: 'no-store' },
        query.signal,
        async (response) => (response.ok ? { page: (await response.json()) as JobListPage } : { error: await errorOf(response) }),
      )
      if (answer.error === undefined) return answer.page
      const error = answer.error
      // The same policy as the streams: an expired token is renewed; a refused one only if it was not fresh.
      const renew = error.code === 'token_expired' || (!credential.fresh && (error.code === 'unauthorized' || error.code === 'invalid_token'))
      if (attempt > 0 || !renew) throw error
      this.#core.tokens.invalidate(credential.token)
    }
  }

  /**
   * A job's result in full (`GET /v1/jobs/:id/result`), or null while it has none. A result too
   * large for an event is stored apart by the server: the watched state then carries
   * `result: null` and `resultRef: {ref, size}`, and this fetches it once (a small result comes
   * back just the same). `fetchCheckpoint` does the same for checkpoints. Rejects with a JobwireError.
   */
  fetchResult(jobId: string, options: { signal?: AbortSignal } = {}): Promise<unknown> {
    return this.#fetchValue(jobId, 'result', options.signal)
  }

  fetchCheckpoint(jobId: string, options: { signal?: AbortSignal } = {}): Promise<unknown> {
    return this.#fetchValue(jobId, 'checkpoint', options.signal)
  }

  async #fetchValue(jobId: string, which: 'result' | 'checkpoint', signal: AbortSignal | undefined): Promise<unknown> {
    for (let attempt = 0; ; attempt++) {
      const credential = await this.#core.tokens.get({ scope: 'jobs', jobIds: [jobId] })
      const answer = await this.#oneShot(
        this.#core.url(`/v1/jobs/${encodeURIComponent(jobId)}/${which}`),
        { headers: { accept: 'application/json', ...authHeaders(credential.token) }, cache: 'no-store' },
        signal,
        async (response) => (response.ok ? { value: ((await response.json()) as Partial<JobResult & JobCheckpoint>)[which] ?? null } : { error: await errorOf(response) }),
      )
      if (answer.error === undefined) return answer.value
      const error = answer.error
      const renew = error.code === 'token_expired' || (!credential.fresh && (error.code === 'unauthorized' || error.code === 'invalid_token'))
      if (attempt > 0 || !renew) throw error
      this.#core.tokens.invalidate(credential.token)
    }
  }

  /** Stops every watch and closes the socket. */
  close(): void {
    if (this.#closed) return
    this.#closed = true
    this.#stopUpgrades()
    this.#link?.shutdown()
    this.#myJobs?.stop()
    const feeds = [...this.#feeds.values()]
    for (const timer of this.#lingering.values()) this.#core.env.timers.clearTimeout(timer)
    this.#lingering.clear()
    this.#feeds.clear()
    // Watches being iterated end with the client (a `for await` on one waited for good before).
    for (const feed of feeds) feed.close()
    this.connection.set('closed', 'client closed')
  }

  // ---------------------------------------------------------------- feeds and transports

  /** @internal The feed of `jobId`, created (and carried, if `attach`) when new. */
  feedFor(jobId: string, attach: boolean): JobFeed {
    let feed = this.#feeds.get(jobId)
    if (feed !== undefined) {
      this.#unlinger(feed)
      return feed
    }
    feed = new JobFeed(jobId)
    this.#feeds.set(jobId, feed)
    feed.connection.subscribe((change) => this.#recompute(change.reason))
    if (this.#closed) {
      feed.fail(this.#error ?? new JobwireError('unavailable', { reason: 'the client is closed' }))
      return feed
    }
    if (attach) this.#attach(feed)
    return feed
  }

  #acquire(jobId: string): JobFeed {
    const feed = this.feedFor(jobId, true)
    feed.holders++
    return feed
  }

  /** @internal A watch or the user feed let go of `feed`: it lingers briefly, then stops. */
  release(feed: JobFeed): void {
    if (feed.holders > 0 || feed.inMyJobs || this.#lingering.has(feed) || this.#feeds.get(feed.jobId) !== feed) return
    const timer = this.#core.env.timers.setTimeout(() => {
      this.#lingering.delete(feed)
      if (feed.holders > 0 || feed.inMyJobs) return
      feed.detach()
      if (this.#feeds.get(feed.jobId) !== feed) return
      this.#feeds.delete(feed.jobId)
      this.#core.tokens.forget(feed.jobId)
    }, this.#core.settings.lingerMs)
    this.#lingering.set(feed, timer)
  }

  #unlinger(feed: JobFeed): void {
    const timer = this.#lingering.get(feed)
    if (timer === undefined) return
    this.#core.env.timers.clearTimeout(timer)
    this.#lingering.delete(feed)
  }

  #attach(feed: JobFeed): void {
    if (feed.done || this.#closed) return
    switch (this.#mode) {
      case 'ws':
        feed.carrier = (this.#link as WsLink).carry(feed)
        return
      case 'sse': {
        const carrier = new SseCarrier(feed, this.#core)
        feed.carrier = carrier
        carrier.start()
        return
      }
      case 'poll': {
        const carrier = new PollCarrier(feed, this.#core)
        feed.carrier = carrier
        carrier.start()
        return
      }
      default:
        return assertNever(this.#mode)
    }
  }

  #pollFeed(feed: JobFeed): void {
    feed.detach()
    if (feed.done || this.#closed) return
    const carrier = new PollCarrier(feed, this.#core)
    feed.carrier = carrier
    carrier.start()
  }

  #acquireMyJobs(owner: Owner | undefined): MyJobsFeed {
    let feed = this.#myJobs
    if (feed !== null && !feed.done && !sameOwner(feed.owner, owner)) {
      if (this.#myJobsHolders > 0) throw new TypeError('@jobwire/client: one client watches the jobs of one owner at a time')
      // Nobody holds the other owner's feed any more (it only lingers): switch owners at once.
      feed.stop()
    }
    if (feed === null || feed.done) {
      const created = new MyJobsFeed(owner, {
        core: this.#core,
        link: this.#link,
        feedFor: (jobId, attach) => this.feedFor(jobId, attach),
        release: (member) => this.release(member),
      })
      feed = created
      this.#myJobs = created
      if (this.#closed) created.fail(this.#error ?? new JobwireError('unavailable', { reason: 'the client is closed' }))
      else created.useTransport(this.#mode)
    }
    this.#myJobsHolders++
    return feed
  }

  #releaseMyJobs(feed: MyJobsFeed): void {
    if (this.#myJobs !== feed) return
    if (--this.#myJobsHolders > 0) return
    // Linger like a job feed, so a remount does not list everything again.
    const timer = this.#core.env.timers.setTimeout(() => {
      if (this.#myJobs !== feed || this.#myJobsHolders > 0) return
      feed.stop()
      this.#myJobs = null
    }, this.#core.settings.lingerMs)
    void timer
  }

  #transportFailed(kind: TransportName, reason: string): boolean {
    if (this.#closed || kind !== this.#mode) return true
    const next = this.#order[this.#order.indexOf(kind) + 1]
    // The last transport allowed: it keeps trying (a watch stopped for good here before, "connecting").
    if (next === undefined) return false
    this.#switchTo(next, reason)
    this.#scheduleUpgrade()
    return true
  }

  #switchTo(mode: TransportName, reason: string): void {
    if (mode === this.#mode) return
    const previous = this.#mode
    this.#mode = mode
    for (const feed of this.#feeds.values()) {
      if (feed.done) continue
      const carried = feed.carrier !== null
      feed.detach()
      if (carried || feed.holders > 0 || feed.inMyJobs) this.#attach(feed)
    }
    if (previous === 'ws') this.#link?.idle()
    this.#myJobs?.useTransport(mode)
    this.#recompute(reason)
  }

  #scheduleUpgrade(): void {
    if (this.#closed || this.#upgradeTimer !== null || this.#mode === this.#order[0]) return
    const { env, settings } = this.#core
    const delay = settings.upgradeIntervalMs * (0.75 + env.random() / 2)
    this.#upgradeTimer = env.timers.setTimeout(() => {
      this.#upgradeTimer = null
      void this.#tryUpgrade()
    }, delay)
  }

  /** Tries the preferred transport again: a WebSocket that gets welcomed, or SSE streams that deliver. */
  async #tryUpgrade(): Promise<void> {
    if (this.#closed || this.#mode === this.#order[0]) return
    if (this.#link !== null && this.#mode !== 'ws' && this.#core.online()) {
      if (await this.#link.probe()) {
        // The mode may have changed while the probe ran (TS cannot see that).
        if (!this.#closed && (this.#mode as TransportName) !== 'ws') this.#switchTo('ws', 'WebSocket works again')
        return
      }
      this.#link.idle()
    }
    if (this.#mode === 'poll' && this.#order.includes('sse')) this.#switchTo('sse', 'trying SSE again')
    this.#scheduleUpgrade()
  }

  #stopUpgrades(): void {
    if (this.#upgradeTimer !== null) this.#core.env.timers.clearTimeout(this.#upgradeTimer)
    this.#upgradeTimer = null
  }

  #fatal(error: JobwireError): void {
    if (this.#closed) return
    this.#error = error
    this.#closed = true
    this.#stopUpgrades()
    this.#link?.shutdown()
    for (const feed of [...this.#feeds.values()]) feed.fail(error)
    this.#myJobs?.fail(error)
    this.connection.set('closed', error.code)
  }

  #recompute(reason: string): void {
    if (this.#closed) return
    let state: ConnectionState
    if (this.#mode === 'poll') state = 'polling'
    else if (this.#mode === 'ws') state = this.#link?.connection.state ?? 'connecting'
    else {
      const states = new Set<ConnectionState>()
      for (const feed of this.#feeds.values()) if (!feed.done && feed.carrier !== null) states.add(feed.connection.state)
      state = states.has('reconnecting')
        ? 'reconnecting'
        : states.has('connecting')
          ? 'connecting'
          : states.has('live')
            ? 'live'
            : states.has('polling')
              ? 'polling'
              : states.has('offline')
                ? 'offline'
                : this.connection.state
    }
    this.connection.set(state, reason)
  }
}

/** One watchJob: a view of a shared feed. */
class Watch implements JobWatch {
  #stopped = false
  readonly #listener: FeedListener
  /** Wakes each iteration waiting in `next()`, so that `stop()` (or the client closing) ends it. */
  readonly #wakers = new Set<() => void>()
  /** Takes the watch's listener off the caller's signal. */
  readonly #stopOnAbort: () => void

  constructor(
    private readonly client: JobwireClient,
    private readonly feed: JobFeed,
    private readonly options: WatchJobOptions,
  ) {
    this.#listener = {
      update: (state, update) => options.onUpdate?.(state, update),
      connection: (change) => options.onConnection?.(change),
      // The watch keeps its (now idle) feed until stopped, so a resumed job can be followed again (`refollow`).
      end: (error) => options.onEnd?.(error),
      closed: () => this.#halt(),
    }
    feed.listeners.add(this.#listener)
    // A feed another watch opened already has a state: hand it over, after the caller has its watch.
    if (feed.state !== null || feed.done) {
      queueMicrotask(() => {
        if (this.#stopped) return
        if (feed.state !== null) options.onUpdate?.(feed.state, { cause: 'snapshot' })
        if (feed.done) options.onEnd?.(feed.error)
      })
    }
    this.#stopOnAbort = onAbort(options.signal, () => this.stop())
  }

  get jobId(): string {
    return this.feed.jobId
  }

  get state(): JobState | null {
    return this.feed.state
  }

  get connection(): ConnectionState {
    return this.feed.connection.state
  }

  get error(): JobwireError | null {
    return this.feed.error
  }

  get done(): boolean {
    return this.feed.done
  }

  cancel(reason?: string): Promise<void> {
    return this.client.cancel(this.feed.jobId, reason)
  }

  stop(): void {
    if (this.#stopped) return
    this.feed.listeners.delete(this.#listener)
    this.feed.holders--
    this.client.release(this.feed)
    this.#halt()
  }

  /** Nothing more comes to this watch: iterations waiting for a state end. */
  #halt(): void {
    this.#stopped = true
    this.#stopOnAbort()
    for (const wake of [...this.#wakers]) wake()
  }

  /** Each new state (latest-wins if the loop body is slow), ending after the terminal one; throws a watching error. */
  [Symbol.asyncIterator](): AsyncIterator<JobState> {
    const feed = this.feed
    let pending: JobState | null = feed.state
    let ended = feed.done
    let failure: JobwireError | null = feed.error
    let wake: (() => void) | null = null
    const poke = (): void => wake?.()
    const listener: FeedListener = {
      update: (state) => {
        pending = state
        wake?.()
      },
      end: (error) => {
        ended = true
        failure = error
        wake?.()
      },
    }
    feed.listeners.add(listener)
    this.#wakers.add(poke)
    const finish = (): void => {
      feed.listeners.delete(listener)
      this.#wakers.delete(poke)
      this.stop()
    }
    return {
      next: async (): Promise<IteratorResult<JobState>> => {
        for (;;) {
          if (pending !== null) {
            const value = pending
            pending = null
            return { value, done: false }
          }
          if (ended || this.#stopped) {
            finish()
            if (failure !== null) throw failure
            return { value: undefined, done: true }
          }
          await new Promise<void>((resolve) => (wake = resolve))
          wake = null
        }
      },
      return: async (): Promise<IteratorResult<JobState>> => {
        finish()
        return { value: undefined, done: true }
      },
    }
  }
}

/**
 * Calls `stop` when `signal` aborts (at once if it has), and returns what takes the listener off
 * again. A watch that stops takes it off: an app that gives every watch one long-lived signal (its
 * own shutdown, a page's) left a listener on it per job watched, and with it the watch and its
 * job's last state, for as long as the signal lived.
 */
function onAbort(signal: AbortSignal | undefined, stop: () => void): () => void {
  if (signal === undefined) return () => {}
  if (signal.aborted) {
    queueMicrotask(stop)
    return () => {}
  }
  signal.addEventListener('abort', stop, { once: true })
  return () => signal.removeEventListener('abort', stop)
}

function sameOwner(a: Owner | undefined, b: Owner | undefined): boolean {
  return a?.tenant === b?.tenant && a?.user === b?.user
}

function assertNever(value: never): never {
  throw new Error(`unhandled transport ${String(value)}`)
}

/** Creates a client; share it across the app (it holds the one WebSocket). */
export function createJobwireClient(options: ClientOptions): JobwireClient {
  return new JobwireClient(options)
}

/** Watches one job with a client of its own, closed when the watch stops or the job ends. */
export function watchJob(jobId: string, options: ClientOptions & WatchJobOptions): JobWatch {
  const client = new JobwireClient(options)
  const watch = client.watchJob(jobId, {
    ...options,
    onEnd: (error) => {
      options.onEnd?.(error)
      client.close()
    },
  })
  const stop = watch.stop.bind(watch)
  return Object.assign(watch, {
    stop() {
      stop()
      client.close()
    },
  })
}
