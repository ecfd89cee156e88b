import type { ApiKeyRecord, KeyStore, RateCounter, StreamCounter } from '../core/keys.js'

/** A record that shares nothing with `record` (its job types included), as a stored one read back would. */
const copy = (record: ApiKeyRecord): ApiKeyRecord => ({ ...record, types: record.types === null ? null : [...record.types] })

export class MemoryKeyStore implements KeyStore {
  readonly #keys = new Map<string, ApiKeyRecord>()

  async create(record: ApiKeyRecord): Promise<void> {
    this.#keys.set(record.id, copy(record))
  }

  async get(id: string): Promise<ApiKeyRecord | null> {
    const record = this.#keys.get(id)
    return record === undefined ? null : copy(record)
  }

  async list(): Promise<ApiKeyRecord[]> {
    return [...this.#keys.values()].map(copy)
  }

  async revoke(id: string, at: string): Promise<boolean> {
    const record = this.#keys.get(id)
    if (record === undefined) return false
    record.revokedAt ??= at
    return true
  }

  async close(): Promise<void> {}
}

/** Live windows at which new ones first sweep out the ended ones. */
const firstSweepAt = 100_000

/** Fixed-window counters in this process (one node). RedisCredentials shares them across nodes. */
export class MemoryRateCounter implements RateCounter {
  readonly #windows = new Map<string, { start: number; count: number }>()
  /**
   * Size at which the next new window first sweeps out the ended ones. After a sweep it is twice
   * what is left (at least `firstSweepAt`), so live keys past it cost one sweep per doubling, not
   * one scan of them all per new key.
   */
  #sweepAt = firstSweepAt

  constructor(private readonly now: () => number = Date.now) {}

  async hit(key: string, max: number, windowMs: number): Promise<{ ok: boolean; retryAfterMs: number }> {
    const now = this.now()
    let window = this.#windows.get(key)
    if (window === undefined || now - window.start >= windowMs) {
      window = { start: now, count: 0 }
      this.#windows.set(key, window)
      if (this.#windows.size > this.#sweepAt) {
        this.#prune(now, windowMs)
        this.#sweepAt = Math.max(firstSweepAt, 2 * this.#windows.size)
      }
    }
    if (window.count >= max) return { ok: false, retryAfterMs: window.start + windowMs - now }
    window.count++
    return { ok: true, retryAfterMs: 0 }
  }

  #prune(now: number, windowMs: number): void {
    for (const [key, window] of this.#windows) if (now - window.start >= windowMs) this.#windows.delete(key)
  }
}

export class MemoryStreamCounter implements StreamCounter {
  readonly #open = new Map<string, number>()

  async acquire(key: string, max: number): Promise<(() => void) | null> {
    const current = this.#open.get(key) ?? 0
    if (current >= max) return null
    this.#open.set(key, current + 1)
    let released = false
    return () => {
      if (released) return
      released = true
      const left = (this.#open.get(key) ?? 1) - 1
      if (left <= 0) this.#open.delete(key)
      else this.#open.set(key, left)
    }
  }

  async count(key: string): Promise<number> {
    return this.#open.get(key) ?? 0
  }
}
