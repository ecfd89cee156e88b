/**
 * Time as the worker sees it. Everything that waits (throttle, heartbeat, backoff, request
 * timeouts) goes through one `Timers`, so tests can drive it.
 */
export interface Timers {
  setTimeout(callback: () => void, ms: number): unknown
  clearTimeout(handle: unknown): void
  /** Milliseconds on a monotonic clock. */
  now(): number
}

export const systemTimers: Timers = {
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
  now: () => performance.now(),
}

/** Waits `ms`; resolves `false` at once (never rejects) when `signal` aborts first. */
export function sleep(timers: Timers, ms: number, signal?: AbortSignal): Promise<boolean> {
  if (signal?.aborted) return Promise.resolve(false)
  if (ms <= 0) return Promise.resolve(true)
  return new Promise((resolve) => {
    const onAbort = (): void => {
      timers.clearTimeout(handle)
      resolve(false)
    }
    const handle = timers.setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve(true)
    }, ms)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

/** Retry delays: exponential from `baseMs`, capped at `maxMs`, with full jitter (AWS style). */
export interface Backoff {
  baseMs: number
  maxMs: number
}

export const defaultBackoff: Backoff = { baseMs: 100, maxMs: 10_000 }

/** The longest wait a server's `Retry-After` can impose on one retry (a misconfigured one would stall the worker). */
const maxRetryAfterMs = 60_000

/**
 * The delay before retry number `attempt` (1, 2, 3…): uniform in [0, min(max, base·2^(attempt-1))],
 * and at least what the server asked for when `failure` says (`Retry-After`, which Jobwire's
 * errors carry as `details.retryAfter` in seconds: a node `overloaded` or `server_busy`, a
 * `rate_limited` person), up to a minute.
 */
export function backoffDelay(backoff: Backoff, attempt: number, random: () => number, failure?: unknown): number {
  const ceiling = Math.min(backoff.maxMs, backoff.baseMs * 2 ** Math.min(attempt - 1, 30))
  return Math.max(Math.floor(random() * ceiling), retryAfterMs(failure))
}

/** The wait a failure's `details.retryAfter` (seconds) asks for, in ms; 0 when it asks none. */
function retryAfterMs(failure: unknown): number {
  const after = (failure as { details?: { retryAfter?: unknown } } | null | undefined)?.details?.retryAfter
  return typeof after === 'number' && after > 0 ? Math.min(after * 1000, maxRetryAfterMs) : 0
}

export interface Deferred<T> {
  promise: Promise<T>
  resolve(value: T): void
  reject(reason: unknown): void
}

export function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void
  let reject!: (reason: unknown) => void
  const promise = new Promise<T>((res, rej) => {
    resolve = res
    reject = rej
  })
  return { promise, resolve, reject }
}

/**
 * An AbortController made when its signal is first asked for: a handler that never looks at
 * `ctx.signal`, or a job's writes that are never retried, cost none (creating one is among the
 * dearest things a worker did per job). Internal parts listen with `onAbort`.
 */
export class LazyAbort {
  #controller: AbortController | null = null
  #aborted = false
  #reason: unknown
  #listeners: (() => void)[] = []

  get aborted(): boolean {
    return this.#aborted
  }

  get reason(): unknown {
    return this.#reason
  }

  /**
   * Calls `listener` once at the abort (never when already aborted: check `aborted` first), as a
   * plain callback rather than an event listener; returns what takes it off again.
   */
  onAbort(listener: () => void): () => void {
    if (this.#aborted) return () => {}
    this.#listeners.push(listener)
    return () => {
      const at = this.#listeners.indexOf(listener)
      if (at >= 0) this.#listeners.splice(at, 1)
    }
  }

  get signal(): AbortSignal {
    if (this.#controller === null) {
      this.#controller = new AbortController()
      if (this.#aborted) this.#controller.abort(this.#reason)
    }
    return this.#controller.signal
  }

  /** Aborts with `reason`; the first reason stays, as with an AbortController. */
  abort(reason: unknown): void {
    if (this.#aborted) return
    this.#aborted = true
    this.#reason = reason
    this.#controller?.abort(reason)
    const listeners = this.#listeners
    this.#listeners = []
    for (const listener of listeners) listener()
  }
}
