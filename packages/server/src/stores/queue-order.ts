/**
 * The queued, dispatched jobs of each type in creation order, kept in process memory by the
 * embedded stores, so that a job's queue position is a binary search (O(log n)) and the oldest
 * claimable job is found from the head, instead of counting or scanning the whole queue on every
 * create, snapshot and claim. The store stays the source of truth: it rebuilds this at open and
 * updates it only after a write has committed.
 */
export class QueueOrder {
  readonly #byType = new Map<string, QueueOfType>()

  add(type: string, ordinal: number, id: string): void {
    let queue = this.#byType.get(type)
    if (queue === undefined) this.#byType.set(type, (queue = new QueueOfType()))
    queue.add(ordinal, id)
  }

  remove(type: string, ordinal: number): void {
    const queue = this.#byType.get(type)
    if (queue === undefined) return
    queue.remove(ordinal)
    if (queue.size === 0) this.#byType.delete(type)
  }

  /** Moves a job in or out of its type's queue; true when membership changed. */
  sync(type: string, ordinal: number, id: string, queued: boolean): boolean {
    const has = this.#byType.get(type)?.has(ordinal) ?? false
    if (has === queued) return false
    if (queued) this.add(type, ordinal, id)
    else this.remove(type, ordinal)
    return true
  }

  /** 1 for the head of the queue; null when the job is not in it. */
  position(type: string, ordinal: number): number | null {
    return this.#byType.get(type)?.position(ordinal) ?? null
  }

  /** Ids of one type's queue from the head, oldest first. */
  *ids(type: string): IterableIterator<{ ordinal: number; id: string }> {
    const queue = this.#byType.get(type)
    if (queue !== undefined) yield* queue.entries()
  }

  size(type: string): number {
    return this.#byType.get(type)?.size ?? 0
  }
}

/**
 * Parallel sorted arrays; new jobs have the highest ordinal, so adding is almost always a push.
 * The queue starts at `#head`: taking the oldest job (what claims do) moves it on instead of
 * shifting both arrays (past ~16,000 entries V8 copies them on every shift: 45 µs per claimed job
 * with 100,000 queued); the space before it is given back once it is most of the arrays.
 */
class QueueOfType {
  #ordinals: number[] = []
  #ids: string[] = []
  #head = 0

  get size(): number {
    return this.#ordinals.length - this.#head
  }

  add(ordinal: number, id: string): void {
    const at = this.#lowerBound(ordinal)
    if (this.#ordinals[at] === ordinal) return
    if (at === this.#ordinals.length) {
      this.#ordinals.push(ordinal)
      this.#ids.push(id)
    } else if (at === this.#head && this.#head > 0) {
      // Back in front of the oldest (a job re-queued ahead of the rest): into the free space.
      this.#head -= 1
      this.#ordinals[this.#head] = ordinal
      this.#ids[this.#head] = id
    } else {
      this.#ordinals.splice(at, 0, ordinal)
      this.#ids.splice(at, 0, id)
    }
  }

  remove(ordinal: number): void {
    const at = this.#lowerBound(ordinal)
    if (this.#ordinals[at] !== ordinal) return
    if (at === this.#head) {
      this.#head += 1
      if (this.#head === this.#ordinals.length) {
        this.#ordinals = []
        this.#ids = []
        this.#head = 0
      } else if (this.#head >= 1024 && this.#head * 2 >= this.#ordinals.length) {
        this.#ordinals = this.#ordinals.slice(this.#head)
        this.#ids = this.#ids.slice(this.#head)
        this.#head = 0
      }
    } else {
      this.#ordinals.splice(at, 1)
      this.#ids.splice(at, 1)
    }
  }

  has(ordinal: number): boolean {
    return this.#ordinals[this.#lowerBound(ordinal)] === ordinal
  }

  position(ordinal: number): number | null {
    const at = this.#lowerBound(ordinal)
    return this.#ordinals[at] === ordinal ? at - this.#head + 1 : null
  }

  *entries(): IterableIterator<{ ordinal: number; id: string }> {
    for (let i = this.#head; i < this.#ordinals.length; i++) yield { ordinal: this.#ordinals[i] as number, id: this.#ids[i] as string }
  }

  /** The first index (from the head) whose ordinal is >= `ordinal`. */
  #lowerBound(ordinal: number): number {
    let low = this.#head
    let high = this.#ordinals.length
    while (low < high) {
      const mid = (low + high) >>> 1
      if ((this.#ordinals[mid] as number) < ordinal) low = mid + 1
      else high = mid
    }
    return low
  }
}
