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

/** Parallel sorted arrays; new jobs have the highest ordinal, so adding is almost always a push. */
class QueueOfType {
  readonly #ordinals: number[] = []
  readonly #ids: string[] = []

  get size(): number {
    return this.#ordinals.length
  }

  add(ordinal: number, id: string): void {
    const at = this.#lowerBound(ordinal)
    if (this.#ordinals[at] === ordinal) return
    if (at === this.#ordinals.length) {
      this.#ordinals.push(ordinal)
      this.#ids.push(id)
    } else {
      this.#ordinals.splice(at, 0, ordinal)
      this.#ids.splice(at, 0, id)
    }
  }

  remove(ordinal: number): void {
    const at = this.#lowerBound(ordinal)
    if (this.#ordinals[at] !== ordinal) return
    if (at === 0) {
      this.#ordinals.shift()
      this.#ids.shift()
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
    return this.#ordinals[at] === ordinal ? at + 1 : null
  }

  *entries(): IterableIterator<{ ordinal: number; id: string }> {
    for (let i = 0; i < this.#ordinals.length; i++) yield { ordinal: this.#ordinals[i] as number, id: this.#ids[i] as string }
  }

  /** The first index whose ordinal is >= `ordinal`. */
  #lowerBound(ordinal: number): number {
    let low = 0
    let high = this.#ordinals.length
    while (low < high) {
      const mid = (low + high) >>> 1
      if ((this.#ordinals[mid] as number) < ordinal) low = mid + 1
      else high = mid
    }
    return low
  }
}
