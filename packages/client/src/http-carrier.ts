import type { JobwireError } from '@jobwire/protocol'
import { decide, Retry, type ClientCore } from './core.js'
import type { RetryState } from './connection.js'
import type { Carrier, JobFeed } from './job-feed.js'

/**
 * What the two one-job-per-request carriers (SSE and polling) share: retries, going offline, the
 * carrier lifecycle and the answer to a server error. Each supplies how it opens an attempt at the
 * feed's position, how it drops one, and what a limit on its transport means.
 */
export abstract class HttpCarrier implements Carrier {
  abstract readonly kind: Carrier['kind']
  protected stopped = false
  protected readonly retry: Retry
  readonly #stopOnline: () => void

  constructor(
    protected readonly feed: JobFeed,
    protected readonly core: ClientCore,
  ) {
    this.retry = new Retry(core, () => void this.open(), (attempts) => this.feed.connection.set('offline', `gave up after ${attempts} failed attempts`))
    this.#stopOnline = core.onOnline((online) => {
      if (online || this.stopped) return
      this.drop()
      this.feed.connection.set('reconnecting', 'offline')
      this.retry.schedule()
    })
  }

  abstract start(): void

  /** Opens a new attempt (a stream, a poll round) from the feed's position. */
  protected abstract open(): Promise<void>

  /** Ends the current attempt, if any, without scheduling another. */
  protected abstract drop(): void

  /** The server refused this transport for a limit ("poll" decision). */
  protected abstract limited(error: JobwireError): void

  resync(): void {
    if (this.stopped) return
    this.drop()
    void this.open()
  }

  get retryState(): RetryState {
    return this.retry.state
  }

  /** Tries again now, forgetting the attempts so far. */
  reconnect(): void {
    if (this.stopped) return
    this.retry.reset()
    this.resync()
  }

  stop(): void {
    this.stopped = true
    this.drop()
    this.retry.cancel()
    this.#stopOnline()
  }

  protected onError(error: JobwireError, freshToken: boolean, token: string | null): void {
    this.drop()
    if (this.stopped || this.feed.done) return
    const decision = decide(error, freshToken)
    switch (decision.kind) {
      case 'retry':
        if (error.code === 'token_expired' || error.code === 'unauthorized' || error.code === 'invalid_token') this.core.tokens.invalidate(token)
        this.feed.connection.set('reconnecting', decision.reason)
        this.retry.schedule(decision.delayMs)
        return
      case 'snapshot':
        this.feed.wantSnapshot()
        void this.open()
        return
      case 'poll':
        this.limited(error)
        return
      case 'fatal':
        // With per-job tokens, a refused one ends this job's watch only.
        if (this.core.tokens.perJob) this.feed.fail(error)
        else this.core.fatal(error)
        return
      case 'fail':
        this.feed.fail(error)
        return
      default:
        return assertNever(decision)
    }
  }
}

function assertNever(value: never): never {
  throw new Error(`unhandled decision ${JSON.stringify(value)}`)
}
