import type { JobEvent } from '@jobwire/protocol'
import { atEndOfTurn } from '../core/turn.js'

/**
 * Something derived once per published batch — the same array for every subscriber of the job
 * (see `StreamSink.events`) — such as its encoding. The fan-out hands a batch to the job's
 * subscribers one after another, so the last batch is all it keeps: a batch met again later (none
 * is, in practice) is derived again. (It kept every batch in a WeakMap too: a set per batch and an
 * entry for the collector, on every write with one watcher, for nothing.)
 */
export class PerBatch<T> {
  #lastBatch: readonly JobEvent[] | null = null
  #lastValue: T | null = null

  constructor(private readonly derive: (batch: readonly JobEvent[]) => T) {}

  get(batch: readonly JobEvent[]): T {
    if (batch === this.#lastBatch) return this.#lastValue as T
    const value = this.derive(batch)
    this.#lastBatch = batch
    this.#lastValue = value
    return value
  }
}

/**
 * What a connection's pending writes hold, as far as sharing goes: while they are exactly the
 * consecutive events `first`..`last` of one job (what live fan-out leaves on every subscriber of
 * the job), their bytes can be shared within a flush (`TickFlusher.bytesOf`).
 */
export class PendingRun {
  active = false
  jobId = ''
  first = 0
  last = 0

  /** Events `first`..`last` of `jobId` were queued behind what was pending (`wasEmpty`: nothing). */
  extend(wasEmpty: boolean, jobId: string, first: number, last: number): void {
    if (wasEmpty) {
      this.active = true
      this.jobId = jobId
      this.first = first
      this.last = last
    } else if (this.active && first === this.last + 1 && jobId === this.jobId) {
      this.last = last
    } else {
      this.active = false
    }
  }

  /** Something else was queued (or pending entries merged): the bytes are this connection's own. */
  end(): void {
    this.active = false
  }
}

/** Hears a transport's publish→deliver latency, in seconds (metrics). */
export type DeliveryObserver = (seconds: number) => void

/**
 * Per-tick write coalescing shared by the SSE and WebSocket transports: connections with something
 * to send are flushed together by one setImmediate, so everything written to a socket in one turn
 * of the event loop leaves in one write. What live fan-out leaves pending on each subscriber is the
 * same run of events of one job, so that run is turned into bytes once per flush and the same
 * Buffer goes to every connection that has it pending.
 */
export class TickFlusher<C extends { flush(): void }> {
  #dirty = new Set<C>()
  /**
   * The set a flush walks, swapped with #dirty so that the connections it flushes are not deleted
   * from it one by one (each delete may shrink the set's table, garbage that outlives the turn).
   */
  #walking = new Set<C>()
  #scheduled = false
  #shared: { jobId: string; first: number; last: number; bytes: Buffer } | null = null
  #flushing = false
  /** Per latency observer: the oldest fan-out time among the live events written in this flush. */
  readonly #oldest = new Map<DeliveryObserver, number>()

  schedule(connection: C): void {
    this.#dirty.add(connection)
    if (this.#scheduled) return
    this.#scheduled = true
    atEndOfTurn(() => this.#flushAll())
  }

  /** The connection flushed (or ended) on its own. */
  forget(connection: C): void {
    this.#dirty.delete(connection)
  }

  /**
   * The bytes of a connection's pending `text()`. While that is a run of events (`run.active`),
   * connections with the same run pending share one Buffer within a flush, and only the first of
   * them builds the text.
   */
  bytesOf(run: PendingRun, text: () => string): Buffer {
    if (!run.active) return Buffer.from(text())
    const { jobId, first, last } = run
    const shared = this.#shared
    if (shared !== null && shared.jobId === jobId && shared.first === first && shared.last === last) return shared.bytes
    this.#shared = { jobId, first, last, bytes: Buffer.from(text()) }
    return this.#shared.bytes
  }

  /**
   * A connection wrote live events that reached the fan-out at `publishedAt` (`performance.now()`).
   * Within a flush, each observer hears once, when the flush is done: the latency of the oldest
   * event any of its connections wrote (cheap: one clock read per flush, not per socket or event).
   */
  delivered(observer: DeliveryObserver, publishedAt: number): void {
    if (!this.#flushing) {
      observer((performance.now() - publishedAt) / 1000)
      return
    }
    const oldest = this.#oldest.get(observer)
    if (oldest === undefined || publishedAt < oldest) this.#oldest.set(observer, publishedAt)
  }

  #flushAll(): void {
    this.#scheduled = false
    this.#shared = null
    this.#flushing = true
    const walking = this.#dirty
    this.#dirty = this.#walking
    this.#walking = walking
    let done = false
    try {
      for (const connection of walking) connection.flush()
      done = true
    } finally {
      this.#flushing = false
      this.#shared = null
      // A flush that threw leaves the rest for the next turn (one with nothing pending returns at once).
      if (!done) for (const connection of walking) this.schedule(connection)
      walking.clear()
    }
    if (this.#oldest.size === 0) return
    const now = performance.now()
    for (const [observer, oldest] of this.#oldest) observer((now - oldest) / 1000)
    this.#oldest.clear()
  }
}

/** How long a stream that ended with an error waits for a reader that reads nothing before cutting it. */
export const stallTimeoutMs = 30_000

/**
 * Destroys a stream whose unsent bytes (`unsent()`) have not gone down for `ms`; one whose reader
 * keeps taking bytes, however slowly, is left to finish.
 */
export function destroyWhenStalled(stream: { destroyed: boolean; writableFinished?: boolean; destroy(): void }, unsent: () => number, ms: number): void {
  let last = unsent()
  const check = (): void => {
    if (stream.destroyed || stream.writableFinished === true) return
    const now = unsent()
    if (now === 0 || now >= last) {
      stream.destroy()
      return
    }
    last = now
    setTimeout(check, ms).unref()
  }
  setTimeout(check, ms).unref()
}
