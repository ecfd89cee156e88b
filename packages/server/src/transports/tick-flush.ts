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
  readonly #dirty = new Set<C>()
  #scheduled = false
  #shared: { jobId: string; first: number; last: number; length: number; bytes: Buffer } | null = null
  #flushing = false
  /** Per latency observer: the oldest fan-out time among the live events written in this flush. */
  readonly #oldest = new Map<DeliveryObserver, number>()

  schedule(connection: C): void {
    this.#dirty.add(connection)
    if (this.#scheduled) return
    this.#scheduled = true
    setImmediate(() => this.#flushAll())
  }

  /** The connection flushed (or ended) on its own. */
  forget(connection: C): void {
    this.#dirty.delete(connection)
  }

  /** The bytes of `text`, which holds exactly the frames of events `first`..`last` of `jobId`, shared within one flush. */
  sharedBytes(jobId: string, first: number, last: number, text: string): Buffer {
    const shared = this.#shared
    if (shared !== null && shared.jobId === jobId && shared.first === first && shared.last === last && shared.length === text.length) {
      return shared.bytes
    }
    this.#shared = { jobId, first, last, length: text.length, bytes: Buffer.from(text) }
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
    try {
      for (const connection of this.#dirty) connection.flush()
    } finally {
      this.#flushing = false
      this.#shared = null
    }
    if (this.#oldest.size === 0) return
    const now = performance.now()
    for (const [observer, oldest] of this.#oldest) observer((now - oldest) / 1000)
    this.#oldest.clear()
  }
}
