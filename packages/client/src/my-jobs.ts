import { activeStatuses, isTerminal, type JobPage, type JobState, type JobStatus, type JobwireError, type Owner } from '@jobwire/protocol'
import { ConnectionStateMachine, type ConnectionState } from './connection.js'
import { asJobwireError, authHeaders, decide, errorOf, Retry, type ClientCore } from './core.js'
import type { TimerHandle } from './environment.js'
import type { FeedListener, JobFeed, TransportName } from './job-feed.js'
import type { UserFeedPeer, WsLink } from './ws-link.js'

/** What the user feed needs from its client. */
export interface MyJobsHost {
  readonly core: ClientCore
  readonly link: WsLink | null
  /** The feed of a job, created if needed; `attach`: give a new one a carrier of the current transport. */
  feedFor(jobId: string, attach: boolean): JobFeed
  release(feed: JobFeed): void
}

export interface MyJobsListener {
  update?(jobs: readonly JobState[]): void
  end?(error: JobwireError | null): void
}

/**
 * "All my jobs": every unfinished job of the owner when watching starts, and every job created
 * after, each a JobFeed of its own. Over WebSocket the server's user feed brings them (a job
 * appears the moment it is created); otherwise the owner's job list is polled to find new ones,
 * with the same result: changing transports never changes which jobs a component sees.
 */
export class MyJobsFeed implements UserFeedPeer {
  readonly connection = new ConnectionStateMachine()
  readonly members = new Map<string, JobFeed>()
  readonly listeners = new Set<MyJobsListener>()
  loaded = false
  error: JobwireError | null = null
  done = false
  #since: string | undefined
  #mode: TransportName | null = null
  #poller: ListPoller | null = null
  readonly #memberListener: FeedListener

  constructor(
    readonly owner: Owner | undefined,
    private readonly host: MyJobsHost,
  ) {
    this.#memberListener = {
      update: () => this.#notify(),
      end: () => {
        this.#keepNewestFinished()
        this.#notify()
      },
    }
  }

  /** The members' states, newest first. */
  get jobs(): JobState[] {
    const out: JobState[] = []
    for (const feed of this.members.values()) if (feed.state !== null) out.push(feed.state)
    return out.sort(newestFirst)
  }

  useTransport(mode: TransportName): void {
    if (this.done || mode === this.#mode) return
    const previous = this.#mode
    this.#mode = mode
    if (previous === 'ws') this.host.link?.detachUser(this)
    this.#poller?.stop()
    this.#poller = null
    if (mode === 'ws' && this.host.link !== null) {
      this.host.link.attachUser(this)
    } else {
      this.#poller = new ListPoller(this, this.host.core)
      this.#poller.start()
    }
  }

  resumeFrom(): { positions: Record<string, number>; since: string | undefined } {
    const positions: Record<string, number> = {}
    for (const feed of this.members.values()) {
      const position = feed.position
      if (!feed.done && position !== undefined) positions[feed.jobId] = position
    }
    return { positions, since: this.#since }
  }

  adopt(jobId: string, attach = false): JobFeed | null {
    if (this.done) return null
    const existing = this.members.get(jobId)
    if (existing !== undefined) return existing
    const feed = this.host.feedFor(jobId, attach)
    feed.inMyJobs = true
    feed.listeners.add(this.#memberListener)
    this.members.set(jobId, feed)
    this.#notify()
    return feed
  }

  synced(at: string): void {
    this.#since = at
    if (!this.loaded) {
      this.loaded = true
      this.#notify()
    }
  }

  /** A job list answer (polling): the feed has seen every job it holds now. */
  listed(): void {
    if (!this.loaded) {
      this.loaded = true
      this.#notify()
    }
  }

  fail(error: JobwireError): void {
    if (this.done) return
    this.error = error
    this.stop()
    this.connection.set('closed', error.code)
    for (const listener of [...this.listeners]) listener.end?.(error)
  }

  setConnection(state: ConnectionState, reason: string): void {
    this.connection.set(state, reason)
  }

  stop(): void {
    if (this.done) return
    this.done = true
    if (this.#mode === 'ws') this.host.link?.detachUser(this)
    this.#poller?.stop()
    this.#poller = null
    for (const feed of this.members.values()) this.#letGo(feed)
  }

  /** Past `myJobsKeepFinished` finished members, the oldest leave the list, and their feeds are let go. */
  #keepNewestFinished(): void {
    const finished: JobFeed[] = []
    for (const feed of this.members.values()) if (feed.state !== null && isTerminal(feed.state.status)) finished.push(feed)
    const keep = this.host.core.settings.myJobsKeepFinished
    if (finished.length <= keep) return
    finished.sort((a, b) => newestFirst(a.state as JobState, b.state as JobState))
    for (const feed of finished.slice(keep)) {
      this.members.delete(feed.jobId)
      this.#letGo(feed)
    }
  }

  /** The feed no longer serves this list: its client may release it. */
  #letGo(feed: JobFeed): void {
    feed.listeners.delete(this.#memberListener)
    feed.inMyJobs = false
    this.host.release(feed)
  }

  #notify(): void {
    const jobs = this.jobs
    for (const listener of [...this.listeners]) listener.update?.(jobs)
  }
}

function newestFirst(a: JobState, b: JobState): number {
  return a.createdAt < b.createdAt ? 1 : a.createdAt > b.createdAt ? -1 : 0
}

/**
 * The user feed without WebSocket: lists the owner's queued and running jobs once, then the newest
 * jobs every poll interval; a job not seen before was created since and joins.
 */
class ListPoller {
  /** Jobs not to add again: the feed's members and what the last listing showed (a newer job is new). */
  #seen = new Set<string>()
  /** What this round's listing showed. */
  #listed: string[] = []
  #first = true
  #stopped = false
  #timer: TimerHandle | null = null
  readonly #retry: Retry

  constructor(
    private readonly feed: MyJobsFeed,
    private readonly core: ClientCore,
  ) {
    this.#retry = new Retry(core, () => void this.#round(), (attempts) => this.feed.connection.set('offline', `gave up after ${attempts} failed attempts`))
    for (const jobId of feed.members.keys()) this.#seen.add(jobId)
  }

  start(): void {
    this.feed.connection.set('polling', 'listing jobs')
    void this.#round()
  }

  stop(): void {
    this.#stopped = true
    this.#retry.cancel()
    if (this.#timer !== null) this.core.env.timers.clearTimeout(this.#timer)
  }

  async #round(): Promise<void> {
    if (this.#stopped) return
    let token: { token: string | null; fresh: boolean } = { token: null, fresh: false }
    this.#listed = []
    try {
      token = await this.core.tokens.get(this.feed.owner === undefined ? { scope: 'user' } : { scope: 'user', owner: this.feed.owner })
      if (this.#first) {
        // Unfinished jobs join; the newest finished ones are only marked seen, so they never count as new.
        for (const status of activeStatuses) for (const job of await this.#list(token.token, status, 200)) this.#join(job, true)
        for (const job of await this.#list(token.token, undefined, 50)) this.#join(job, false)
        this.#first = false
      } else {
        for (const job of await this.#list(token.token, undefined, 50)) this.#join(job, true)
      }
    } catch (error) {
      if (this.#stopped) return
      const known = asJobwireError(error)
      const decision = decide(known, token.fresh || known.code === 'unauthorized')
      if (decision.kind === 'fatal' || decision.kind === 'fail') {
        this.feed.fail(known)
        if (decision.kind === 'fatal') this.core.fatal(known)
        return
      }
      if (known.code === 'token_expired') this.core.tokens.invalidate(token.token)
      this.feed.connection.set('reconnecting', known.code)
      this.#retry.schedule()
      return
    }
    if (this.#stopped) return
    // Only the newest jobs are listed: one older than all of them can never be new, so the set
    // need not grow with every job the owner runs.
    this.#seen = new Set([...this.feed.members.keys(), ...this.#listed])
    this.#retry.succeeded()
    this.feed.connection.set('polling', 'listed jobs')
    this.feed.listed()
    this.#timer = this.core.env.timers.setTimeout(() => void this.#round(), this.core.settings.pollIntervalMs)
  }

  #join(job: { id: string; status: JobStatus }, add: boolean): void {
    this.#listed.push(job.id)
    if (this.#seen.has(job.id)) return
    this.#seen.add(job.id)
    if (add && (!this.#first || !isTerminal(job.status))) this.feed.adopt(job.id, true)
  }

  async #list(token: string | null, status: JobStatus | undefined, limit: number): Promise<{ id: string; status: JobStatus }[]> {
    const query = new URLSearchParams({ limit: String(limit) })
    if (status !== undefined) query.set('status', status)
    if (this.feed.owner !== undefined) query.set('owner', `${this.feed.owner.tenant}:${this.feed.owner.user}`)
    const response = await this.core.env.fetch(this.core.url(`/v1/jobs?${query}`), {
      headers: { accept: 'application/json', ...authHeaders(token) },
      cache: 'no-store',
    })
    if (!response.ok) throw await errorOf(response)
    return ((await response.json()) as JobPage).jobs
  }
}
