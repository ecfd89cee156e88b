/**
 * A set of objects kept in an array, each object holding its own index: adding and deleting take
 * constant time and no hash table. The worker adds and deletes an entry per job in its long-lived
 * collections, and V8 replaces a Set's or Map's table as entries come and go, linking each old
 * table to the one after it; once an old table had been promoted, that chain kept every finished
 * job's objects reachable through young-generation collections until a full one, and the
 * collector took a fifth of a busy worker's time (docs/benchmarks.md).
 */
export class SlotList<T> {
  readonly #items: T[] = []

  /** `slotOf` and `setSlot` read and write where an item keeps its index here (-1: not here). */
  constructor(
    private readonly slotOf: (item: T) => number,
    private readonly setSlot: (item: T, slot: number) => void,
  ) {}

  get size(): number {
    return this.#items.length
  }

  add(item: T): void {
    if (this.has(item)) return
    this.setSlot(item, this.#items.push(item) - 1)
  }

  has(item: T): boolean {
    const slot = this.slotOf(item)
    return slot >= 0 && this.#items[slot] === item
  }

  /** Takes `item` out (the last item moves into its place); false when it was not here. */
  delete(item: T): boolean {
    if (!this.has(item)) return false
    const slot = this.slotOf(item)
    const last = this.#items.pop() as T
    if (last !== item) {
      this.#items[slot] = last
      this.setSlot(last, slot)
    }
    this.setSlot(item, -1)
    return true
  }

  find(predicate: (item: T) => boolean): T | undefined {
    return this.#items.find(predicate)
  }

  /** A copy: items may come and go while the caller goes through them. */
  values(): T[] {
    return [...this.#items]
  }
}
