import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { SpreadTicker } from '../src/transports/spread-ticker.js'

describe('SpreadTicker: heartbeats spread over their interval', () => {
  beforeEach(() => {
    vi.useFakeTimers()
  })
  afterEach(() => {
    vi.useRealTimers()
  })

  it('ticks each of 1,000 members once per interval, a tenth of them per 100 ms slice', () => {
    const ticks = new Map<number, number>()
    const ticker = new SpreadTicker<number>(1_000, (member) => ticks.set(member, (ticks.get(member) ?? 0) + 1))
    for (let i = 0; i < 1_000; i++) ticker.add(i)
    const perSlice: number[] = []
    let seen = 0
    for (let slice = 0; slice < 10; slice++) {
      vi.advanceTimersByTime(100)
      const total = [...ticks.values()].reduce((a, b) => a + b, 0)
      perSlice.push(total - seen)
      seen = total
    }
    expect(perSlice).toEqual(Array(10).fill(100))
    expect(ticks.size).toBe(1_000)
    expect([...ticks.values()].every((n) => n === 1)).toBe(true)
    vi.advanceTimersByTime(1_000)
    expect([...ticks.values()].every((n) => n === 2)).toBe(true)
    ticker.close()
  })

  it('never ticks a member once deleted, and stops when closed', () => {
    const ticked: string[] = []
    const ticker = new SpreadTicker<string>(500, (member) => ticked.push(member))
    ticker.add('a')
    ticker.add('b')
    ticker.add('b')
    expect(ticker.size).toBe(2)
    ticker.delete('a')
    expect([...ticker]).toEqual(['b'])
    vi.advanceTimersByTime(1_000)
    expect(ticked).toEqual(['b', 'b'])
    ticker.close()
    vi.advanceTimersByTime(1_000)
    expect(ticked).toEqual(['b', 'b'])
  })

  it('an interval shorter than a slice ticks everyone together, every interval', () => {
    const ticked: number[] = []
    const ticker = new SpreadTicker<number>(10, (member) => ticked.push(member))
    ticker.add(1)
    ticker.add(2)
    vi.advanceTimersByTime(10)
    expect(ticked).toEqual([1, 2])
    vi.advanceTimersByTime(10)
    expect(ticked).toEqual([1, 2, 1, 2])
    ticker.close()
  })

  it('runs no timer while it has no members', () => {
    const ticked: number[] = []
    const ticker = new SpreadTicker<number>(100, (member) => ticked.push(member))
    expect(vi.getTimerCount()).toBe(0)
    ticker.add(1)
    expect(vi.getTimerCount()).toBe(1)
    vi.advanceTimersByTime(100)
    expect(ticked).toEqual([1])
    ticker.delete(1)
    expect(vi.getTimerCount()).toBe(0)
    vi.advanceTimersByTime(10_000)
    // Back from idle: the next member is ticked once per interval again.
    ticker.add(2)
    ticker.add(3)
    expect(vi.getTimerCount()).toBe(1)
    vi.advanceTimersByTime(200)
    expect(ticked.filter((member) => member === 2)).toHaveLength(2)
    expect(ticked.filter((member) => member === 3)).toHaveLength(2)
    ticker.close()
    expect(vi.getTimerCount()).toBe(0)
    // Closed: a member added after is held (counted) but never ticked, and arms nothing.
    ticker.add(4)
    expect(ticker.size).toBe(3)
    expect(vi.getTimerCount()).toBe(0)
  })

  it('a long interval is cut into at most 1,000 slices, each ticking its share', () => {
    const ticked: number[] = []
    const ticker = new SpreadTicker<number>(100_000, (member) => ticked.push(member))
    for (let i = 0; i < 2_000; i++) ticker.add(i)
    // 100 s in 1,000 slices of 100 ms (not 5,000 of 20 ms), two members each.
    vi.advanceTimersByTime(99)
    expect(ticked).toHaveLength(0)
    vi.advanceTimersByTime(1)
    expect(ticked).toEqual([0, 1_000])
    vi.advanceTimersByTime(99_900)
    expect(ticked).toHaveLength(2_000)
    expect(new Set(ticked).size).toBe(2_000)
    ticker.close()
  })
})
