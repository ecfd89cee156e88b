import type { Claim, Lease, ProducerEvent, SignalReason } from '@jobwire/protocol'
import { WorkerRequestError, type WorkerApi, type WorkerOperation } from './api.js'
import { createContext, type ClaimedJob, type JobContext } from './context.js'
import { failureOf, JobAbortedError, type AbortReason } from './errors.js'
import { Outbox, type BatchLimits } from './outbox.js'
import type { SignalWatch, Watched } from './signal-watch.js'
import { backoffDelay, deferred, LazyAbort, sleep, type Backoff, type Timers } from './timing.js'

/** A handler: its return value becomes the job's `result`; a throw fails the job. */
export type JobHandler<Input = unknown, Checkpoint = unknown> = (
  job: ClaimedJob<Input, Checkpoint>,
  ctx: JobContext<Checkpoint>,
) => unknown

/** What a run needs from its worker. */
export interface RunEnvironment {
  api: WorkerApi
  watch: SignalWatch
  timers: Timers
  random: () => number
  backoff: Backoff
  throttleMs: number
  leaseMs: number
  limits: BatchLimits
  report(error: unknown, operation: WorkerOperation | 'handler', jobId?: string): void
}

type Phase = 'waiting' | 'running' | 'reporting' | 'stopping' | 'done'

/** Why a run's heartbeats stop (nothing reads it). */
const runEnded = 'the run ended'

/**
 * One claimed job, from claim to its end: runs the handler, heartbeats the lease, reports the
 * outcome, reacts to cancel and lease loss, and on a forced stop releases the lease.
 */
export class JobRun implements Watched {
  readonly id: string
  readonly lease: Lease
  /** Its index in the worker's list of runs in progress, and in the signal watch's (slot-list.ts); -1 when not in it. */
  slot = -1
  watchSlot = -1
  private phase: Phase = 'waiting'
  /** In the signal watch, with heartbeats going (`hold`). */
  private held = false
  /** The handler's `ctx.signal`. */
  private readonly controller = new LazyAbort()
  /** The next heartbeat's timer, while one is due. */
  private heartbeatTimer: unknown = null
  /** The heartbeat request in flight, if any: aborted when the run ends. */
  private heartbeatRequest: AbortController | null = null
  private heartbeatFailures = 0
  private readonly outbox: Outbox
  private readonly handlerSettled = deferred<void>()
  private readonly ended = deferred<void>()
  /** The job is no longer ours (cancelled, finished, lease lost): nothing to release. */
  private lostLease = false
  /** Resolves when the job is no longer this worker's business: outcome delivered, lost, or released. */
  readonly finished = this.ended.promise
  /** Resolves when, in addition, the handler has returned. */
  readonly done: Promise<void>
  /** Resolves when the handler has returned (or thrown): the run's concurrency slot is free. */
  readonly handlerReturned: Promise<void>

  constructor(
    private readonly claim: Claim,
    private readonly env: RunEnvironment,
  ) {
    this.id = claim.job.id
    this.lease = claim.lease
    this.done = Promise.all([this.finished, this.handlerSettled.promise]).then(() => undefined)
    this.handlerReturned = this.handlerSettled.promise
    this.outbox = new Outbox({
      throttleMs: env.throttleMs,
      stage: claim.job.progress.stage,
      limits: env.limits,
      timers: env.timers,
      random: env.random,
      backoff: env.backoff,
      send: (batch, events, abort) => env.api.appendEvents(this.id, { lease: this.lease.token, batch, events }, abort),
      onRetry: (error) => env.report(error, 'events', this.id),
      onEnd: (reason, error) => this.outboxEnded(reason, error),
    })
  }

  get leaseToken(): string {
    return this.lease.token
  }

  /**
   * Holds the job without running it yet (a prefetched job waiting for a slot): its lease is
   * heartbeated and a cancel or a lost lease drops it, which settles `handlerReturned` with no
   * handler run.
   */
  hold(): void {
    if (this.held) return
    this.held = true
    this.env.watch.add(this)
    this.scheduleHeartbeat()
  }

  /** Still held and not started: `start` would run it. */
  get waiting(): boolean {
    return this.phase === 'waiting'
  }

  /** Starts the handler (and holds the job, if `hold` did not); `finished` and `done` tell how it goes. */
  start(handler: JobHandler): void {
    if (this.phase !== 'waiting') return
    this.hold()
    this.phase = 'running'
    void this.execute(handler)
  }

  /**
   * The signal watch (or a heartbeat) says the job is no longer running under this lease. A
   * lost lease is worth an `onError`: the worker was too slow to heartbeat, or cut off.
   */
  signalled(reason: SignalReason, cause: { operation: WorkerOperation; error: unknown } = { operation: 'signals', error: new JobAbortedError(reason) }): void {
    this.lostLease = true
    if (reason === 'lease_lost' && (this.phase === 'waiting' || this.phase === 'running' || this.phase === 'stopping')) {
      this.env.report(cause.error, cause.operation, this.id)
    }
    if (this.phase === 'waiting') {
      // Never started: there is no handler to abort, and nothing was reported.
      this.outbox.kill(reason)
      this.handlerSettled.resolve()
      this.end()
    } else if (this.phase === 'running') {
      this.controller.abort(new JobAbortedError(reason))
      this.outbox.kill(reason)
      this.end()
    } else if (this.phase === 'stopping') {
      // Nothing left to flush or release: the job is not ours any more.
      this.outbox.kill(reason)
    }
    // While reporting, the outbox learns the same from the server's answer to the terminal event.
  }

  /**
   * A forced stop: aborts the handler with `stopped`, gives it `graceMs` to settle (a handler
   * may checkpoint in that time), sends what it reported, and releases the lease so the job is
   * re-queued with its last checkpoint.
   */
  async interrupt(graceMs: number): Promise<void> {
    const { timers } = this.env
    if (this.phase === 'done') return
    const grace = new AbortController()
    const graceTimer = timers.setTimeout(() => grace.abort(), graceMs)
    const graceOver = new Promise<void>((resolve) => grace.signal.addEventListener('abort', () => resolve(), { once: true }))
    // A job still waiting for a slot never ran: its attempt does not count.
    const ran = this.phase !== 'waiting'
    try {
      if (this.phase === 'reporting') {
        await Promise.race([this.finished, graceOver])
        if (this.hasEnded()) return
        this.outbox.kill('stopped')
      } else if (this.phase === 'waiting') {
        // Never started: released at once, so another worker can run it.
        this.phase = 'stopping'
        this.handlerSettled.resolve()
        this.outbox.kill('stopped')
      } else {
        this.phase = 'stopping'
        this.controller.abort(new JobAbortedError('stopped'))
        await Promise.race([this.handlerSettled.promise, graceOver])
        await Promise.race([this.outbox.close(), graceOver])
        this.outbox.kill('stopped')
      }
      this.env.watch.remove(this)
      if (!this.lostLease) await releaseLease(this.env, this.id, this.lease.token, 'worker stopping', graceMs, ran)
    } finally {
      timers.clearTimeout(graceTimer)
      this.end()
    }
  }

  private async execute(handler: JobHandler): Promise<void> {
    const ctx = createContext(this.outbox, () => this.controller.signal, this.env.limits.maxValueBytes, this.claim.job)
    let terminal: Extract<ProducerEvent, { type: 'completed' | 'failed' }>
    try {
      const job = await this.claimedJob()
      const result: unknown = await handler(job as ClaimedJob, ctx)
      terminal = completedEvent(result, this.env.limits.maxValueBytes)
      // Refused here, before any request: the server would refuse it after the upload.
      if (terminal.type === 'failed') this.env.report(new RangeError(terminal.message), 'handler', this.id)
    } catch (error) {
      if (!this.controller.aborted) this.env.report(error, 'handler', this.id)
      terminal = { type: 'failed', ...failureOf(error) }
    }
    this.handlerSettled.resolve()
    // Cancelled, lost or stopping: the outcome is not reported (the job is already settled, or
    // `interrupt` releases it).
    if (this.phase !== 'running' || this.controller.aborted) return
    this.phase = 'reporting'
    this.env.watch.remove(this)
    await this.outbox.finish(terminal)
    this.end()
  }

  /** The claimed job, with its checkpoint fetched when the server stores it apart (too large for the claim). */
  private async claimedJob(): Promise<Claim['job']> {
    const { job } = this.claim
    if (job.checkpointRef === undefined) return job
    const { api, timers, backoff, random } = this.env
    for (let attempt = 1; ; attempt++) {
      try {
        return { ...job, checkpoint: await api.checkpoint(job.id, this.controller.signal) }
      } catch (error) {
        if (this.controller.aborted || !(error instanceof WorkerRequestError && error.transient) || attempt >= 5) throw error
        await sleep(timers, backoffDelay(backoff, attempt, random, error), this.controller.signal)
      }
    }
  }

  private outboxEnded(reason: AbortReason, error: unknown): void {
    if (reason !== 'cancelled' && reason !== 'finished') this.env.report(error, 'events', this.id)
    if (reason !== 'rejected') this.lostLease = true
    if (this.phase !== 'running') return
    this.controller.abort(new JobAbortedError(reason))
    this.env.watch.remove(this)
    // `rejected`: the outbox still sends the `failed` that replaces what was refused.
    if (reason === 'rejected') {
      this.phase = 'reporting'
      void this.outbox.close().then(() => this.end())
    } else {
      this.end()
    }
  }

  private hasEnded(): boolean {
    return this.phase === 'done'
  }

  private end(): void {
    if (this.phase === 'done') return
    this.phase = 'done'
    if (this.heartbeatTimer !== null) this.env.timers.clearTimeout(this.heartbeatTimer)
    this.heartbeatTimer = null
    // A reason of our own: the default one is a DOMException, whose stack trace a busy worker pays for per job.
    this.heartbeatRequest?.abort(runEnded)
    this.env.watch.remove(this)
    this.ended.resolve()
  }

  /**
   * Extends the lease every `leaseMs / 3`; retries sooner (with backoff, or the server's
   * `Retry-After` if longer, never later than the interval) after a failure. A plain timer until a
   * heartbeat is due (most jobs end before): no abort signal or listener per job.
   */
  private scheduleHeartbeat(failure?: unknown): void {
    if (this.phase === 'done') return
    const { timers, backoff, random } = this.env
    const interval = Math.max(1, Math.floor(this.lease.leaseMs / 3))
    const failures = this.heartbeatFailures
    const delay = failures === 0 ? interval : Math.min(interval, backoffDelay(backoff, failures, random, failure))
    this.heartbeatTimer = timers.setTimeout(() => {
      this.heartbeatTimer = null
      void this.heartbeat()
    }, delay)
  }

  private async heartbeat(): Promise<void> {
    if (this.phase === 'done') return
    const { api, leaseMs } = this.env
    const request = new AbortController()
    this.heartbeatRequest = request
    let failure: unknown
    try {
      const answer = await api.heartbeat(this.id, { lease: this.lease.token, leaseMs }, request.signal)
      this.heartbeatFailures = 0
      if (answer.cancelled) this.signalled('cancelled')
      else if (answer.timedOut === true) this.signalled('timed_out')
      else if (answer.status !== 'running') this.signalled('finished')
    } catch (error) {
      if (request.signal.aborted) return
      if (error instanceof WorkerRequestError && !error.transient) {
        this.signalled(error.code === 'job_finished' ? 'finished' : 'lease_lost', { operation: 'heartbeat', error })
        return
      }
      this.heartbeatFailures += 1
      failure = error
      // While the outcome is being delivered the lease may go with it (a retryable failure re-queues the job).
      if (this.phase !== 'reporting') this.env.report(error, 'heartbeat', this.id)
    } finally {
      if (this.heartbeatRequest === request) this.heartbeatRequest = null
    }
    this.scheduleHeartbeat(failure)
  }
}

/** Releases a lease, retrying transient failures for up to `withinMs`; never throws. `ran: false`: no handler ran the job. */
export async function releaseLease(
  env: Pick<RunEnvironment, 'api' | 'timers' | 'random' | 'backoff' | 'report'>,
  jobId: string,
  token: string,
  reason: string,
  withinMs: number,
  ran: boolean,
): Promise<void> {
  const deadline = new AbortController()
  const timer = env.timers.setTimeout(() => deadline.abort(), withinMs)
  try {
    for (let attempt = 1; !deadline.signal.aborted; attempt++) {
      try {
        await env.api.release(jobId, { lease: token, reason, ran }, deadline.signal)
        return
      } catch (error) {
        if (deadline.signal.aborted) return
        const final = error instanceof WorkerRequestError && !error.transient
        // A lease that is gone or a job that ended needs no release.
        if (!(final && (error.code === 'lease_lost' || error.code === 'job_finished'))) env.report(error, 'release', jobId)
        if (final) return
        await sleep(env.timers, backoffDelay(env.backoff, attempt, env.random, error), deadline.signal)
      }
    }
  } finally {
    env.timers.clearTimeout(timer)
  }
}

/** The `completed` event for a handler's return value, or a `failed` when it cannot be sent. */
function completedEvent(result: unknown, maxValueBytes: number): Extract<ProducerEvent, { type: 'completed' | 'failed' }> {
  if (result === undefined) return { type: 'completed' }
  let json: string
  try {
    json = JSON.stringify({ type: 'completed', result })
  } catch (error) {
    return { type: 'failed', code: 'invalid_result', message: `The result is not JSON: ${failureOf(error).message}`, retryable: false }
  }
  const bytes = Buffer.byteLength(json)
  if (bytes > maxValueBytes) {
    const message = `The result is ${bytes} bytes of JSON; the limit is ${maxValueBytes} (--max-value-bytes): store it elsewhere and return a reference to it`
    return { type: 'failed', code: 'value_too_large', message, retryable: false }
  }
  return { type: 'completed', result }
}
