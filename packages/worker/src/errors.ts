/**
 * Throw from a handler to fail the job with your own `code` and `message` (both shown to the
 * people watching). Not retried unless `retryable` is set.
 *
 * @example throw new JobFailure('unsupported_codec', 'b.mp3 uses a codec we cannot decode')
 */
export class JobFailure extends Error {
  readonly code: string
  readonly retryable: boolean

  constructor(code: string, message: string, options: { retryable?: boolean; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'JobFailure'
    this.code = code
    this.retryable = options.retryable ?? false
  }
}

/**
 * Throw from a handler when trying again may succeed (an upstream timeout, a rate limit): the job
 * is reported `failed` with `retryable: true`, the server re-queues it while attempts remain, and
 * a worker claims it again with its last checkpoint. `code` defaults to `handler_error`.
 */
export class RetryableError extends JobFailure {
  constructor(message: string, options: { code?: string; cause?: unknown } = {}) {
    super(options.code ?? 'handler_error', message, { retryable: true, cause: options.cause })
    this.name = 'RetryableError'
  }
}

/**
 * Why a job's `ctx.signal` aborted:
 * - `cancelled`: someone cancelled the job; nothing the handler does is reported any more.
 * - `finished`: the job was finished by someone else.
 * - `lease_lost`: the lease lapsed (no heartbeat got through in time) or the job is gone; the
 *   server may already have given the job to another worker.
 * - `stopped`: `worker.stop()` ran out of time; reports made within its grace period are still
 *   delivered, then the lease is released and the job re-queued with its last checkpoint.
 * - `rejected`: the server refused this job's events (too large, text limit…); the job is
 *   reported failed with the server's error code.
 * - `timed_out`: the job ran past its timeout; the server failed it with `timed_out` (or re-queued
 *   it, when its type retries timeouts). Nothing the handler does is reported any more.
 */
export type AbortReason = 'cancelled' | 'finished' | 'lease_lost' | 'stopped' | 'rejected' | 'timed_out'

/** `ctx.signal.reason` when a job's signal aborts, so `signal.throwIfAborted()` throws this. */
export class JobAbortedError extends Error {
  readonly reason: AbortReason

  constructor(reason: AbortReason, message: string = abortMessages[reason]) {
    super(message)
    this.name = 'AbortError'
    this.reason = reason
  }
}

const abortMessages: Record<AbortReason, string> = {
  cancelled: 'The job was cancelled',
  finished: 'The job was finished elsewhere',
  lease_lost: 'The worker lost its lease on the job',
  stopped: 'The worker is stopping',
  rejected: "The server refused the job's events",
  timed_out: 'The job ran past its timeout',
}

/** Failure codes and messages must fit the server's limits; a longer message is cut, never refused. */
const maxCodeLength = 100
const maxMessageLength = 2_000

/** What a thrown value becomes on the wire: `{code: err.code ?? 'handler_error', message, retryable}`. */
export function failureOf(thrown: unknown): { code: string; message: string; retryable: boolean } {
  const code = (thrown as { code?: unknown } | null)?.code
  const message = thrown instanceof Error ? thrown.message : String(thrown)
  return {
    code: typeof code === 'string' && code.length > 0 && code.length <= maxCodeLength ? code : 'handler_error',
    message: message.length > maxMessageLength ? `${message.slice(0, maxMessageLength - 1)}…` : message,
    retryable: thrown instanceof JobFailure && thrown.retryable,
  }
}
