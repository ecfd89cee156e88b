import type { Claim } from '@jobwire/protocol'
import { hostname } from 'node:os'
import { WorkerApi, WorkerRequestError, type WorkerOperation } from './api.js'
import { JobFailure } from './errors.js'
import { JobRun, releaseLease, type JobHandler, type RunEnvironment } from './job-run.js'
import { defaultLimits, type BatchLimits } from './outbox.js'
import { minPollMs, SignalWatch } from './signal-watch.js'
import { DefaultErrorLog } from './error-log.js'
import { SlotList } from './slot-list.js'
import { fetchTransport, nodeTransport, type Transport } from './transport.js'
import { backoffDelay, defaultBackoff, deferred, sleep, systemTimers, type Deferred, type Timers } from './timing.js'

export interface WorkerOptions {
  /** The Jobwire server, e.g. `http://127.0.0.1:7070`. */
  url: string
  /** An API key, sent as `Authorization: Bearer <apiKey>`. */
  apiKey: string
  /** Shown in each job's `started` event. Default `<hostname>:<pid>`. */
  name?: string
  /**
   * Jobs run at once. Default 1. A slot frees when its handler has returned, so a handler that
   * ignores `ctx.signal` after a cancel keeps its slot until it does.
   */
  concurrency?: number
  /**
   * Jobs claimed ahead of a free slot, 0–1,000. Default 0. They wait in the worker, in claim
   * order, and start the moment a slot frees; one claim then fetches many jobs, which is what
   * many short jobs need (otherwise each slot waits a round trip per job). A waiting job is
   * already claimed: its lease (heartbeated), its `started` event and its `timeout` run from the
   * claim. A cancel drops it unrun; `stop()` releases it at once. Leave it 0 for long jobs: a
   * prefetched job waits behind them while another worker may be idle.
   */
  prefetch?: number
  /** The lease asked for at claim and at each heartbeat, 1,000–600,000 ms. Default 30,000; heartbeats go every third of it. */
  leaseMs?: number
  /** Least time between two sends of a job's progress, item updates and text. Default 100 ms. */
  throttleMs?: number
  /** How long one claim (and one signals long-poll) waits on the server, 1–30 s. Default 20. */
  pollWaitSeconds?: number
  /** What one request may carry; lower them to match a server started with lower `--max-*` limits. */
  limits?: Partial<BatchLimits>
  /**
   * Reports of several running jobs that are due together go out as one `POST /v1/events` (each
   * job's batch still atomic and answered on its own), instead of one request per job. Default true.
   */
  bulkWrites?: boolean
  /** How requests are sent (tests and custom stacks pass their own). Default: Node's `http`/`https` over kept-alive connections. */
  fetch?: typeof globalThis.fetch
  /** Default the system's timers (tests inject their own). */
  timers?: Timers
  /** Jitter source for backoff, in [0, 1). Default `Math.random`. */
  random?: () => number
  /**
   * Called for every failure the worker handles itself: a request retried with backoff
   * (`WorkerRequestError`), a lost lease, a refused batch, a handler's throw (which fails the
   * job), and a claim the server refused for good, which stops the worker (see `done`). Never
   * throw from it. Default: a `console.warn` line, except while the server cannot be reached:
   * then the first failure, a reminder once a minute, and a line when the server answers again.
   */
  onError?: (error: unknown, context: ErrorContext) => void
}

export interface ErrorContext {
  operation: WorkerOperation | 'handler'
  jobId?: string
}

export interface StopOptions {
  /** How long running handlers may go on before they are aborted. Default 30,000 ms. */
  timeoutMs?: number
  /**
   * After the abort: how long a handler has to settle (it may `checkpoint` meanwhile), then how
   * long to deliver its reports and release its lease. Default 2,000 ms.
   */
  graceMs?: number
}

export type WorkerState = 'idle' | 'running' | 'stopping' | 'stopped'

export interface Worker {
  /**
   * Runs jobs of `type` with `handler`. The handler's return value is the job's `result`; a
   * throw fails the job with `{code: error.code ?? 'handler_error', message, retryable}` (see
   * `JobFailure` and `RetryableError`). When `ctx.signal` aborted because the job was
   * cancelled, finished elsewhere or lost, the outcome is not reported.
   */
  handle<Input = unknown, Checkpoint = unknown>(type: string, handler: JobHandler<Input, Checkpoint>): Worker
  /** Starts claiming jobs of the handled types. */
  start(): Promise<void>
  /**
   * Graceful stop: claims no more jobs, lets running handlers finish for up to `timeoutMs`, then
   * aborts them (`ctx.signal.reason.reason === 'stopped'`) and releases their leases, so the
   * server re-queues them with their last checkpoint. Resolves when every job is delivered or
   * released; a handler that ignores its signal may still be running then.
   */
  stop(options?: StopOptions): Promise<void>
  /**
   * Resolves once `stop()` has stopped the worker. Rejects with the `WorkerRequestError` that
   * stopped it on its own: a claim the server refused for good (not `transient`: a wrong or
   * revoked key, 401; a key that may not claim, 403; a URL that is no Jobwire server, 404), said
   * once through `onError`. Running handlers are then aborted at once (`stopped`) and their leases
   * released where the server still allows it. A worker process should `worker.done.catch(...)`
   * and exit non-zero; an app that never reads `done` is not taken down by its rejection.
   * `stop()` after such a stop resolves.
   */
  readonly done: Promise<void>
  readonly state: WorkerState
  /** Jobs held now (claimed and not yet ended, or whose handler has not yet returned), waiting ones included. */
  readonly activeJobs: number
}

/**
 * A worker: claims jobs of the types it handles (one long-poll claim at a time, while a
 * concurrency slot is free), runs their handlers, and streams their reports to the server. The
 * outcomes of jobs that finish go in the next claim, so a busy worker sends one request per cycle.
 *
 * @example
 * const worker = createWorker({ url, apiKey, concurrency: 4 })
 * worker.handle('transcription', async (job, ctx) => {
 *   ctx.progress({ stage: 'decoding', percent: 12 })
 *   return { words: 1200 }
 * })
 * await worker.start()
 * process.on('SIGTERM', () => void worker.stop({ timeoutMs: 10_000 }))
 * worker.done.catch(() => (process.exitCode = 1)) // the server refused its claims for good
 */
export function createWorker(options: WorkerOptions): Worker {
  return new JobwireWorker(options)
}

class JobwireWorker implements Worker {
  private readonly handlers = new Map<string, JobHandler>()
  private readonly runs = new SlotList<JobRun>(
    (run) => run.slot,
    (run, slot) => (run.slot = slot),
  )
  /** Runs whose handler has not returned yet, waiting ones included. */
  private held = 0
  /** Runs whose handler is running: the slots in use. */
  private running = 0
  /** Prefetched runs waiting for a slot, oldest first (some may have been dropped since: skipped). */
  private waiting: { run: JobRun; begin: () => void }[] = []
  /** The claim loop is between claims (waiting for room, or for its turn to send): see startWaiting. */
  private claimIdle = false
  /** The line waits for a due claim to leave (startWaiting). */
  private linePaused = false
  private readonly env: RunEnvironment
  private readonly transport: Transport
  private readonly name: string
  private readonly concurrency: number
  private readonly prefetch: number
  private readonly waitSeconds: number
  private readonly onError: (error: unknown, context: ErrorContext) => void
  private currentState: WorkerState = 'idle'
  private claiming: Promise<void> | null = null
  private readonly stopping = new AbortController()
  private stopped: Promise<void> | null = null
  /** What stopped the worker on its own (a claim refused for good), if anything did. */
  private failure: WorkerRequestError | null = null
  private readonly ended = deferred<void>()
  readonly done = this.ended.promise
  private wake: Deferred<void> | null = null

  constructor(options: WorkerOptions) {
    // Handled here: an app that never reads `done` must not die of its rejection.
    this.done.catch(() => undefined)
    const timers = options.timers ?? systemTimers
    const random = options.random ?? Math.random
    this.name = options.name ?? `${hostname()}:${process.pid}`
    this.concurrency = positiveInteger('concurrency', options.concurrency ?? 1)
    this.prefetch = options.prefetch ?? 0
    if (!Number.isInteger(this.prefetch) || this.prefetch < 0 || this.prefetch > maxClaim) {
      throw new RangeError(`prefetch must be an integer in 0–${maxClaim} (got ${this.prefetch})`)
    }
    this.waitSeconds = inRange('pollWaitSeconds', options.pollWaitSeconds ?? 20, 1, 30)
    const leaseMs = inRange('leaseMs', options.leaseMs ?? 30_000, 1_000, 600_000)
    const defaultLog = options.onError === undefined ? new DefaultErrorLog(timers) : null
    this.onError = options.onError ?? (defaultLog as DefaultErrorLog).report
    const limits = batchLimits(options.limits ?? {})
    const target = { url: options.url, apiKey: options.apiKey, timers }
    this.transport = options.fetch === undefined ? nodeTransport(target) : fetchTransport(options.fetch, target)
    const api = new WorkerApi({
      transport: this.transport,
      url: options.url,
      timers,
      bulk: options.bulkWrites === false ? null : { maxEvents: limits.maxBatchEvents, maxBytes: limits.maxBatchBytes },
      ...(defaultLog === null ? {} : { onAnswer: defaultLog.answered }),
    })
    const report = (error: unknown, operation: WorkerOperation | 'handler', jobId?: string): void => {
      try {
        this.onError(error, jobId === undefined ? { operation } : { operation, jobId })
      } catch {
        // onError must not take the worker down.
      }
    }
    this.env = {
      api,
      timers,
      random,
      backoff: defaultBackoff,
      throttleMs: inRange('throttleMs', options.throttleMs ?? 100, 0, Number.MAX_SAFE_INTEGER),
      leaseMs,
      limits,
      report,
      watch: new SignalWatch({
        api,
        waitSeconds: this.waitSeconds,
        timers,
        random,
        backoff: defaultBackoff,
        onError: (error) => report(error, 'signals'),
      }),
    }
  }

  get state(): WorkerState {
    return this.currentState
  }

  get activeJobs(): number {
    return this.runs.size
  }

  handle<Input, Checkpoint>(type: string, handler: JobHandler<Input, Checkpoint>): Worker {
    if (typeof type !== 'string' || !/^[\w.:-]{1,100}$/.test(type)) throw new TypeError(`handle(): invalid job type "${String(type)}"`)
    if (this.handlers.has(type)) throw new Error(`handle(): "${type}" already has a handler`)
    this.handlers.set(type, handler as JobHandler)
    return this
  }

  async start(): Promise<void> {
    if (this.currentState !== 'idle') throw new Error(`start(): the worker is ${this.currentState}`)
    if (this.handlers.size === 0) throw new Error('start(): register a handler with handle() first')
    this.currentState = 'running'
    this.claiming = this.claimLoop()
  }

  stop(options: StopOptions = {}): Promise<void> {
    this.stopped ??= this.shutdown(options)
    return this.stopped
  }

  private async shutdown({ timeoutMs = 30_000, graceMs = 2_000 }: StopOptions): Promise<void> {
    const { timers } = this.env
    if (this.currentState === 'idle') {
      this.currentState = 'stopped'
      this.ended.resolve()
      return
    }
    this.currentState = 'stopping'
    // Also ends the claim in flight (it listens to the same signal).
    this.stopping.abort()
    this.notify()
    // Prefetched jobs never start now: released at once, so other workers can run them.
    const released = this.waiting.splice(0).map(({ run }) => run.interrupt(graceMs))
    await this.claiming
    await Promise.all(released)
    let timer: unknown
    const timeout = new Promise<void>((resolve) => (timer = timers.setTimeout(resolve, timeoutMs)))
    await Promise.race([Promise.all(this.runs.values().map((run) => run.finished)), timeout])
    timers.clearTimeout(timer)
    await Promise.all(this.runs.values().map((run) => run.interrupt(graceMs)))
    await this.env.watch.close()
    this.transport.close()
    this.currentState = 'stopped'
    if (this.failure === null) this.ended.resolve()
    else this.ended.reject(this.failure)
  }

  /**
   * One claim at a time, only while a slot (or, with `prefetch`, room to wait) is free, asking
   * for as many jobs as there is room for: a claimed job always has a slot to run in or a place in
   * line, and a worker holds one claim connection however large its concurrency.
   */
  private async claimLoop(): Promise<void> {
    const { api, timers, random, backoff } = this.env
    let failures = 0
    while (this.currentState === 'running') {
      // With prefetch, handlers that return in this turn go first: their outcomes ride this
      // claim instead of a request of their own (claimable() says when a claim is due).
      this.claimIdle = true
      if (this.prefetch > 0) await new Promise((resolve) => setImmediate(resolve))
      const free = this.claimable()
      if (free === 0) {
        this.resumeLine()
        await this.sleepUntilNotified()
        continue
      }
      this.claimIdle = false
      const sentAt = timers.now()
      let claims: Claim[]
      let carried: boolean
      try {
        // As many jobs as there are free slots, in one request that also carries the outcomes of
        // the jobs that just finished.
        const max = Math.min(free, maxClaim)
        const answer = api.claim(
          { types: [...this.handlers.keys()], worker: this.name, leaseMs: this.env.leaseMs, wait: this.waitSeconds, max },
          this.stopping.signal,
        )
        // The claim has taken the outcomes ready now; once it is written to the connection (Node
        // writes it on a later tick), the line goes on while the server answers.
        if (this.linePaused) setImmediate(() => this.resumeLine())
        ;({ claims, carried } = await answer)
        failures = 0
      } catch (error) {
        if (this.currentState !== 'running') break
        this.env.report(error, 'claim')
        if (refusedForGood(error)) {
          // It will never succeed (a wrong key, say): the worker stops, and `done` rejects with it.
          this.failure = error
          void this.stop({ timeoutMs: 0 })
          break
        }
        failures += 1
        await sleep(timers, backoffDelay(backoff, failures, random, error), this.stopping.signal)
        continue
      }
      if (claims.length === 0) {
        // A server that does not hold the claim (a zero --poll-max-wait) must not be hammered. A
        // claim that carried outcomes was answered without waiting: the next one waits.
        if (!carried) await sleep(timers, minPollMs - (timers.now() - sentAt), this.stopping.signal)
        continue
      }
      if (this.currentState !== 'running') {
        await Promise.all(claims.map((claim) => releaseLease(this.env, claim.job.id, claim.lease.token, 'worker stopping', 5_000, false)))
        break
      }
      for (const claim of claims) this.run(claim)
    }
  }

  private run(claim: Claim): void {
    const type = claim.job.type
    const handler: JobHandler =
      this.handlers.get(type) ??
      (() => {
        throw new JobFailure('no_handler', `Worker ${this.name} has no handler for jobs of type "${type}"`)
      })
    const run = new JobRun(claim, this.env)
    this.runs.add(run)
    this.held++
    let started = false
    const begin = (): void => {
      started = true
      this.running++
      run.start(handler)
    }
    void run.handlerReturned.then(() => {
      this.held--
      // A waiting run dropped before it started (cancelled, say) held no slot.
      if (started) {
        this.running--
        this.startWaiting()
      }
      this.notify()
    })
    void run.done.then(() => {
      this.runs.delete(run)
      this.notify()
    })
    if (this.running < this.concurrency) begin()
    else {
      this.waiting.push({ run, begin })
      run.hold()
    }
  }

  /** Starts waiting runs while slots are free, oldest first; none once the worker is stopping. */
  private startWaiting(): void {
    // A line of short jobs would otherwise run to its end in this turn, and only then would the
    // claim for the next line leave, carrying all their outcomes: worker and server taking turns,
    // each idle while the other works. When a claim is due, the line waits for it to leave (the
    // claim loop's next turn) and then goes on while the server answers.
    if (this.prefetch > 0 && !this.linePaused && this.claimIdle && this.currentState === 'running' && this.claimable() > 0) this.linePaused = true
    while (!this.linePaused && this.running < this.concurrency && this.currentState === 'running') {
      const next = this.waiting.shift()
      if (next === undefined) return
      if (next.run.waiting) next.begin()
    }
  }

  /**
   * How many jobs the next claim may ask for now; 0 while it should wait. A slot frees when its
   * handler returns: the next job is claimed while the outcome of the last one is being delivered.
   * Jobs still delivering count too, up to as many again. While prefetched jobs wait, the next
   * claim waits for room for half a prefetch: one request for many jobs, not one per slot that frees.
   */
  private claimable(): number {
    const room = this.concurrency + this.prefetch
    const free = Math.min(room - this.held, 2 * room - this.runs.size)
    const refill = this.held > this.running ? Math.ceil(this.prefetch / 2) : 1
    return free < refill ? 0 : free
  }

  private resumeLine(): void {
    if (!this.linePaused) return
    this.linePaused = false
    this.startWaiting()
  }

  private sleepUntilNotified(): Promise<void> {
    this.wake ??= deferred<void>()
    return this.wake.promise
  }

  private notify(): void {
    const wake = this.wake
    this.wake = null
    wake?.resolve()
  }
}

/** Most jobs one claim asks for (the server's limit on `max`). */
const maxClaim = 1000

/**
 * A claim the server refused for good (not `transient`): retrying cannot help, so the worker
 * stops. `WorkerApi.claim` has already dealt with an older server's refusal of `max` or `done`.
 */
function refusedForGood(error: unknown): error is WorkerRequestError {
  return error instanceof WorkerRequestError && !error.transient
}

function batchLimits(given: Partial<BatchLimits>): BatchLimits {
  const limits = { ...defaultLimits }
  for (const key of Object.keys(limits) as (keyof BatchLimits)[]) {
    const value = given[key]
    if (value !== undefined) limits[key] = positiveInteger(`limits.${key}`, value)
  }
  return limits
}

function positiveInteger(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) throw new RangeError(`${name} must be a positive integer (got ${value})`)
  return value
}

function inRange(name: string, value: number, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) {
    throw new RangeError(`${name} must be a number in ${min}–${max} (got ${value})`)
  }
  return value
}
