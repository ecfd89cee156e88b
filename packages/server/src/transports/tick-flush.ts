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

  #flushAll(): void {
    this.#scheduled = false
    this.#shared = null
    for (const connection of this.#dirty) connection.flush()
    this.#shared = null
  }
}
