import { randomUUID } from 'node:crypto'
import { isTerminal, isTerminalEvent, JobwireError, type JobEvent, type JobState, type JobStatus, type StreamMessage } from '@jobwire/protocol'
import type { SubscriptionStart } from './observer.js'
import type { Store, Unsubscribe } from './store.js'

/** Where a subscription delivers. Transports implement it; they only encode. */
export interface StreamSink {
  /**
   * Messages in order. Called synchronously from the commit that produced them; `publishedAt`
   * (`performance.now()` at fan-out) is given for live events, not for replays and snapshots.
   */
  write(messages: readonly StreamMessage[], publishedAt?: number): void
  /**
   * Consecutive events of the job, each the next seq, in order: the same as `write` with one
   * `event` message each. Live batches come as the array the store published, the same object for
   * every subscriber of the job, so a transport can encode it once for all of them (never mutate
   * it). A sink without it gets `write`.
   */
  events?(batch: readonly JobEvent[], publishedAt?: number): void
  /** The subscription is over: after a terminal event, or after an error message. */
  end(): void
}

/**
 * Told when a sink threw while taking events (one it could not encode, a broken socket): the
 * subscription ended with an `internal` error carrying `errorId`, and the watcher resumes from
 * `after`, the last seq it was given.
 */
export type DeliveryFailure = (failure: { jobId: string; after: number; seq: number; errorId: string; error: unknown }) => void

/**
 * Where a stream opens: a snapshot (no position given, or one the log no longer holds: `reset`),
 * or the events after a position — one page of at most the page size; `head` is the job's last
 * seq, so `events` ending before it means more is waiting.
 */
export type Opening =
  | { kind: 'snapshot'; job: JobState; reset: boolean }
  | { kind: 'replay'; after: number; events: JobEvent[]; head: number; status: JobStatus }

/**
 * Opens a job's stream at a position, the one way SSE, WebSocket (through JobSubscription) and
 * long-poll do: without `after`, a snapshot with its queue position; after seq N, up to `pageSize`
 * events after N; from a position the log no longer holds, a snapshot marked reset. Rejects with
 * `job_not_found`, or `position_ahead` when `after` is beyond the job's last event.
 */
export async function openAt(store: Store, jobId: string, after: number | undefined, pageSize: number): Promise<Opening> {
  if (after === undefined) return { kind: 'snapshot', job: await snapshotOf(store, jobId), reset: false }
  const range = await store.readLog(jobId, after, pageSize)
  if (range === null) throw new JobwireError('job_not_found', { jobId })
  if (after > range.head) throw positionAhead(jobId, after, range.head)
  if (range.firstSeq > after + 1) return { kind: 'snapshot', job: await snapshotOf(store, jobId), reset: true }
  return { kind: 'replay', after, events: range.events, head: range.head, status: range.status }
}

/**
 * Checks a position against a job's state before a stream is opened (SSE answers these as plain
 * HTTP): throws `position_ahead` beyond its last event; true when the job is finished and `after`
 * is its last event, so nothing will ever come.
 */
export function endsAt(job: JobState, after: number | undefined): boolean {
  if (after === undefined) return false
  if (after > job.seq) throw positionAhead(job.id, after, job.seq)
  return after === job.seq && isTerminal(job.status)
}

function positionAhead(jobId: string, position: number, seq: number): JobwireError {
  return new JobwireError('position_ahead', { jobId, position, seq })
}

/** The job's snapshot with its queue position filled in while it waits for a worker; `job_not_found` if there is none. */
async function snapshotOf(store: Store, jobId: string): Promise<JobState> {
  const job = await store.getJob(jobId)
  if (job === null) throw new JobwireError('job_not_found', { jobId })
  return withQueuePosition(store, job)
}

/** The job, with its queue position filled in while it waits in a dispatch queue. */
export async function withQueuePosition<J extends Pick<JobState, 'id' | 'status' | 'dispatch' | 'queuePosition'>>(store: Store, job: J): Promise<J> {
  if (job.status !== 'queued' || !job.dispatch) return job
  return { ...job, queuePosition: await store.queuePosition(job.id) }
}

/**
 * One watcher's view of one job: a snapshot or an exact replay, then live events, with no gap and
 * no duplicate across the hand-off. The live listener is registered before anything is read, so
 * events committed meanwhile are buffered; anything that does not follow the last delivered seq
 * is fetched from the log rather than skipped. If the log no longer holds what is missing, the
 * subscriber gets a snapshot marked `reset` — never a silent gap.
 */
export class JobSubscription {
  #last = 0
  #knownHead = 0
  #pending: JobEvent[] = []
  #catchingUp = true
  /** The store said events may have been missed: read the log once more before going live. */
  #recheck = false
  #closed = false
  #unsubscribe: Unsubscribe | null = null
  /** Whether the job waits in a dispatch queue; while it does, position changes are sent as `queue` messages. */
  #queued = false
  #queueUnsubscribe: Unsubscribe | null = null
  #queueTimer: NodeJS.Timeout | null = null
  #queuePosition: number | null = null

  constructor(
    private readonly store: Store,
    readonly jobId: string,
    private readonly sink: StreamSink,
    private readonly pageSize: number,
    /** Told how the subscription began, and of each later reset (metrics). */
    private readonly onStart: (start: SubscriptionStart) => void = () => {},
    /** Told when the sink failed to take events (logs). */
    private readonly onDeliveryFailed: DeliveryFailure = () => {},
    /** Called once when the subscription closes, however it closes. */
    private readonly onClosed: () => void = () => {},
  ) {}

  /** Seq of the last event (or snapshot) delivered. */
  get position(): number {
    return this.#last
  }

  get closed(): boolean {
    return this.#closed
  }

  /**
   * Starts delivering. Rejects with `job_not_found` before anything is written, and with
   * `position_ahead` when `after` is beyond the job's last event.
   */
  async start(after: number | undefined): Promise<void> {
    this.#unsubscribe = this.store.subscribe(this.jobId, (events, publishedAt) => this.#onLive(events, publishedAt))
    try {
      const opening = await openAt(this.store, this.jobId, after, this.pageSize)
      if (this.#closed) return
      if (opening.kind === 'snapshot') {
        this.#snapshot(opening.job, opening.reset)
      } else {
        this.#last = opening.after
        this.#knownHead = opening.head
        this.#queued = opening.status === 'queued'
        this.onStart('recovered')
        this.sink.write([{ type: 'recovered', after: opening.after }])
        this.#deliver(opening.events)
        if (!this.#closed && opening.head === this.#last && isTerminal(opening.status)) this.close()
      }
    } catch (error) {
      this.close(false)
      throw error
    }
    if (!this.#closed) await this.#catchUp()
  }

  close(notify = true): void {
    if (this.#closed) return
    this.#closed = true
    this.onClosed()
    this.#unsubscribe?.()
    this.#stopFollowingQueue()
    this.#pending = []
    if (notify) this.sink.end()
  }

  #onLive(events: readonly JobEvent[], publishedAt: number | undefined): void {
    // Called by the fan-out for every subscriber of the job in turn: whatever goes wrong here ends
    // this subscription (#deliver says how), never the others'.
    if (this.#closed) return
    if (events.length === 0) {
      this.#recheck = true
      if (!this.#catchingUp) {
        this.#catchingUp = true
        void this.#catchUp()
      }
      return
    }
    if (this.#catchingUp) {
      for (const event of events) this.#pending.push(event)
      return
    }
    const first = events[0]
    if (first !== undefined && first.seq > this.#last + 1) {
      // Something is missing between what we delivered and this batch: fetch it from the log.
      for (const event of events) this.#pending.push(event)
      this.#catchingUp = true
      void this.#catchUp()
      return
    }
    this.#deliver(events, publishedAt)
  }

  /** Delivers the events that extend the last seq, drops the ones already delivered. */
  #deliver(events: readonly JobEvent[], publishedAt?: number): void {
    // A live batch in order (the usual case) goes to the sink as it is: the array the store
    // published, shared by every subscriber of the job. Otherwise only the events that extend the
    // last seq, from the first one that does not on.
    let picked: JobEvent[] | null = null
    let seq = this.#last
    for (let i = 0; i < events.length; i++) {
      const event = events[i] as JobEvent
      if (event.seq === seq + 1) {
        seq = event.seq
        picked?.push(event)
      } else {
        picked ??= events.slice(0, i)
      }
    }
    let batch: readonly JobEvent[] = picked ?? events
    let terminal = false
    let queueChanged = false
    for (let i = 0; i < batch.length; i++) {
      const event = batch[i] as JobEvent
      const queued = event.type === 'requeued' || (this.#queued && event.type !== 'started' && !isTerminalEvent(event.type))
      if (queued !== this.#queued) {
        this.#queued = queued
        queueChanged = true
      }
      if (isTerminalEvent(event.type)) {
        terminal = true
        // Nothing follows a terminal event (the state machine refuses it), but never send past one.
        if (i < batch.length - 1) batch = batch.slice(0, i + 1)
        break
      }
    }
    const last = batch[batch.length - 1]
    if (last !== undefined) {
      try {
        if (this.sink.events !== undefined) this.sink.events(batch, publishedAt)
        else this.sink.write(batch.map((event) => ({ type: 'event', event })), publishedAt)
      } catch (error) {
        this.#deliveryFailed(error, (batch[0] as JobEvent).seq)
        return
      }
      // The position moves only past what the sink took.
      this.#last = last.seq
    }
    if (this.#last > this.#knownHead) this.#knownHead = this.#last
    if (terminal) this.close()
    else if (queueChanged && !this.#catchingUp) void this.#followQueue()
  }

  #snapshot(job: JobState, reset: boolean): void {
    this.onStart(reset ? 'reset' : 'initial')
    try {
      this.sink.write([{ type: 'snapshot', job, reset, reason: reset ? 'trimmed' : 'initial' }])
    } catch (error) {
      this.#deliveryFailed(error, job.seq)
      return
    }
    this.#last = job.seq
    this.#queued = job.status === 'queued'
    this.#queuePosition = job.queuePosition
    this.#knownHead = Math.max(this.#knownHead, job.seq)
    if (isTerminal(job.status)) this.close()
  }

  async #resetFromSnapshot(): Promise<void> {
    const job = await this.store.getJob(this.jobId)
    if (this.#closed) return
    if (job === null) {
      this.#fail(new JobwireError('job_not_found', { jobId: this.jobId }))
      return
    }
    this.#snapshot(await withQueuePosition(this.store, job), true)
  }

  /** Starts or stops following the queue as the job enters or leaves it. */
  async #followQueue(): Promise<void> {
    if (!this.#queued) {
      this.#stopFollowingQueue()
      return
    }
    if (this.#queueUnsubscribe !== null) return
    // Called without awaiting: a store that is briefly unreachable costs queue positions, not the process.
    const job = await this.store.getJob(this.jobId).catch(() => null)
    if (this.#closed || job === null || !job.dispatch || this.#queueUnsubscribe !== null) return
    this.#queueUnsubscribe = this.store.subscribeQueue(job.type, () => this.#queueMoved())
    this.#queueMoved()
  }

  #stopFollowingQueue(): void {
    this.#queueUnsubscribe?.()
    this.#queueUnsubscribe = null
    if (this.#queueTimer !== null) clearTimeout(this.#queueTimer)
    this.#queueTimer = null
  }

  /** Recomputes the position at most every 100 ms however busy the queue is. */
  #queueMoved(): void {
    if (this.#queueTimer !== null || this.#closed) return
    this.#queueTimer = setTimeout(() => {
      this.#queueTimer = null
      this.store.queuePosition(this.jobId).then(
        (position) => {
          if (this.#closed || !this.#queued || position === this.#queuePosition) return
          this.#queuePosition = position
          this.sink.write([{ type: 'queue', position }])
        },
        () => undefined,
      )
    }, 100)
    this.#queueTimer.unref()
  }

  /** Drains buffered live events, reading the log for whatever they skip, until live again. */
  async #catchUp(): Promise<void> {
    try {
      while (!this.#closed) {
        const pending = this.#pending
        this.#pending = []
        pending.sort((a, b) => a.seq - b.seq)
        this.#deliver(pending)
        if (this.#closed) return
        const behind = pending.some((event) => event.seq > this.#last) || this.#knownHead > this.#last
        if (!behind && this.#pending.length === 0 && !this.#recheck) {
          this.#catchingUp = false
          void this.#followQueue()
          return
        }
        // Keep what is still ahead; the log fills the hole in front of it.
        for (const event of pending) if (event.seq > this.#last) this.#pending.push(event)
        this.#recheck = false
        const range = await this.store.readLog(this.jobId, this.#last, this.pageSize)
        if (this.#closed) return
        if (range === null) {
          this.#fail(new JobwireError('job_not_found', { jobId: this.jobId }))
          return
        }
        this.#knownHead = Math.max(this.#knownHead, range.head)
        if (range.firstSeq > this.#last + 1) await this.#resetFromSnapshot()
        else this.#deliver(range.events)
      }
    } catch (error) {
      this.#fail(
        error instanceof JobwireError ? error : new JobwireError('unavailable', { reason: (error as Error).message }),
      )
    }
  }

  /**
   * The sink threw while taking events from `seq` on: it ends with a retryable `internal` error
   * naming the last seq it was given, so the watcher resumes from there and misses nothing.
   */
  #deliveryFailed(error: unknown, seq: number): void {
    const errorId = randomUUID()
    this.onDeliveryFailed({ jobId: this.jobId, after: this.#last, seq, errorId, error })
    this.#fail(new JobwireError('internal', { requestId: errorId, jobId: this.jobId, after: this.#last }))
  }

  #fail(error: JobwireError): void {
    if (this.#closed) return
    try {
      this.sink.write([{ type: 'error', error: error.toBody() }])
    } catch {
      // A sink that cannot take even the error frame still hears the end below.
    }
    this.close()
  }
}
