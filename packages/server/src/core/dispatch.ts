import { randomBytes } from 'node:crypto'
import { isTerminal, isTerminalEvent, JobwireError, needsRunning, type Claim, type EventType, type HeartbeatResponse, type JobEvent, type JobSignal, type JobState } from '@jobwire/protocol'
import { leaseProblem, waitFor, type JobService } from './jobs.js'
import { textRewind } from './apply.js'
import type { AppendPlan, AppendResult, Lease, Store, Unsubscribe } from './store.js'

export interface ClaimRequest {
  types: readonly string[]
  worker: string
  leaseMs: number
  /** Milliseconds to wait for a job when none is ready. */
  waitMs: number
  /** Most jobs handed out by this claim (each under its own lease). Default 1. */
  max?: number
  signal?: AbortSignal
}

export interface DispatcherOptions {
  /** How often one waiting claim of each job type looks at the queue unsignalled (ms). Default 1,000. */
  claimRecheckMs?: number
}

// The answers of the worker routes, as the protocol defines them (`@jobwire/protocol` rest.ts).
export type Claimed = Claim
export type HeartbeatResult = HeartbeatResponse
export type WorkerSignal = JobSignal

/** Events that keep a running job running under its lease (they need it running and do not end it): they never concern its worker's signals. */
const isWorkEvent = (type: EventType): boolean => needsRunning(type) && !isTerminalEvent(type)

/** Lease tokens' random bytes, drawn 64 tokens at a time (one call to the CSPRNG instead of one per job). */
let tokenBytes = Buffer.alloc(0)
let tokenAt = 0

/** A new lease token: `lease_` and 18 random bytes, base64url. */
function leaseToken(): string {
  if (tokenAt + 18 > tokenBytes.length) {
    tokenBytes = randomBytes(18 * 64)
    tokenAt = 0
  }
  tokenAt += 18
  return `lease_${tokenBytes.toString('base64url', tokenAt - 18, tokenAt)}`
}

/** How often a job type's waiting claims look again unsignalled: a job whose retry backoff ends signals no one. */
const claimRecheckMs = 1000

/**
 * How long a job type's queue stays subscribed after its last claim ended. A busy worker claims
 * again within a round trip, and on Redis each new subscription is a SUBSCRIBE that the claim
 * must see confirmed (and an UNSUBSCRIBE after): without the linger, every claim paid for both.
 */
const queueLingerMs = 30_000

/**
 * Hands queued jobs to workers under leases and takes them back when workers go quiet. Exactly
 * one worker gets a job: the claim is one atomic store operation. Every write of a claimed job
 * is checked against its lease (JobService.appendEvents), so a zombie worker changes nothing.
 */
export class Dispatcher {
  readonly #queues: QueueWatch

  constructor(
    private readonly service: JobService,
    private readonly now: () => number = Date.now,
    options: DispatcherOptions = {},
  ) {
    this.#queues = new QueueWatch(() => this.store, options.claimRecheckMs ?? claimRecheckMs)
  }

  /** Drops the queue subscriptions kept for the next claims. */
  close(): void {
    this.#queues.close()
  }

  private get store(): Store {
    return this.service.store
  }

  /** Claims the oldest ready job of `types`, waiting up to `waitMs` for one; null if none came. */
  async claim(request: ClaimRequest): Promise<Claimed | null> {
    return (await this.claimMany({ ...request, max: 1 }))[0] ?? null
  }

  /**
   * Claims the oldest ready jobs of `types` (at most `max`, default 1), waiting up to `waitMs`
   * for one; `[]` if none came. The jobs it hands out are committed together.
   */
  async claimMany(request: ClaimRequest): Promise<Claimed[]> {
    // A claim that waits for nothing (a busy worker's, carrying outcomes) looks once: no queue to listen to first.
    if (request.waitMs <= 0) return request.signal?.aborted === true ? [] : this.#claimOnce(request)
    const deadline = this.now() + request.waitMs
    let wake: () => void = () => {}
    // Signals handed to this claim, and how many of them its last look came after.
    let signals = 0
    let looked = 0
    const waiter: QueueWaiter = {
      armed: false,
      wake: () => {
        signals++
        wake()
      },
    }
    const unsubscribers = request.types.map((type) => this.#queues.listen(type, waiter))
    const aborted = (): boolean => request.signal?.aborted === true
    const max = request.max ?? 1
    let claimed: Claimed[] = []
    try {
      for (;;) {
        // Checked before claiming too: an abort ends the wait, and a job claimed then would go to no one.
        if (aborted()) return []
        const woken = new Promise<void>((resolve) => (wake = resolve))
        waiter.armed = true
        looked = signals
        claimed = await this.#claimOnce(request)
        if (claimed.length > 0) {
          if (!aborted()) return claimed
          // The worker went away while the store handed it these (its answer would go nowhere):
          // they go back to the queue now, not when their leases lapse.
          await this.giveBack(claimed)
          claimed = []
          return []
        }
        const left = deadline - this.now()
        if (left <= 0 || aborted()) return []
        await waitFor(woken, left, request.signal)
      }
    } finally {
      waiter.armed = false
      for (const unsubscribe of unsubscribers) unsubscribe()
      // A signal came since this claim last looked (it may have been for a job this claim did not
      // take), or it took all it asked for (more may be ready): the next waiting claim looks.
      if (signals > looked || (claimed.length > 0 && claimed.length >= max)) this.#queues.pass(request.types)
    }
  }

  /**
   * Releases jobs claimed for a worker that is gone, their attempts not counted (no handler ran
   * them); one that cannot be (its lease moved on) is left to its lease.
   */
  async giveBack(claimed: readonly Claimed[], reason = 'the claiming worker went away before the answer'): Promise<void> {
    await Promise.all(claimed.map((c) => this.release(c.job.id, c.lease.token, reason, false).catch(() => undefined)))
  }

  async #claimOnce(request: ClaimRequest): Promise<Claimed[]> {
    const now = this.now()
    const results = await this.store.claim(request.types, now, request.max ?? 1, (job) => ({
      events: [{ type: 'started', data: { attempt: job.attempt + 1, worker: request.worker } }],
      // Each job its own lease: a token authorizes the writes of one job only.
      lease: { token: leaseToken(), worker: request.worker, expiresAt: now + request.leaseMs, lastBatch: 0 },
    }))
    const claimed: Claimed[] = []
    for (const { job, lease } of results) {
      if (lease === null) continue
      // The worker's writes to it come next: authorized from these, without reading the job (it may have been created through another node).
      this.service.rememberFacts(job)
      claimed.push({ job, lease: { token: lease.token, expiresAt: new Date(lease.expiresAt).toISOString(), leaseMs: request.leaseMs } })
    }
    return claimed
  }

  /** Extends a lease. A cancelled or finished job answers with its status instead of an error. */
  async heartbeat(jobId: string, token: string, leaseMs: number): Promise<HeartbeatResult> {
    const now = this.now()
    const result = await this.store.append(jobId, (job, lease) => {
      if (isTerminal(job.status)) return []
      const problem = leaseProblem(lease, token, now)
      if (problem !== null || lease === null) throw new JobwireError('lease_lost', { jobId, reason: problem })
      return { events: [], lease: { ...lease, expiresAt: now + leaseMs } }
    })
    return {
      status: result.job.status,
      cancelled: result.job.status === 'cancelled',
      timedOut: result.job.status === 'failed' && result.job.error?.code === 'timed_out',
      expiresAt: result.lease === null || result.lease.ended === true ? null : new Date(result.lease.expiresAt).toISOString(),
    }
  }

  /**
   * Gives a job back (a worker stopping): re-queued at once with its checkpoint. `ran: false` (no
   * handler ran it) gives its attempt back too: the next start takes the same number again.
   */
  async release(jobId: string, token: string, reason: string | null, ran = true): Promise<AppendResult> {
    const now = this.now()
    return this.store.append(jobId, (job, lease) => {
      const problem = leaseProblem(lease, token, now)
      if (problem !== null) {
        if (isTerminal(job.status)) throw new JobwireError('job_finished', { jobId, status: job.status, type: 'requeued' })
        throw new JobwireError('lease_lost', { jobId, reason: problem })
      }
      return {
        events: [
          {
            type: 'requeued',
            data: { reason: reason ?? 'released', attempt: job.attempt, retryAt: null, ...textRewind(job, job.text.length), ...(ran ? {} : { counted: false as const }) },
          },
        ],
        lease: null,
        availableAt: 0,
      }
    })
  }

  /**
   * Long-poll for a worker: answers as soon as one of its jobs is cancelled, finished or taken
   * from it, or after `waitMs` with nothing (a job that its worker's own write ended is listed
   * when the poll answers, but does not end the wait: the worker knows). This is how a cancel reaches a handler at once. The
   * job's own work events (its worker's progress, text, items, checkpoints) neither wake nor end
   * the wait: a job that writes every few ms would otherwise turn the long-poll into a busy loop
   * answered empty, and the worker would wait out its minimum poll interval before hearing a cancel.
   */
  async signals(jobs: readonly { id: string; lease: string }[], waitMs: number, signal?: AbortSignal): Promise<WorkerSignal[]> {
    let wake: () => void = () => {}
    let woken = new Promise<void>((resolve) => (wake = resolve))
    // The jobs whose events woke the poll since they were last read (their places in `jobs`): only
    // those are read again. A busy worker's jobs end all the time, and each end re-read all of its
    // jobs (on Redis, a read each) only to find the one that ended.
    let changed = new Set<number>()
    // Listen first, then look: a change between the two still wakes us.
    const unsubscribers = jobs.map((job, index) =>
      this.store.subscribe(job.id, (events: readonly JobEvent[]) => {
        if (!events.some((event) => !isWorkEvent(event.type))) return
        changed.add(index)
        wake()
      }),
    )
    try {
      const deadline = Date.now() + waitMs
      // Each listed job's signal as last read, in the request's order.
      const signals: (WorkerSignal | null)[] = jobs.map(() => null)
      for (let toRead = jobs.map((_, index) => index); ; ) {
        const { found, news } = await this.#check(toRead.map((index) => jobs[index] as { id: string; lease: string }))
        toRead.forEach((index, i) => (signals[index] = found[i] ?? null))
        const left = deadline - Date.now()
        if (news || left <= 0 || signal?.aborted === true) return signals.filter((one) => one !== null)
        await waitFor(woken, left, signal)
        woken = new Promise<void>((resolve) => (wake = resolve))
        toRead = [...changed]
        changed = new Set()
      }
    } finally {
      for (const unsubscribe of unsubscribers) unsubscribe()
    }
  }

  /**
   * The signal of each of `jobs` (null: none), and whether any is news to the worker: a job its own lease ended (its
   * worker's terminal write or retryable failure) is listed but is no news, so it does not end a
   * waiting poll by itself — a busy worker's jobs end all the time, and each would otherwise cost
   * it one more signals request.
   */
  async #check(jobs: readonly { id: string; lease: string }[]): Promise<{ found: (WorkerSignal | null)[]; news: boolean }> {
    const now = this.now()
    const found: (WorkerSignal | null)[] = []
    let news = false
    // All at once: one after another, a worker running 250 jobs on Redis waited 250 round trips
    // (13 s on a busy node) for every poll, and a cancel for as long.
    const records = await Promise.all(jobs.map(({ id }) => this.store.getRecord(id)))
    for (const [index, { id, lease }] of jobs.entries()) {
      const record = records[index] ?? null
      let reason: WorkerSignal['reason'] | null = null
      if (record === null) reason = 'lease_lost'
      else if (record.job.status === 'cancelled') reason = 'cancelled'
      else if (record.job.error?.code === 'timed_out' && (record.job.status === 'failed' || record.lease === null)) reason = 'timed_out'
      else if (isTerminal(record.job.status)) reason = 'finished'
      else if (leaseProblem(record.lease, lease, now) !== null) reason = 'lease_lost'
      found.push(reason === null ? null : { jobId: id, reason })
      if (reason === null) continue
      const endedByItsWorker = reason !== 'cancelled' && reason !== 'timed_out' && record?.lease?.ended === true && record.lease.token === lease
      if (!endedByItsWorker) news = true
    }
    return { found, news }
  }

  /**
   * Takes back jobs whose worker stopped heartbeating: re-queued with their checkpoint while
   * attempts remain, else failed with `worker_lost`. Runs every sweep tick.
   */
  async reclaimLapsed(): Promise<number> {
    const now = this.now()
    // All at once, as one group commit (SQLite) or one script call (Redis): one after another, the
    // 250 jobs of a worker that died took 250 round trips to go back to the queue.
    const lapsed = await this.store.expiredLeases(now, 200)
    const outcomes = await Promise.all(lapsed.map((jobId) => this.store.append(jobId, (job, lease) => reclaimPlan(job, lease, now)).catch(() => null)))
    return outcomes.filter((result) => result !== null && result.events.length > 0).length
  }
}

/** What a lease that lapsed at `now` leaves of its job: re-queued while attempts remain, else failed with `worker_lost`. */
function reclaimPlan(job: JobState, lease: Lease | null, now: number): ReturnType<AppendPlan> {
  if (lease === null || lease.ended === true || lease.expiresAt >= now || isTerminal(job.status)) return []
  if (job.attempt >= job.maxAttempts) {
    return {
      events: [
        {
          type: 'failed',
          data: {
            code: 'worker_lost',
            message: `Worker ${lease.worker} stopped heartbeating on attempt ${job.attempt} of ${job.maxAttempts}`,
            retryable: false,
          },
        },
      ],
      lease: null,
    }
  }
  return {
    events: [{ type: 'requeued', data: { reason: 'worker_lost', attempt: job.attempt, retryAt: null, ...textRewind(job, job.text.length) } }],
    lease: null,
    availableAt: 0,
  }
}

/**
 * A waiting claim, as its job types' queues see it. `armed` while it will look at the queue after
 * a signal it is handed (it is waiting, or looking and would look again); `wake` hands it one.
 */
interface QueueWaiter {
  armed: boolean
  wake(): void
}

/**
 * The queue subscriptions of waiting claims, one per job type on this node, kept for
 * `queueLingerMs` after the last claim of the type ended so that the next one finds it open.
 *
 * A signal (a job of the type entered or left the queue) wakes one waiting claim, the one waiting
 * longest, not all of them: a hundred idle workers would otherwise each run a claim for every job
 * created, and all but one find nothing. A woken claim that ends without looking again, or that
 * took as many jobs as it asked for, passes the signal on (`pass`), so no ready job is left with
 * claims waiting; a job that becomes ready without a signal (a retry's backoff ending) is found by
 * the type's periodic re-check, which wakes one waiting claim every `recheckMs`.
 */
class QueueWatch {
  readonly #types = new Map<string, QueueEntry>()

  constructor(
    private readonly store: () => Store,
    private readonly recheckMs: number,
  ) {}

  /** Hands `waiter` signals of `type` from now on (listen first, then look). */
  listen(type: string, waiter: QueueWaiter): Unsubscribe {
    let entry = this.#types.get(type)
    if (entry === undefined) {
      const waiters = new Set<QueueWaiter>()
      const unsubscribe = this.store().subscribeQueue(type, () => wakeOne(waiters))
      entry = { waiters, unsubscribe, idle: null, recheck: null }
      this.#types.set(type, entry)
    }
    if (entry.idle !== null) clearTimeout(entry.idle)
    entry.idle = null
    const held = entry
    held.waiters.add(waiter)
    // One claim of the type looks again every so often, not each of them: what it finds it takes,
    // and passes on when there may be more.
    if (held.recheck === null) {
      held.recheck = setInterval(() => wakeOne(held.waiters), this.recheckMs)
      held.recheck.unref()
    }
    return () => {
      if (!held.waiters.delete(waiter) || held.waiters.size > 0) return
      if (held.recheck !== null) clearInterval(held.recheck)
      held.recheck = null
      held.idle = setTimeout(() => this.#drop(type, held), queueLingerMs)
      held.idle.unref()
    }
  }

  /** Wakes the next waiting claim of each of `types` (one claim at most once). */
  pass(types: readonly string[]): void {
    for (const type of types) {
      const entry = this.#types.get(type)
      if (entry !== undefined) wakeOne(entry.waiters)
    }
  }

  close(): void {
    for (const [type, entry] of this.#types) this.#drop(type, entry)
  }

  #drop(type: string, entry: QueueEntry): void {
    if (entry.idle !== null) clearTimeout(entry.idle)
    if (entry.recheck !== null) clearInterval(entry.recheck)
    entry.recheck = null
    if (this.#types.get(type) === entry) this.#types.delete(type)
    entry.unsubscribe()
  }
}

interface QueueEntry {
  waiters: Set<QueueWaiter>
  unsubscribe: Unsubscribe
  /** Ends the subscription once no claim has waited for `queueLingerMs`. */
  idle: ReturnType<typeof setTimeout> | null
  /** Wakes one waiting claim every `recheckMs`, while any waits. */
  recheck: ReturnType<typeof setInterval> | null
}

/** Wakes the armed waiter that has waited longest (a Set keeps the order waiters came in). */
function wakeOne(waiters: ReadonlySet<QueueWaiter>): void {
  for (const waiter of waiters) {
    if (!waiter.armed) continue
    waiter.armed = false
    waiter.wake()
    return
  }
}
