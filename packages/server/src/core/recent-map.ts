/**
 * A map that keeps at least the entries set most recently — the last `limit` of them, or with a
 * byte budget the last ones that weigh `bytes` in all, whichever is fewer — and at most as many
 * again, at a constant cost per operation. It holds two generations: new entries go into the
 * young one, and when that holds `limit` entries (or weighs `bytes`) it becomes the old one and
 * the previous old generation is dropped whole. A lookup reads the young generation, then the
 * old. (Generations of half the limit would keep the same most, but then only the last half for
 * sure: a node writing 8,000 jobs in turn would have found ~40 % of them in a cache of 10,000.)
 *
 * Why not one `Map` trimmed by deleting its first key: V8 leaves a deleted entry as a hole that an
 * iterator skips one by one until the table is rebuilt, so `map.keys().next()` after many such
 * deletions walks thousands of holes. As the cache of a busy node that cost 7.5 µs per insert at
 * 10,000 entries and 22 µs at 50,000 (against 0.5 µs here), paid on every write once the node had
 * seen that many jobs.
 *
 * Why a byte budget: the stores' caches hold whole job states, streamed text included (up to
 * `--max-text-length` each), so 10,000 of them could hold more than the heap: 300 jobs of 3.6 M
 * characters each stopped a node limited to 1 GiB of heap. Weighed, a cache holds at most about
 * twice its budget (plus the one entry that crossed it), however large the states.
 */
export class RecentMap<K, V extends object> {
  #young = new Map<K, V>()
  #old = new Map<K, V>()
  readonly #generation: number
  readonly #budget: Budget<V> | null
  /** What each generation weighs (0 without a budget). */
  #youngBytes = 0
  #oldBytes = 0

  constructor(limit: number, budget?: Budget<V>) {
    this.#generation = Math.max(1, limit)
    this.#budget = budget === undefined ? null : { bytes: Math.max(1, budget.bytes), weigh: budget.weigh }
  }

  get(key: K): V | undefined {
    return this.#young.get(key) ?? this.#old.get(key)
  }

  /** Sets `key` as the most recent entry. */
  set(key: K, value: V): void {
    const budget = this.#budget
    if (budget === null) {
      this.#old.delete(key)
      this.#young.set(key, value)
      if (this.#young.size >= this.#generation) this.#rotate()
      return
    }
    // A key is in one generation at most: set again while young, it is replaced where it is.
    const young = this.#young.get(key)
    if (young !== undefined) this.#youngBytes -= budget.weigh(young)
    else {
      const old = this.#old.get(key)
      if (old !== undefined) {
        this.#old.delete(key)
        this.#oldBytes -= budget.weigh(old)
      }
    }
    this.#young.set(key, value)
    this.#youngBytes += budget.weigh(value)
    if (this.#young.size >= this.#generation || this.#youngBytes >= budget.bytes) this.#rotate()
  }

  delete(key: K): boolean {
    if (this.#budget !== null) return this.#forget(key, this.#budget)
    const young = this.#young.delete(key)
    return this.#old.delete(key) || young
  }

  clear(): void {
    this.#young = new Map()
    this.#old = new Map()
    this.#youngBytes = 0
    this.#oldBytes = 0
  }

  get size(): number {
    return this.#young.size + this.#old.size
  }

  /** What the entries weigh in all, by the budget's `weigh` (0 without a budget). */
  get bytes(): number {
    return this.#youngBytes + this.#oldBytes
  }

  #rotate(): void {
    this.#old = this.#young
    this.#oldBytes = this.#youngBytes
    this.#young = new Map()
    this.#youngBytes = 0
  }

  /** Drops `key` from both generations and their weights. */
  #forget(key: K, budget: Budget<V>): boolean {
    const young = this.#young.get(key)
    if (young !== undefined) {
      this.#young.delete(key)
      this.#youngBytes -= budget.weigh(young)
    }
    const old = this.#old.get(key)
    if (old !== undefined) {
      this.#old.delete(key)
      this.#oldBytes -= budget.weigh(old)
    }
    return young !== undefined || old !== undefined
  }
}

/** A byte budget: `weigh` must give the same weight for the same value each time it is asked. */
export interface Budget<V> {
  bytes: number
  weigh: (value: V) => number
}
