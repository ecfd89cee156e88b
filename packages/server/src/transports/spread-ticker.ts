/** Most buckets (and wakes) per interval: 750 at the 15 s default heartbeat, 1,000 from 20 s on. */
const maxSlices = 1_000

/**
 * Calls `tick` for every member once per `intervalMs`, spread over the interval: members are dealt
 * round-robin into one bucket per `sliceMs` of the interval, and one timer ticks a bucket per
 * slice. A heartbeat for every open stream at once would write to thousands of sockets in one turn
 * of the loop (a 50–85 ms stall at 2,000 streams, bench/heartbeats.mjs) and hold up every event
 * queued behind it; spread, each slice writes to a few. The members are the set it holds:
 * iterable, with their count.
 *
 * The timer runs only while there are members: a node with no streams open woke 50 times a second
 * per transport for nothing. (It wakes for every slice, empty or not, while there are: a timer
 * armed for each next bucket with members would sleep over the empty ones, but with a different
 * duration each time, and Node keeps a list per duration that an unreferenced timer's clearing
 * leaves behind until it would have fired.)
 */
export class SpreadTicker<T> {
  readonly #buckets: Set<T>[]
  readonly #bucketOf = new Map<T, Set<T>>()
  readonly #tick: (member: T) => void
  readonly #sliceMs: number
  #timer: NodeJS.Timeout | null = null
  #closed = false
  /** The bucket the next member joins, and the one the next slice ticks. */
  #deal = 0
  #turn = 0

  constructor(intervalMs: number, tick: (member: T) => void, sliceMs = 20) {
    // At most `maxSlices` an interval: a long interval gets longer slices, not ever more buckets.
    const count = Math.min(maxSlices, Math.max(1, Math.round(intervalMs / sliceMs)))
    this.#buckets = Array.from({ length: count }, () => new Set<T>())
    this.#tick = tick
    this.#sliceMs = intervalMs / count
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
    if (this.#timer === null && !this.#closed) {
      this.#timer = setInterval(() => this.#slice(), this.#sliceMs)
      this.#timer.unref()
    }
  }

  delete(member: T): void {
    this.#bucketOf.get(member)?.delete(member)
    this.#bucketOf.delete(member)
    if (this.#bucketOf.size === 0) this.#stop()
  }

  close(): void {
    this.#closed = true
    this.#stop()
  }

  #stop(): void {
    if (this.#timer === null) return
    clearInterval(this.#timer)
    this.#timer = null
  }

  #slice(): void {
    const bucket = this.#buckets[this.#turn] as Set<T>
    this.#turn = (this.#turn + 1) % this.#buckets.length
    for (const member of bucket) this.#tick(member)
  }
}
