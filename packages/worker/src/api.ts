import type { ItemStatus, JobState, JobStatus } from '@jobwire/protocol'
import type { Timers } from './timing.js'

/** The lease a claim grants: the token every write must carry, and when it lapses without a heartbeat. */
export interface Lease {
  token: string
  expiresAt: string
  leaseMs: number
}

export interface Claim {
  job: JobState
  lease: Lease
}

/** One event of `POST /v1/jobs/:id/events`, as the wire carries it. */
export type WireEvent =
  | { type: 'progress'; stage?: string; percent?: number; message?: string }
  | { type: 'item'; id: string; label?: string; status?: ItemStatus; percent?: number; message?: string }
  | { type: 'chunk'; text: string }
  | { type: 'checkpoint'; data: unknown }
  | { type: 'completed'; result?: unknown }
  | { type: 'failed'; code: string; message: string; retryable?: boolean }

export interface AppendAnswer {
  events: { seq: number; type: string }[]
  seq: number
  status: JobStatus
  duplicate?: true
}

export interface HeartbeatAnswer {
  status: JobStatus
  cancelled: boolean
  expiresAt: string | null
}

/** Why the server says a job is no longer this worker's to run. */
export type SignalReason = 'cancelled' | 'finished' | 'lease_lost'

export interface JobSignal {
  jobId: string
  reason: SignalReason
}

/** What the worker was doing when a request failed. */
export type WorkerOperation = 'claim' | 'heartbeat' | 'signals' | 'events' | 'release'

/**
 * A request to the server that failed. `code` is the server's error code (`lease_lost`,
 * `job_finished`, `unauthorized`, …), or `network_error` / `timeout` when no answer came.
 * `transient` says whether the worker retries it.
 */
export class WorkerRequestError extends Error {
  readonly operation: WorkerOperation
  readonly status: number | null
  readonly code: string
  readonly details: Record<string, unknown> | undefined

  constructor(
    operation: WorkerOperation,
    status: number | null,
    code: string,
    message: string,
    details?: Record<string, unknown>,
    options?: { cause?: unknown },
  ) {
    super(message, options)
    this.name = 'WorkerRequestError'
    this.operation = operation
    this.status = status
    this.code = code
    this.details = details
  }

  /** No answer, a 5xx, a 408 or a 429: the same request may succeed later. */
  get transient(): boolean {
    return this.status === null || this.status >= 500 || this.status === 408 || this.status === 429
  }
}

export interface ApiOptions {
  url: string
  apiKey: string
  fetch: typeof globalThis.fetch
  timers: Timers
}

/** Seconds a long-poll may take beyond its `wait` before the worker gives up on the connection. */
const longPollSlackMs = 15_000
const requestTimeoutMs = 30_000

/** The worker's half of the HTTP API: one method per endpoint, one attempt per call (callers retry). */
export class WorkerApi {
  private readonly base: string

  constructor(private readonly options: ApiOptions) {
    this.base = options.url.replace(/\/+$/, '')
  }

  /** A job and its lease, or `null` when none came within `wait` seconds. */
  async claim(
    body: { types: string[]; worker: string; leaseMs: number; wait: number },
    signal: AbortSignal,
  ): Promise<Claim | null> {
    const answer = await this.post<Claim>('claim', '/v1/workers/claim', body, signal, body.wait * 1000 + longPollSlackMs)
    return answer.status === 204 ? null : answer.body
  }

  async appendEvents(
    jobId: string,
    body: { lease: string; batch: number; events: WireEvent[] },
    signal: AbortSignal,
  ): Promise<AppendAnswer> {
    return (await this.post<AppendAnswer>('events', `/v1/jobs/${encodeURIComponent(jobId)}/events`, body, signal)).body
  }

  async heartbeat(jobId: string, body: { lease: string; leaseMs: number }, signal: AbortSignal): Promise<HeartbeatAnswer> {
    return (await this.post<HeartbeatAnswer>('heartbeat', `/v1/jobs/${encodeURIComponent(jobId)}/heartbeat`, body, signal)).body
  }

  async release(jobId: string, body: { lease: string; reason: string }, signal: AbortSignal): Promise<void> {
    await this.post('release', `/v1/jobs/${encodeURIComponent(jobId)}/release`, body, signal)
  }

  /** Long-poll: the jobs among `jobs` that are no longer running under their lease (empty after `wait` seconds). */
  async signals(jobs: { id: string; lease: string }[], wait: number, signal: AbortSignal): Promise<JobSignal[]> {
    const answer = await this.post<{ signals: JobSignal[] }>(
      'signals', '/v1/workers/signals', { jobs, wait }, signal, wait * 1000 + longPollSlackMs,
    )
    return answer.body.signals
  }

  /**
   * One POST. Throws `WorkerRequestError` for an error answer, no answer or a timeout. When
   * `signal` aborts, rethrows the abort as it came (callers check their own signal).
   */
  private async post<T>(
    operation: WorkerOperation,
    path: string,
    body: unknown,
    signal: AbortSignal,
    timeoutMs = requestTimeoutMs,
  ): Promise<{ status: number; body: T }> {
    const { timers } = this.options
    const timeout = new AbortController()
    const onAbort = (): void => timeout.abort(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    const timer = timers.setTimeout(() => timeout.abort(new Error('timeout')), timeoutMs)
    try {
      let response: Response
      let text: string
      try {
        response = await this.options.fetch(`${this.base}${path}`, {
          method: 'POST',
          headers: { authorization: `Bearer ${this.options.apiKey}`, 'content-type': 'application/json' },
          body: JSON.stringify(body),
          signal: timeout.signal,
        })
        text = await response.text()
      } catch (error) {
        if (signal.aborted) throw error
        if (timeout.signal.aborted) {
          throw new WorkerRequestError(operation, null, 'timeout', `${operation}: no answer within ${timeoutMs} ms`, undefined, { cause: error })
        }
        throw new WorkerRequestError(operation, null, 'network_error', `${operation}: ${describe(error)}`, undefined, { cause: error })
      }
      if (!response.ok) throw errorOf(operation, response.status, text)
      try {
        return { status: response.status, body: (text === '' ? null : JSON.parse(text)) as T }
      } catch (error) {
        // A truncated answer: whether it was applied is unknown, so it is retried like no answer.
        throw new WorkerRequestError(operation, null, 'invalid_response', `${operation}: the answer is not JSON`, undefined, { cause: error })
      }
    } finally {
      timers.clearTimeout(timer)
      signal.removeEventListener('abort', onAbort)
    }
  }
}

function errorOf(operation: WorkerOperation, status: number, text: string): WorkerRequestError {
  let error: { code?: unknown; message?: unknown; details?: unknown } | undefined
  try {
    error = (JSON.parse(text) as { error?: typeof error }).error
  } catch {
    // A proxy's HTML error page, say: keep the status, which is what decides a retry.
  }
  const code = typeof error?.code === 'string' ? error.code : `http_${status}`
  const message = typeof error?.message === 'string' ? error.message : `HTTP ${status}`
  const details = typeof error?.details === 'object' && error.details !== null ? (error.details as Record<string, unknown>) : undefined
  return new WorkerRequestError(operation, status, code, `${operation}: ${message}`, details)
}

function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error)
  const cause = error.cause instanceof Error ? ` (${error.cause.message})` : ''
  return `${error.message}${cause}`
}
