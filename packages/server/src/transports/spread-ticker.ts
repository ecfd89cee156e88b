/**
 * Calls `tick` for every member once per `intervalMs`, spread over the interval: members are dealt
 * round-robin into one bucket per `sliceMs` of the interval, and one timer ticks a bucket per
 * slice. A heartbeat for every open stream at once would write to thousands of sockets in one turn
 * of the loop (a 50–85 ms stall at 2,000 streams, bench/heartbeats.mjs) and hold up every event
 * queued behind it; spread, each slice writes to a few. The members are the set it holds:
 * iterable, with their count.
 */
export class SpreadTicker<T> {
  readonly #buckets: Set<T>[]
  readonly #bucketOf = new Map<T, Set<T>>()
  readonly #timer: NodeJS.Timeout
  /** The bucket the next member joins, and the one the next slice ticks. */
  #deal = 0
  #turn = 0

  constructor(intervalMs: number, tick: (member: T) => void, sliceMs = 20) {
    const count = Math.max(1, Math.round(intervalMs / sliceMs))
    this.#buckets = Array.from({ length: count }, () => new Set<T>())
    this.#timer = setInterval(() => {
      const bucket = this.#buckets[this.#turn] as Set<T>
      this.#turn = (this.#turn + 1) % count
      for (const member of bucket) tick(member)
    }, intervalMs / count)
    this.#timer.unref()
  }

  get size(): number {
    return this.#bucketOf.size
  }

  [Symbol.iterator](): IterableIterator<T> {
    return this.#bucketOf.keys()
  }

  add(member: T): void {
    if (this.#bucketOf.has(member)) return
    const bucket = this.#buckets[this.#deal] as Set<T>
    this.#deal = (this.#deal + 1) % this.#buckets.length
    bucket.add(member)
    this.#bucketOf.set(member, bucket)
  }

  delete(member: T): void {
    this.#bucketOf.get(member)?.delete(member)
    this.#bucketOf.delete(member)
  }

  close(): void {
    clearInterval(this.#timer)
  }
}
