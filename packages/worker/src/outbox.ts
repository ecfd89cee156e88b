import type { ItemStatus, Metadata, ProducerEvent } from '@jobwire/protocol'
import { WorkerRequestError } from './api.js'
import { JobAbortedError, type AbortReason } from './errors.js'
import { backoffDelay, deferred, LazyAbort, sleep, type Backoff, type Deferred, type Timers } from './timing.js'

/** What one request may carry. The server's defaults are 1,000 events, 64 KiB per event, 1 MiB per body. */
export interface BatchLimits {
  /** Events per batch. Default 1,000. */
  maxBatchEvents: number
  /** Bytes of one event's JSON; longer text is split into several chunks. Default 60,000. */
  maxEventBytes: number
  /** Bytes of all events' JSON in one batch. Default 900,000. */
  maxBatchBytes: number
  /**
   * Bytes of a result's or a checkpoint's JSON: the server's `--max-value-bytes`. One above
   * `maxEventBytes` goes in a request of its own and is stored apart by the server. Default 16 MiB.
   */
  maxValueBytes: number
}

export const defaultLimits: BatchLimits = { maxBatchEvents: 1_000, maxEventBytes: 60_000, maxBatchBytes: 900_000, maxValueBytes: 16 * 1024 * 1024 }

export interface ProgressUpdate {
  stage?: string
  percent?: number
  message?: string
  /** How far the stage is, 0–1, for a job with a stage plan: the server computes the overall percent. */
  fraction?: number
  /** App data merged into the job's progress metadata (latest wins per key; `null` removes a key). */
  metadata?: Metadata
}

export interface ItemUpdate {
  label?: string
  status?: ItemStatus
  percent?: number
  message?: string
  /** App data merged into the item's metadata (latest wins per key; `null` removes a key). */
  metadata?: Metadata
}

export interface OutboxOptions {
  throttleMs: number
  /** The job's stage when it was claimed, so repeating it is not a stage change. */
  stage: string | null
  limits: BatchLimits
  timers: Timers
  random: () => number
  backoff: Backoff
  /** One attempt to append batch number `batch` (1, 2, 3… per lease); `abort` fires when the outbox is killed. */
  send(batch: number, events: ProducerEvent[], abort: LazyAbort): Promise<unknown>
  /** A transient failure; the same batch is sent again after a backoff. */
  onRetry(error: unknown): void
  /**
   * A final answer: for `rejected` the outbox has dropped what it held and now sends one
   * `failed` with the server's code; for the other reasons it has stopped.
   */
  onEnd(reason: AbortReason, error: unknown): void
}

interface Entry {
  event: ProducerEvent
  /** Bytes of the event's JSON (chunks are measured when they are split). */
  bytes: number
  /** Position in the order of reports; an entry is delivered when `delivered >= n`. */
  n: number
}

const chunkOverhead = byteLength(JSON.stringify({ type: 'chunk', text: '' }))

/**
 * One job's reports on their way to the server, in order, one batch in flight at a time.
 *
 * Progress, item updates and text wait in a pending area and are sent at most once per
 * `throttleMs` (progress: latest wins; items: latest wins per id, fields merged; text:
 * concatenated). A stage change, a checkpoint and the terminal event move everything pending
 * into the queue and go at once, so no stage is skipped and nothing overtakes them. A failed
 * request is retried with the same batch number, so the server applies each batch once.
 */
export class Outbox {
  private readonly queue: Entry[] = []
  private pendingProgress: ProgressUpdate | null = null
  private readonly pendingItems = new Map<string, ItemUpdate>()
  private pendingText = ''
  private throttleTimer: unknown = null
  private lastFlushAt = Number.NEGATIVE_INFINITY
  private stage: string | null
  private batchNumber = 0
  private enqueued = 0
  private delivered = 0
  private waiters: { n: number; deferred: Deferred<void> }[] = []
  private draining: Promise<void> | null = null
  private open = true
  private replacedOnce = false
  private ended: JobAbortedError | null = null
  private readonly controller = new LazyAbort()

  constructor(private readonly options: OutboxOptions) {
    this.stage = options.stage
  }

  /** Whether reports are still taken (false once closing, finishing or ended). */
  get accepting(): boolean {
    return this.open && this.ended === null
  }

  progress(update: ProgressUpdate): void {
    if (!this.accepting) return
    if (update.stage !== undefined && update.stage !== this.stage) {
      // The previous stage's last progress goes first, then the new stage, undelayed.
      this.flushPending()
      this.stage = update.stage
      this.enqueue({ type: 'progress', ...update })
      this.lastFlushAt = this.options.timers.now()
      void this.pump()
      return
    }
    this.pendingProgress = merge(this.pendingProgress ?? {}, update)
    this.schedule()
  }

  item(id: string, update: ItemUpdate): void {
    if (!this.accepting) return
    this.pendingItems.set(id, merge(this.pendingItems.get(id) ?? {}, update))
    this.schedule()
  }

  chunk(text: string): void {
    if (!this.accepting || text === '') return
    this.pendingText += text
    this.schedule()
  }

  /** Resolves once `data` (and everything reported before it) is durable on the server. */
  checkpoint(data: unknown, bytes: number): Promise<void> {
    if (!this.accepting) return this.refused()
    this.flushPending()
    const n = this.enqueue({ type: 'checkpoint', data }, bytes)
    void this.pump()
    return this.until(n)
  }

  /** Sends what is pending now; resolves once everything reported so far is durable. */
  flush(): Promise<void> {
    if (this.ended !== null) return this.refused()
    this.flushPending()
    void this.pump()
    return this.until(this.enqueued)
  }

  /** Sends what is pending, then `event`, and takes no more reports; resolves when done or ended. */
  finish(event: Extract<ProducerEvent, { type: 'completed' | 'failed' }>): Promise<void> {
    if (this.accepting) {
      this.flushPending()
      this.open = false
      this.enqueue(event)
    }
    return this.idle()
  }

  /** Takes no more reports, sends what is pending; resolves when done or ended. */
  close(): Promise<void> {
    if (this.accepting) {
      this.flushPending()
      this.open = false
    }
    return this.idle()
  }

  /** Stops at once: drops what is not sent, abandons the request in flight, rejects waiting checkpoints. */
  kill(reason: AbortReason): void {
    if (this.ended !== null) return
    this.ended = new JobAbortedError(reason)
    this.open = false
    this.controller.abort(this.ended)
    if (this.throttleTimer !== null) this.options.timers.clearTimeout(this.throttleTimer)
    this.throttleTimer = null
    this.pendingProgress = null
    this.pendingItems.clear()
    this.pendingText = ''
    this.queue.length = 0
    this.rejectWaiters(this.ended)
  }

  /** Resolves when nothing is queued or in flight, or the outbox ended. */
  private async idle(): Promise<void> {
    while (this.ended === null && (this.queue.length > 0 || this.draining !== null)) await this.pump()
  }

  private refused(): Promise<void> {
    const promise = Promise.reject(this.ended ?? new Error('The job no longer takes reports'))
    promise.catch(() => {})
    return promise
  }

  private until(n: number): Promise<void> {
    if (this.ended !== null) return this.refused()
    if (this.delivered >= n) return Promise.resolve()
    const waiter = { n, deferred: deferred<void>() }
    this.waiters.push(waiter)
    // A handler that fires and forgets must not crash the process when the job is cancelled.
    waiter.deferred.promise.catch(() => {})
    return waiter.deferred.promise
  }

  private rejectWaiters(error: Error): void {
    const waiters = this.waiters
    this.waiters = []
    for (const waiter of waiters) waiter.deferred.reject(error)
  }

  private enqueue(event: ProducerEvent, bytes = byteLength(JSON.stringify(event))): number {
    this.enqueued += 1
    this.queue.push({ event, bytes, n: this.enqueued })
    return this.enqueued
  }

  private schedule(): void {
    if (this.throttleTimer !== null) return
    const { timers, throttleMs } = this.options
    const now = timers.now()
    const due = this.lastFlushAt + throttleMs
    if (due <= now) {
      this.flushPending()
      void this.pump()
      return
    }
    // Throttled sends fall on a clock shared by every job of this worker (a grid of a quarter of
    // the throttle), so the reports of many running jobs come due together and go out in one bulk
    // request instead of one request each; it delays a send by at most a quarter of the throttle.
    const grid = Math.max(1, throttleMs / 4)
    const wait = Math.ceil(due / grid) * grid - now
    if (wait <= 0) {
      this.flushPending()
      void this.pump()
      return
    }
    this.throttleTimer = timers.setTimeout(() => {
      this.throttleTimer = null
      this.flushPending()
      void this.pump()
    }, wait)
  }

  /** Moves the pending progress, items and text into the queue. */
  private flushPending(): void {
    if (this.throttleTimer !== null) this.options.timers.clearTimeout(this.throttleTimer)
    this.throttleTimer = null
    if (this.pendingProgress === null && this.pendingItems.size === 0 && this.pendingText === '') return
    this.lastFlushAt = this.options.timers.now()
    if (this.pendingProgress !== null) this.enqueue({ type: 'progress', ...this.pendingProgress })
    for (const [id, item] of this.pendingItems) this.enqueue({ type: 'item', id, ...item })
    if (this.pendingText !== '') {
      const last = this.queue.at(-1)
      if (last?.event.type === 'chunk') {
        last.event = { type: 'chunk', text: last.event.text + this.pendingText }
        last.n = ++this.enqueued
      } else {
        this.enqueue({ type: 'chunk', text: this.pendingText }, 0)
      }
    }
    this.pendingProgress = null
    this.pendingItems.clear()
    this.pendingText = ''
  }

  private pump(): Promise<void> {
    if (this.draining === null && this.queue.length > 0 && this.ended === null) {
      this.draining = this.drain()
        .catch((error: unknown) => this.end('rejected', error))
        .finally(() => {
          this.draining = null
          // Something may have been queued between the loop's last check and now.
          if (this.queue.length > 0) void this.pump()
        })
    }
    return this.draining ?? Promise.resolve()
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0 && this.ended === null) {
      const { events, lastN } = this.takeBatch()
      const outcome = await this.deliver(this.batchNumber + 1, events)
      if (outcome === 'killed') return
      if (outcome === 'sent') {
        this.batchNumber += 1
        this.delivered = lastN
        const ready = this.waiters.filter((waiter) => waiter.n <= lastN)
        this.waiters = this.waiters.filter((waiter) => waiter.n > lastN)
        for (const waiter of ready) waiter.deferred.resolve()
        continue
      }
      const reason = abortReasonOf(outcome)
      if (reason !== 'rejected' || this.replacedOnce) {
        this.end(reason, outcome)
        return
      }
      // A refused batch was not applied (batches are atomic), so its number is used again for
      // the `failed` that replaces everything: the job must not stay running with a hole in it.
      this.replacedOnce = true
      this.open = false
      this.queue.length = 0
      this.pendingProgress = null
      this.pendingItems.clear()
      this.pendingText = ''
      this.rejectWaiters(new JobAbortedError('rejected', outcome instanceof Error ? outcome.message : String(outcome)))
      const code = outcome instanceof WorkerRequestError ? outcome.code : 'internal'
      const message = outcome instanceof Error ? outcome.message : String(outcome)
      this.enqueue({ type: 'failed', code: code.slice(0, 100), message: message.slice(0, 2_000), retryable: false })
      this.options.onEnd('rejected', outcome)
    }
  }

  private end(reason: AbortReason, error: unknown): void {
    if (this.ended !== null) return
    this.kill(reason)
    this.options.onEnd(reason, error)
  }

  /** Sends one batch until it is applied, refused for good, or the outbox is killed. */
  private async deliver(batch: number, events: ProducerEvent[]): Promise<'sent' | 'killed' | WorkerRequestError> {
    const { timers, backoff, random } = this.options
    for (let attempt = 1; ; attempt++) {
      try {
        await this.options.send(batch, events, this.controller)
        return 'sent'
      } catch (error) {
        if (this.controller.aborted) return 'killed'
        if (error instanceof WorkerRequestError && !error.transient) return error
        this.options.onRetry(error)
        if (!(await sleep(timers, backoffDelay(backoff, attempt, random, error), this.controller.signal))) return 'killed'
      }
    }
  }

  /**
   * Takes the next batch off the queue within the limits, splitting long text. Of several
   * checkpoints in one batch only the last is sent: the batch is applied atomically, so no one
   * can observe the earlier ones.
   */
  private takeBatch(): { events: ProducerEvent[]; lastN: number } {
    const { maxBatchEvents, maxEventBytes, maxBatchBytes } = this.options.limits
    const events: ProducerEvent[] = []
    let bytes = 0
    let lastN = this.delivered
    let checkpointAt = -1
    while (events.length < maxBatchEvents) {
      const entry = this.queue[0]
      if (entry === undefined) break
      if (entry.event.type === 'chunk') {
        const text = entry.event.text
        const budget = Math.min(maxEventBytes, maxBatchBytes - bytes) - chunkOverhead
        // Rather than a sliver of text at the end of a full batch, start the next one.
        if (events.length > 0 && budget < Math.min(1_024, maxEventBytes / 2)) break
        const { end, size } = fitText(text, budget)
        if (end === 0) {
          if (events.length > 0) break
          throw new RangeError(`maxEventBytes ${maxEventBytes} cannot hold one character of text`)
        }
        events.push({ type: 'chunk', text: text.slice(0, end) })
        bytes += size + chunkOverhead + 1
        if (end < text.length) {
          entry.event = { type: 'chunk', text: text.slice(end) }
          continue
        }
      } else {
        if (events.length > 0 && bytes + entry.bytes > maxBatchBytes) break
        if (entry.event.type === 'checkpoint') {
          if (checkpointAt !== -1) {
            const [dropped] = events.splice(checkpointAt, 1)
            bytes -= dropped === undefined ? 0 : byteLength(JSON.stringify(dropped)) + 1
          }
          checkpointAt = events.length
        }
        events.push(entry.event)
        bytes += entry.bytes + 1
      }
      this.queue.shift()
      lastN = entry.n
    }
    return { events, lastN }
  }
}

/** Where a final answer to a batch leaves the job. */
function abortReasonOf(error: WorkerRequestError): AbortReason {
  if (error.code === 'lease_lost' || error.code === 'job_not_found') return 'lease_lost'
  if (error.code === 'job_finished') return error.details?.['status'] === 'cancelled' ? 'cancelled' : 'finished'
  return 'rejected'
}

function merge<T extends ProgressUpdate | ItemUpdate>(into: T, update: T): T {
  // Copied key by key into a new object: a spread copy (`{ ...into }`) takes a map of its own in V8,
  // and each key then added to it (one `into` lacks) took the slow path: ~5 µs per merge against ~0.4.
  const merged: Record<string, unknown> = {}
  for (const key of Object.keys(into)) merged[key] = (into as Record<string, unknown>)[key]
  for (const key of Object.keys(update)) {
    const value = (update as Record<string, unknown>)[key]
    if (value !== undefined) merged[key] = value
  }
  // Metadata coalesces per key, as the server merges it; a `null` must reach the server to remove a key.
  if (into.metadata !== undefined && update.metadata !== undefined) merged.metadata = { ...into.metadata, ...update.metadata }
  return merged as T
}

function byteLength(json: string): number {
  return Buffer.byteLength(json, 'utf8')
}

/**
 * How much of `text` fits in `budget` bytes once JSON-encoded as UTF-8: the end index (never
 * inside a surrogate pair) and the encoded size.
 */
export function fitText(text: string, budget: number): { end: number; size: number } {
  let size = 0
  let i = 0
  while (i < text.length) {
    const c = text.charCodeAt(i)
    let cost: number
    let units = 1
    if (c < 0x20) cost = c === 0x08 || c === 0x09 || c === 0x0a || c === 0x0c || c === 0x0d ? 2 : 6
    else if (c === 0x22 || c === 0x5c) cost = 2
    else if (c < 0x80) cost = 1
    else if (c < 0x800) cost = 2
    else if (c >= 0xd800 && c <= 0xdbff && isLowSurrogate(text.charCodeAt(i + 1))) {
      cost = 4
      units = 2
    } else if (c >= 0xd800 && c <= 0xdfff) cost = 6 // a lone surrogate is escaped as \udxxx
    else cost = 3
    if (size + cost > budget) break
    size += cost
    i += units
  }
  return { end: i, size }
}

function isLowSurrogate(code: number): boolean {
  return code >= 0xdc00 && code <= 0xdfff
}
