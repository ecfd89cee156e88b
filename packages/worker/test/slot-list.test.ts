import { describe, expect, it } from 'vitest'
import { SlotList } from '../src/slot-list.js'

interface Item {
  name: string
  slot: number
}

const item = (name: string): Item => ({ name, slot: -1 })
const list = (): SlotList<Item> =>
  new SlotList<Item>(
    (one) => one.slot,
    (one, slot) => (one.slot = slot),
  )

describe('SlotList', () => {
  it('adds and deletes in any order: the last item moves into a deleted one’s place, and every index stays true', () => {
    const runs = list()
    const [a, b, c, d] = ['a', 'b', 'c', 'd'].map(item) as [Item, Item, Item, Item]
    for (const one of [a, b, c, d]) runs.add(one)
    expect(runs.size).toBe(4)
    expect(runs.delete(b)).toBe(true)
    expect(runs.values().map((one) => one.name)).toEqual(['a', 'd', 'c'])
    expect([a.slot, b.slot, c.slot, d.slot]).toEqual([0, -1, 2, 1])
    expect(runs.delete(c)).toBe(true) // the last one: nothing moves
    expect(runs.delete(a)).toBe(true)
    expect(runs.values()).toEqual([d])
    expect(d.slot).toBe(0)
    expect([runs.has(a), runs.has(b), runs.has(c), runs.has(d)]).toEqual([false, false, false, true])
  })

  it('ignores a second add, and a delete or has of an item that is not in it (even one whose slot names a place in use)', () => {
    const runs = list()
    const a = item('a')
    const stranger = { name: 'x', slot: 0 }
    runs.add(a)
    runs.add(a)
    expect(runs.size).toBe(1)
    expect(runs.has(stranger)).toBe(false)
    expect(runs.delete(stranger)).toBe(false)
    expect(runs.values()).toEqual([a])
    expect(runs.delete(a)).toBe(true)
    expect(runs.delete(a)).toBe(false)
    expect(runs.size).toBe(0)
  })

  it('hands out a copy of its items, which a caller may keep while items come and go', () => {
    const runs = list()
    const [a, b] = [item('a'), item('b')]
    runs.add(a)
    runs.add(b)
    const seen = runs.values()
    runs.delete(a)
    expect(seen).toEqual([a, b])
    expect(runs.find((one) => one.name === 'b')).toBe(b)
    expect(runs.find((one) => one.name === 'a')).toBeUndefined()
  })
})
