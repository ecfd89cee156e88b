import { describe, expect, it } from 'vitest'
import { RecentMap } from '../src/core/recent-map.js'

/** A seeded generator (mulberry32): the same operations every run. */
function seeded(seed: number): () => number {
  let a = seed
  return () => {
    a = (a + 0x6d2b79f5) | 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

describe('RecentMap', () => {
  it('keeps the `limit` entries set most recently, never a stale or deleted one, and never more than twice its limit', () => {
    const limit = 40
    const map = new RecentMap<string, { value: number }>(limit)
    // The model: each key's latest value and when it was set (the number of sets before it), or deleted.
    const latest = new Map<string, { value: number; at: number } | 'deleted'>()
    const random = seeded(13)
    let sets = 0
    for (let step = 0; step < 20_000; step++) {
      const key = `job_${Math.floor(random() * 120)}`
      const roll = random()
      if (roll < 0.5) {
        map.set(key, { value: step })
        latest.set(key, { value: step, at: sets++ })
      } else if (roll < 0.6) {
        map.delete(key)
        latest.set(key, 'deleted')
      } else {
        const found = map.get(key)
        const model = latest.get(key)
        if (model === undefined || model === 'deleted') expect(found).toBeUndefined()
        else if (found !== undefined) expect(found.value).toBe(model.value)
        // Set within the last `limit` sets: still there.
        if (model !== undefined && model !== 'deleted' && sets - model.at <= limit) expect(found?.value).toBe(model.value)
      }
      expect(map.size).toBeLessThanOrEqual(2 * limit)
    }
  })

  it('forgets an entry once twice `limit` newer ones were set, and everything on clear', () => {
    const map = new RecentMap<string, { n: number }>(2)
    map.set('a', { n: 1 })
    map.set('b', { n: 0 })
    // `a` is among the last two: kept.
    map.set('c', { n: 0 })
    expect(map.get('a')).toEqual({ n: 1 })
    map.set('d', { n: 0 })
    expect(map.get('a')).toBeUndefined()
    expect(map.get('c')).toEqual({ n: 0 })
    // Set again: the newer value, and it counts as recent.
    map.set('c', { n: 2 })
    map.set('e', { n: 0 })
    map.set('f', { n: 0 })
    expect(map.get('c')).toEqual({ n: 2 })
    map.clear()
    expect(map.size).toBe(0)
    expect(map.get('c')).toBeUndefined()
  })
})
