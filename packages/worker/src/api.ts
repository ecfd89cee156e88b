import {
  errorRegistry,
  isErrorCode,
  type AppendResponse,
  type BulkWriteRequest,
  type BulkWriteResponse,
  type BulkWriteResult,
  type Claim,
  type ClaimList,
  type ClaimRequest,
  type JobWrite,
  type HeartbeatRequest,
  type HeartbeatResponse,
  type JobCheckpoint,
  type JobSignal,
  type ProducerEvent,
  type ReleaseRequest,
  type SignalsRequest,
  type SignalsResponse,
  type WriteMeta,
} from '@jobwire/protocol'
import type { LazyAbort, Timers } from './timing.js'
import { TransportTimeout, type Transport } from './transport.js'

/** What the worker was doing when a request failed. */
export type WorkerOperation = 'claim' | 'heartbeat' | 'signals' | 'events' | 'release' | 'checkpoint'

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

  /**
   * No answer, a 5xx, a 408 or a 429: the same request may succeed later. Not a 501: the server
   * does not implement the request at all (one that is not a Jobwire server, say).
   */
  get transient(): boolean {
    return this.status === null || (this.status >= 500 && this.status !== 501) || this.status === 408 || this.status === 429
  }
}

export interface ApiOptions {
  transport: Transport
  /** The server's address, named in errors that do not come from a Jobwire server. */
  url: string
  timers: Timers
  /**
   * Writes of several jobs issued together go out as one `POST /v1/events`, within these limits
   * (the server's `--max-batch-events`, and a body under its `--max-body-bytes`); null sends one
   * request per job.
   */
  bulk: { maxEvents: number; maxBytes: number } | null
  /**
   * Called after each request the server answered, but for an answer worth retrying (a 5xx, 408
   * or 429): the server can be reached again.
   */
  onAnswer?: () => void
}

/** What the worker sends for one job's write: always under its lease, always numbered. */
type WriteBody = Required<WriteMeta> & { events: ProducerEvent[] }

/**
 * One job's write waiting for the next bulk request, answered once: by its result, or at once when
 * its job's writes are aborted. A class, not a promise executor's closures: those closures shared
 * one context with the executor's arguments, and in a busy worker that kept each job's objects
 * alive through young-generation collections until a full one (docs/benchmarks.md).
 */
class PendingWrite {
  settled = false
  /** Takes the abort listener off again. */
  off: () => void = noop

  constructor(
    readonly jobId: string,
    readonly body: WriteBody,
    readonly bytes: number,
    readonly abort: LazyAbort,
    private readonly answer: (answer: AppendResponse) => void,
    private readonly refuse: (error: unknown) => void,
  ) {}

  resolve(answer: AppendResponse): void {
    if (this.#settle()) this.answer(answer)
  }

  reject(error: unknown): void {
    if (this.#settle()) this.refuse(error)
  }

  /** Settles with what `sent` (this write sent on its own) comes to. */
  follow(sent: Promise<AppendResponse>): Promise<void> {
    return sent.then(
      (answer) => this.resolve(answer),
      (error: unknown) => this.reject(error),
    )
  }

  #settle(): boolean {
    if (this.settled) return false
    this.settled = true
    this.off()
    return true
  }
}

function noop(): void {}

/** Seconds a long-poll may take beyond its `wait` before the worker gives up on the connection. */
const longPollSlackMs = 15_000
const requestTimeoutMs = 30_000

/** The worker's half of the HTTP API: one method per endpoint, one attempt per call (callers retry). */
export class WorkerApi {
  #pending: PendingWrite[] = []
  /** The server takes `max` on claims, until it says otherwise. */
  #batchClaims = true
  /** The server takes finished jobs' last writes in claims (`done`), until it says otherwise. */
  #carryDone = true
  /** The server takes `ran` in a release, until it says otherwise. */
  #releaseUnrun = true

  constructor(private readonly options: ApiOptions) {}

  /**
   * Up to `max` jobs, each with its own lease (empty when none came within `wait` seconds), in one
   * request. The last writes of jobs that just finished, waiting to be sent, go in the same
   * request (`done`): one request per cycle of a busy worker, and such a claim is answered at once
   * (`carried`), job or not. A server that predates `done` or `max` refuses the field: from then
   * on this sends what that server expects.
   */
  async claim(body: Required<Omit<ClaimRequest, 'done'>>, signal: AbortSignal): Promise<{ claims: Claim[]; carried: boolean }> {
    const timeoutMs = body.wait * 1000 + longPollSlackMs
    // Cleared when the writes this claim carried may be why it was refused.
    let carry = true
    while (this.#batchClaims) {
      const carried = this.#carryDone && carry ? this.#takeFinalWrites() : []
      let answer: ClaimList
      try {
        const request: ClaimRequest = carried.length === 0 ? body : { ...body, done: carried.map(jobWriteOf) }
        // An answer that has begun is read whole even if the worker stops meanwhile: its jobs are
        // the worker's, to run or to give back (Worker.claimLoop releases them).
        answer = (await this.post<ClaimList>('claim', '/v1/workers/claim', request, signal, timeoutMs, 'POST', true)).body
      } catch (error) {
        // Whether the writes were applied is unknown: they go again on their own (a repeated batch
        // number is a retry the server recognizes).
        this.#requeue(carried)
        const field = error instanceof WorkerRequestError && error.code === 'invalid_request' ? error.details?.field : undefined
        if (field !== 'max' && field !== 'done') {
          // Refused as a whole (too large, say) while it carried writes: they go on their own,
          // each answered for itself, and the claim again without them. A refused key is no
          // matter of what the claim carried.
          if (carried.length > 0 && error instanceof WorkerRequestError && (error.status === 400 || error.status === 413)) {
            carry = false
            continue
          }
          throw error
        }
        this.#carryDone = false
        if (field === 'max') this.#batchClaims = false
        continue
      }
      if (carried.length > 0) {
        if (answer.done === undefined) {
          // A server that ignored the field: the writes go on their own, now and from now on.
          this.#carryDone = false
          this.#requeue(carried)
        } else this.#answerWrites(carried, answer.done)
      }
      return { claims: answer.claims, carried: carried.length > 0 }
    }
    const { max: _, ...one } = body
    const answer = await this.post<Claim>('claim', '/v1/workers/claim', one, signal, timeoutMs, 'POST', true)
    return { claims: answer.status === 204 ? [] : [answer.body], carried: false }
  }

  /**
   * The waiting writes that end their job (the last batch of a finished job), within one bulk
   * request's limits, taken off the queue to ride in a claim.
   */
  #takeFinalWrites(): PendingWrite[] {
    const limits = this.options.bulk
    if (limits === null || this.#pending.length === 0) return []
    const taken: PendingWrite[] = []
    const left: PendingWrite[] = []
    let events = 0
    let bytes = 0
    for (const write of this.#pending) {
      if (write.settled) continue
      const last = write.body.events.at(-1)?.type
      const fits = taken.length < maxCarried && events + write.body.events.length <= limits.maxEvents && bytes + write.bytes <= limits.maxBytes
      if ((last === 'completed' || last === 'failed') && fits) {
        taken.push(write)
        events += write.body.events.length
        bytes += write.bytes + write.jobId.length + 16
      } else left.push(write)
    }
    this.#pending = left
    return taken
  }

  /** Writes back to the queue, for the next bulk request. */
  #requeue(writes: PendingWrite[]): void {
    for (const write of writes) if (!write.settled) this.#enqueue(write)
  }

  #enqueue(write: PendingWrite): void {
    // A turn's writes go together: a claim issued in this turn takes the final ones, the rest go in one bulk request.
    if (this.#pending.length === 0) this.options.timers.setTimeout(() => void this.#flushWrites(), 0)
    this.#pending.push(write)
  }

  /**
   * Appends one job's batch. Batches of several jobs issued in the same moment (a worker running
   * many jobs flushes them together) share one `POST /v1/events`; each is still answered, or
   * refused, on its own, exactly as its own request would be.
   */
  appendEvents(jobId: string, body: WriteBody, abort: LazyAbort): Promise<AppendResponse> {
    if (this.options.bulk === null) return this.#appendOne(jobId, body, abort.signal)
    if (abort.aborted) return Promise.reject(abort.reason)
    let answer!: (answer: AppendResponse) => void
    let refuse!: (error: unknown) => void
    const promise = new Promise<AppendResponse>((resolve, reject) => {
      answer = resolve
      refuse = reject
    })
    const write = new PendingWrite(jobId, body, JSON.stringify(body).length, abort, answer, refuse)
    // An aborted write is answered at once; the shared request goes on for the others.
    write.off = abort.onAbort(() => write.reject(abort.reason))
    this.#enqueue(write)
    return promise
  }

  async #appendOne(jobId: string, body: WriteBody, signal: AbortSignal): Promise<AppendResponse> {
    return (await this.post<AppendResponse>('events', `/v1/jobs/${encodeURIComponent(jobId)}/events`, body, signal)).body
  }

  async #flushWrites(): Promise<void> {
    const writes = this.#pending.filter((write) => !write.settled)
    this.#pending = []
    const limits = this.options.bulk as { maxEvents: number; maxBytes: number }
    // Split into requests that fit the server's limits, keeping each job's writes in order.
    const groups: PendingWrite[][] = []
    let group: PendingWrite[] = []
    let events = 0
    let bytes = 0
    for (const write of writes) {
      if (group.length > 0 && (events + write.body.events.length > limits.maxEvents || bytes + write.bytes > limits.maxBytes)) {
        groups.push(group)
        group = []
        events = 0
        bytes = 0
      }
      group.push(write)
      events += write.body.events.length
      bytes += write.bytes + write.jobId.length + 16
    }
    if (group.length > 0) groups.push(group)
    await Promise.all(groups.map((one) => this.#sendGroup(one)))
  }

  async #sendGroup(writes: PendingWrite[]): Promise<void> {
    const single = writes.length === 1 ? writes[0] : undefined
    if (single !== undefined) {
      await single.follow(this.#appendOne(single.jobId, single.body, single.abort.signal))
      return
    }
    const never = new AbortController().signal
    let answer: BulkWriteResponse
    try {
      const body: BulkWriteRequest = { writes: writes.map((write) => ({ jobId: write.jobId, ...write.body })) }
      answer = (await this.post<BulkWriteResponse>('events', '/v1/events', body, never)).body
    } catch (error) {
      // Refused as a whole for one write's sake (a malformed event, say): send each on its own,
      // so the others are not held hostage. Anything else (no answer, 5xx, 401): each retries.
      if (error instanceof WorkerRequestError && error.status !== null && error.status >= 400 && error.status < 500 && ![401, 403, 408, 429].includes(error.status)) {
        await Promise.all(writes.map((write) => write.follow(this.#appendOne(write.jobId, write.body, write.abort.signal))))
      } else for (const write of writes) write.reject(error)
      return
    }
    this.#answerWrites(writes, answer.results)
  }

  /** Each write settled with its own result of a bulk answer: appended, or refused with the server's error. */
  #answerWrites(writes: readonly PendingWrite[], results: readonly BulkWriteResult[]): void {
    writes.forEach((write, i) => {
      const result = results[i]
      if (result === undefined) write.reject(new WorkerRequestError('events', null, 'invalid_response', 'events: the bulk answer is missing a result'))
      else if ('error' in result) {
        const status = isErrorCode(result.error.code) ? errorRegistry[result.error.code].status : 500
        write.reject(new WorkerRequestError('events', status, result.error.code, `events: ${result.error.message}`, result.error.details))
      } else {
        const { jobId: _, ...appended } = result
        write.resolve(appended)
      }
    })
  }

  /** `timedOut` is absent from servers before deadlines: test it with `=== true`. */
  async heartbeat(jobId: string, body: Required<HeartbeatRequest>, signal: AbortSignal): Promise<HeartbeatResponse> {
    return (await this.post<HeartbeatResponse>('heartbeat', `/v1/jobs/${encodeURIComponent(jobId)}/heartbeat`, body, signal)).body
  }

  /**
   * `ran: false` (no handler ran the job) is sent only then, so the attempt does not count; a server
   * that predates the field refuses it, and the job is released without it.
   */
  async release(jobId: string, body: Required<ReleaseRequest>, signal: AbortSignal): Promise<void> {
    const { ran, ...plain } = body
    const path = `/v1/jobs/${encodeURIComponent(jobId)}/release`
    if (!ran && this.#releaseUnrun) {
      try {
        await this.post('release', path, { ...plain, ran }, signal)
        return
      } catch (error) {
        if (!(error instanceof WorkerRequestError && error.code === 'invalid_request' && error.details?.field === 'ran')) throw error
        this.#releaseUnrun = false
      }
    }
    await this.post('release', path, plain, signal)
  }

  /** A job's checkpoint in full (`GET /v1/jobs/:id/checkpoint`), for one too large to come with the claim. */
  async checkpoint(jobId: string, signal: AbortSignal): Promise<unknown> {
    const answer = await this.post<JobCheckpoint>('checkpoint', `/v1/jobs/${encodeURIComponent(jobId)}/checkpoint`, undefined, signal, requestTimeoutMs, 'GET')
    return answer.body.checkpoint
  }

  /** Long-poll: the jobs among `jobs` that are no longer running under their lease (empty after `wait` seconds). */
  async signals(jobs: SignalsRequest['jobs'], wait: number, signal: AbortSignal): Promise<JobSignal[]> {
    const body: SignalsRequest = { jobs, wait }
    const answer = await this.post<SignalsResponse>('signals', '/v1/workers/signals', body, signal, wait * 1000 + longPollSlackMs)
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
    method: 'POST' | 'GET' = 'POST',
    keepAnswer = false,
  ): Promise<{ status: number; body: T }> {
    let status: number
    let text: string
    try {
      ;({ status, text } = await this.options.transport.send({
        method,
        path,
        ...(method === 'POST' ? { body: JSON.stringify(body) } : {}),
        signal,
        timeoutMs,
        keepAnswer,
      }))
    } catch (error) {
      if (signal.aborted) throw error
      if (error instanceof TransportTimeout) {
        throw new WorkerRequestError(operation, null, 'timeout', `${operation}: no answer within ${timeoutMs} ms`, undefined, { cause: error })
      }
      throw new WorkerRequestError(operation, null, 'network_error', `${operation}: ${describe(error)}`, undefined, { cause: error })
    }
    if (status < 200 || status > 299) {
      const error = errorOf(operation, status, text, this.options.url)
      if (!error.transient) this.options.onAnswer?.()
      throw error
    }
    this.options.onAnswer?.()
    try {
      return { status, body: (text === '' ? null : JSON.parse(text)) as T }
    } catch (error) {
      // A truncated answer: whether it was applied is unknown, so it is retried like no answer.
      throw new WorkerRequestError(operation, null, 'invalid_response', `${operation}: the answer is not JSON`, undefined, { cause: error })
    }
  }
}

/** Most finished jobs' writes one claim carries (the server's limit on `done`). */
const maxCarried = 1000

function jobWriteOf(write: PendingWrite): JobWrite {
  return { jobId: write.jobId, ...write.body }
}

function errorOf(operation: WorkerOperation, status: number, text: string, url: string): WorkerRequestError {
  let error: { code?: unknown; message?: unknown; details?: unknown } | undefined
  try {
    error = (JSON.parse(text) as { error?: typeof error }).error
  } catch {
    // A proxy's HTML error page, say: keep the status, which is what decides a retry.
  }
  const code = typeof error?.code === 'string' ? error.code : `http_${status}`
  // No Jobwire error in it: a proxy's page, or a server that is not Jobwire at all.
  const message = typeof error?.message === 'string' ? error.message : `HTTP ${status} from ${url}, without a Jobwire error: is it a Jobwire server?`
  const details = typeof error?.details === 'object' && error.details !== null ? (error.details as Record<string, unknown>) : undefined
  return new WorkerRequestError(operation, status, code, `${operation}: ${message}`, details)
}

function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error)
  const cause = error.cause instanceof Error ? ` (${error.cause.message})` : ''
  return `${error.message}${cause}`
}
