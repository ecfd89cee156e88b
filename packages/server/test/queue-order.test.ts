import { describe, expect, it } from 'vitest'
import { QueueOrder } from '../src/stores/queue-order.js'

/** The queue as a plain sorted list, the model QueueOrder must agree with. */
function modelOf(ordinals: Iterable<number>): number[] {
  return [...new Set(ordinals)].sort((a, b) => a - b)
}

describe('QueueOrder', () => {
  it('agrees with a sorted list through claims from the head, removals inside, re-queues in front and compactions', () => {
    const queue = new QueueOrder()
    let model: number[] = []
    let next = 1
    const add = (ordinal: number): void => {
      queue.add('t', ordinal, `job_${ordinal}`)
      model = modelOf([...model, ordinal])
    }
    const remove = (ordinal: number): void => {
      queue.remove('t', ordinal)
      model = model.filter((o) => o !== ordinal)
    }
    // A deterministic mix: mostly new jobs and claims of the oldest, sometimes a job taken from
    // the middle (cancelled) or put back in front of the rest (released, re-queued).
    let seed = 7
    const random = (): number => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31
    const removed: number[] = []
    for (let step = 0; step < 20_000; step++) {
      const roll = random()
      if (roll < 0.5 || model.length === 0) add(next++)
      else if (roll < 0.9) {
        const oldest = model[0] as number
        remove(oldest)
        removed.push(oldest)
      } else if (roll < 0.95) remove(model[Math.floor(random() * model.length)] as number)
      else if (removed.length > 0) add(removed.splice(Math.floor(random() * removed.length), 1)[0] as number)
      if (step % 997 === 0 || step > 19_990) {
        expect([...queue.ids('t')].map((e) => e.ordinal)).toEqual(model)
        expect(queue.size('t')).toBe(model.length)
        for (const [i, ordinal] of model.entries()) if (i % 50 === 0) expect(queue.position('t', ordinal)).toBe(i + 1)
      }
    }
    expect([...queue.ids('t')].every((e) => e.id === `job_${e.ordinal}`)).toBe(true)
    for (const ordinal of removed.slice(0, 100)) if (!model.includes(ordinal)) expect(queue.position('t', ordinal)).toBeNull()
  })

  it('drains a queue of 5,000 from the head to empty, then takes new jobs from position 1', () => {
    const queue = new QueueOrder()
    for (let ordinal = 1; ordinal <= 5_000; ordinal++) queue.add('t', ordinal, `job_${ordinal}`)
    for (let ordinal = 1; ordinal <= 4_990; ordinal++) expect(queue.sync('t', ordinal, `job_${ordinal}`, false)).toBe(true)
    expect([...queue.ids('t')].map((e) => e.ordinal)).toEqual([4_991, 4_992, 4_993, 4_994, 4_995, 4_996, 4_997, 4_998, 4_999, 5_000])
    expect(queue.position('t', 4_995)).toBe(5)
    // Back in front: the job released before all others queued.
    queue.add('t', 3, 'job_3')
    expect(queue.position('t', 3)).toBe(1)
    expect(queue.position('t', 5_000)).toBe(11)
    for (const { ordinal } of [...queue.ids('t')]) queue.remove('t', ordinal)
    expect(queue.size('t')).toBe(0)
    queue.add('t', 6_000, 'job_6000')
    expect(queue.position('t', 6_000)).toBe(1)
  })
})
