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

/** Looks `key` up: never a deleted key, never a stale value (`model`: its latest set, or deleted). */
function checkedGet<V extends { value: number }>(map: RecentMap<string, V>, key: string, model: { value: number } | 'deleted' | undefined): V | undefined {
  const found = map.get(key)
  if (model === undefined || model === 'deleted') expect(found).toBeUndefined()
  else if (found !== undefined) expect(found.value).toBe(model.value)
  return found
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
        const model = latest.get(key)
        const found = checkedGet(map, key, model)
        // Set within the last `limit` sets: still there.
        if (model !== undefined && model !== 'deleted' && sets - model.at <= limit) expect(found?.value).toBe(model.value)
      }
      expect(map.size).toBeLessThanOrEqual(2 * limit)
    }
  })

  it('with a byte budget: keeps the entries set most recently that weigh the budget in all, counts what it holds, and holds at most about twice the budget', () => {
    const budget = 1_000
    const limit = 50
    const map = new RecentMap<string, { value: number; bytes: number }>(limit, { bytes: budget, weigh: (entry) => entry.bytes })
    const latest = new Map<string, { value: number; bytes: number; at: number } | 'deleted'>()
    // Every set in order, with its weight: what the last sets weigh decides what must still be there.
    const history: { key: string; bytes: number }[] = []
    const random = seeded(29)
    for (let step = 0; step < 20_000; step++) {
      const key = `job_${Math.floor(random() * 150)}`
      const roll = random()
      if (roll < 0.5) {
        // Mostly light entries, now and then one heavier than half the budget.
        const bytes = random() < 0.05 ? 600 + Math.floor(random() * 400) : 1 + Math.floor(random() * 60)
        map.set(key, { value: step, bytes })
        latest.set(key, { value: step, bytes, at: history.length })
        history.push({ key, bytes })
      } else if (roll < 0.6) {
        map.delete(key)
        latest.set(key, 'deleted')
      } else {
        const model = latest.get(key)
        const found = checkedGet(map, key, model)
        if (model !== undefined && model !== 'deleted') {
          // The sets since this one (itself included) weigh at most the budget and number at most `limit`: kept.
          const since = history.slice(model.at)
          const weight = since.reduce((sum, one) => sum + one.bytes, 0)
          if (since.length <= limit && weight <= budget) expect(found?.value).toBe(model.value)
        }
      }
      // What it says it holds is what its live entries weigh.
      let held = 0
      for (const [k, model] of latest) {
        const found = map.get(k)
        if (found !== undefined && model !== 'deleted') held += found.bytes
      }
      expect(map.bytes).toBe(held)
      expect(map.bytes).toBeLessThanOrEqual(2 * (budget + 1_000))
      expect(map.size).toBeLessThanOrEqual(2 * limit)
    }
    map.clear()
    expect(map.bytes).toBe(0)
  })

  it('with a byte budget, an entry heavier than the whole budget is still kept until the next one is set', () => {
    const map = new RecentMap<string, { bytes: number }>(100, { bytes: 10, weigh: (entry) => entry.bytes })
    map.set('big', { bytes: 50 })
    expect(map.get('big')).toEqual({ bytes: 50 })
    map.set('small', { bytes: 1 })
    expect(map.get('big')).toEqual({ bytes: 50 })
    expect(map.bytes).toBe(51)
    map.set('bigger', { bytes: 80 })
    expect(map.get('big')).toBeUndefined()
    expect(map.bytes).toBe(81)
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
