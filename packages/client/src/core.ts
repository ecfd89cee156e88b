import { JobwireError, type ErrorResponse } from '@jobwire/protocol'
import { backoffDelay, type BackoffOptions, type RetryState } from './connection.js'
import type { Environment, TimerHandle, Timers } from './environment.js'
import type { JobFeed, TransportName } from './job-feed.js'
import type { TokenSource } from './tokens.js'

export interface Settings {
  pollIntervalMs: number
  backoff: Required<BackoffOptions>
  /** Silence after which a link counts as dead; null: WebSocket takes it from the server's `welcome`. */
  heartbeatTimeoutMs: number | null
  /** SSE with no heartbeat override: 2 × the server's default 15 s heartbeat + 5 s. */
  sseHeartbeatTimeoutMs: number
  firstMessageTimeoutMs: number
  /** Longest a one-shot request (cancel, a list page, a result or checkpoint) waits for its whole answer. */
  requestTimeoutMs: number
  upgradeIntervalMs: number
  lingerMs: number
  /** Failed attempts in a row after which a link stops retrying (`offline`); Infinity: never. */
  maxRetries: number
  /** Finished jobs the user feed keeps, the newest. */
  myJobsKeepFinished: number
}

/** What links and carriers share with the client that owns them. */
export interface ClientCore {
  readonly env: Environment
  readonly tokens: TokenSource
  readonly settings: Settings
  /** `path` on the server, e.g. `/v1/jobs/x/stream`. */
  url(path: string): string
  /**
   * A transport cannot work from here (refused, held back by a proxy): the client moves on to the
   * next. False when there is none to move on to (the last one allowed): the caller keeps trying
   * its own with backoff.
   */
  transportFailed(kind: TransportName, reason: string): boolean
  /** Moves one feed to polling (its own SSE stream was refused for lack of stream slots). */
  pollFeed(feed: JobFeed): void
  /** The credential was refused for good: every watch ends with `error`. */
  fatal(error: JobwireError): void
  online(): boolean
  /** Whether the server answers plain HTTP (any status) within the first-message timeout. */
  reachable(): Promise<boolean>
  /** Calls `listener` on every online/offline change until the returned function is called. */
  onOnline(listener: (online: boolean) => void): () => void
}

/** How a link answers an error the server (or getToken) gave it. */
export type ErrorDecision =
  | { kind: 'retry'; delayMs: number | null; reason: string }
  | { kind: 'fail' }
  | { kind: 'fatal' }
  | { kind: 'snapshot' }
  | { kind: 'poll' }

/**
 * The retry policy, in one place. `freshToken`: the credential came from getToken for this very
 * attempt and was refused before it carried anything, so a refusal of it will not change by
 * asking again at once.
 */
export function decide(error: JobwireError, freshToken: boolean): ErrorDecision {
  switch (error.code) {
    case 'token_expired':
      // Expired in use: renewed at once. Expired as getToken handed it over (a token it keeps in a
      // cache, a clock behind the server's): asking again at once spun, a request and a getToken
      // call per round trip for good, so that one backs off like any failure.
      return freshToken
        ? { kind: 'retry', delayMs: null, reason: 'token expired: getToken returned a token the server says has expired' }
        : { kind: 'retry', delayMs: 0, reason: 'token expired' }
    case 'unauthorized':
    case 'invalid_token':
      return freshToken ? { kind: 'fatal' } : { kind: 'retry', delayMs: 0, reason: `${error.code}: asking getToken again` }
    case 'position_ahead':
    case 'invalid_position':
      return { kind: 'snapshot' }
    case 'too_many_streams':
      return { kind: 'poll' }
    case 'slow_consumer':
      return { kind: 'retry', delayMs: null, reason: 'the reader fell behind; resuming' }
    default:
      return error.retryable ? { kind: 'retry', delayMs: null, reason: error.code } : { kind: 'fail' }
  }
}

/** The error an HTTP answer carries, or one made from its status when it carries none (a proxy's page). */
export async function errorOf(response: Response): Promise<JobwireError> {
  try {
    const body = (await response.json()) as Partial<ErrorResponse>
    if (body.error !== undefined && typeof body.error.code === 'string') return JobwireError.fromBody(body.error)
  } catch {
    // not JSON: fall through
  }
  if (response.status === 401) return new JobwireError('unauthorized')
  if (response.status === 404) return new JobwireError('route_not_found', { method: 'GET', url: response.url })
  return new JobwireError('unavailable', { reason: `HTTP ${response.status}` })
}

/**
 * An abort controller for one request that also aborts after `timeoutMs` (and when `signal`, the
 * caller's, does): a server that accepted the connection and never answers holds a `fetch` for
 * minutes in Node and without limit in a browser. `timedOut()` says whether the time ran out;
 * `clear()` once the answer is read.
 */
export function timeBox(timers: Timers, timeoutMs: number, signal?: AbortSignal): { controller: AbortController; timedOut(): boolean; clear(): void } {
  const controller = new AbortController()
  let timedOut = false
  const timer = timers.setTimeout(() => {
    timedOut = true
    controller.abort()
  }, timeoutMs)
  const onAbort = (): void => controller.abort(signal?.reason)
  if (signal?.aborted === true) onAbort()
  else signal?.addEventListener('abort', onAbort, { once: true })
  return {
    controller,
    timedOut: () => timedOut,
    clear: () => {
      timers.clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
    },
  }
}

export function asJobwireError(error: unknown): JobwireError {
  if (error instanceof JobwireError) return error
  return new JobwireError('unavailable', { reason: error instanceof Error ? error.message : String(error) })
}

export function authHeaders(token: string | null): Record<string, string> {
  return token === null ? {} : { authorization: `Bearer ${token}` }
}

/**
 * Retries with full-jitter backoff, and waits for the device to come online instead of retrying
 * into a dead network. `succeeded()` resets the attempt count. After `maxRetries` backoff retries
 * in a row it stops and calls `gaveUp` (the owner shows `offline`); coming back online, or `run`
 * called by the owner, starts again.
 */
export class Retry {
  #attempt = 0
  #timer: TimerHandle | null = null
  #nextRetryAt: number | null = null
  #stopOnline: (() => void) | null = null

  constructor(
    private readonly core: ClientCore,
    private readonly run: () => void,
    private readonly gaveUp: (attempts: number) => void = () => {},
  ) {}

  get attempt(): number {
    return this.#attempt
  }

  get state(): RetryState {
    return { attempt: this.#attempt, nextRetryAt: this.#nextRetryAt }
  }

  /** Schedules `run` after `delayMs`, or the next backoff delay when null. Returns the delay (Infinity: not scheduled). */
  schedule(delayMs: number | null = null): number {
    this.cancel()
    if (!this.core.online()) {
      this.#waitForOnline()
      return Infinity
    }
    if (delayMs === null && this.#attempt >= this.core.settings.maxRetries) {
      // Given up: a device coming back online still tries again, as after being offline.
      this.#waitForOnline()
      this.gaveUp(this.#attempt)
      return Infinity
    }
    const delay = delayMs ?? backoffDelay(this.#attempt++, this.core.settings.backoff, this.core.env.random)
    this.#nextRetryAt = this.core.env.now() + delay
    this.#timer = this.core.env.timers.setTimeout(() => {
      this.#timer = null
      this.#nextRetryAt = null
      this.run()
    }, delay)
    return delay
  }

  succeeded(): void {
    this.#attempt = 0
  }

  /** Forgets the attempts so far (the app asked to reconnect now). */
  reset(): void {
    this.cancel()
    this.#attempt = 0
  }

  cancel(): void {
    if (this.#timer !== null) this.core.env.timers.clearTimeout(this.#timer)
    this.#timer = null
    this.#nextRetryAt = null
    this.#stopOnline?.()
    this.#stopOnline = null
  }

  #waitForOnline(): void {
    this.#stopOnline = this.core.onOnline((online) => {
      if (!online) return
      this.cancel()
      this.#attempt = 0
      this.run()
    })
  }
}
