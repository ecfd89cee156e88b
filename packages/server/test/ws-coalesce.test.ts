import { describe, expect, it } from 'vitest'
import { applyCoalesced, applyEvent, reduceEvents, type JobEvent, type JobState } from '@jobwire/protocol'
import { CoalescedRun } from '../src/transports/ws-coalesce.js'
import { seededRandom } from './fixtures.js'

const at = (n: number): string => new Date(Date.UTC(2026, 0, 1, 0, 0, n)).toISOString()

/** A running job at seq 2, optionally with a stage already. */
function baseJob(stage: string | undefined): JobState {
  const events: JobEvent[] = [
    { jobId: 'j', seq: 1, type: 'created', at: at(1), data: { type: 't', input: null, owner: null, dispatch: false, maxAttempts: 1 } },
    { jobId: 'j', seq: 2, type: 'started', at: at(2), data: { attempt: 1, worker: null } },
  ]
  if (stage !== undefined) events.push({ jobId: 'j', seq: 3, type: 'progress', at: at(3), data: { stage } })
  return reduceEvents(events) as JobState
}

/** Random latest-wins events: progress (now and then a stage, sometimes the current one) and items of a few ids. */
function randomRun(random: () => number, from: number, count: number): JobEvent[] {
  const stages = ['decoding', 'transcribing', 'synthesizing']
  const out: JobEvent[] = []
  for (let i = 0; i < count; i++) {
    const seq = from + i
    const pick = random()
    const maybe = <T>(value: T): T | undefined => (random() < 0.5 ? value : undefined)
    if (pick < 0.5) {
      const data: { stage?: string; percent?: number; message?: string } = {}
      if (random() < 0.15) data.stage = stages[Math.floor(random() * stages.length)] as string
      const percent = maybe(Math.floor(random() * 100))
      if (percent !== undefined) data.percent = percent
      const message = maybe(`m${i}`)
      if (message !== undefined) data.message = message
      out.push({ jobId: 'j', seq, type: 'progress', at: at(10 + i), data })
    } else {
      const data: { id: string; label?: string; status?: 'running' | 'completed'; percent?: number } = { id: `file-${Math.floor(random() * 5)}` }
      const label = maybe(`label ${i}`)
      if (label !== undefined) data.label = label
      if (random() < 0.3) data.status = random() < 0.5 ? 'running' : 'completed'
      const percent = maybe(Math.floor(random() * 100))
      if (percent !== undefined) data.percent = percent
      out.push({ jobId: 'j', seq, type: 'item', at: at(10 + i), data })
    }
  }
  return out
}

describe('coalescing latest-wins events for a slow reader', () => {
  it.for(Array.from({ length: 40 }, (_, i) => i + 1))('a run applies to exactly the state of its events one by one (seed %i)', (seed) => {
    const random = seededRandom(seed)
    const knownStage = random() < 0.5 ? 'decoding' : undefined
    const base = baseJob(knownStage)
    const events = randomRun(random, base.seq + 1, 1 + Math.floor(random() * 300))
    const [first, ...rest] = events as [JobEvent & { type: 'progress' | 'item' }, ...JobEvent[]]
    // The stage before the run is unknown to a stream that resumed from a position.
    const stageBefore = random() < 0.5 ? base.progress.stage : undefined
    const run = new CoalescedRun(first, 10, stageBefore)
    for (const event of rest) expect(run.add(event, 10)).toBe(true)
    const message = run.toMessage()
    const expected = events.reduce((state, event) => applyEvent(state, event), base)
    const actual = message.type === 'coalesced' ? applyCoalesced(base, message.from, message.events) : applyEvent(base, (message as { event: JobEvent }).event)
    expect(actual).toEqual(expected)
    const stageChanges = events.filter((e) => e.type === 'progress' && e.data.stage !== undefined).length
    expect(run.size).toBeLessThanOrEqual(5 + 2 * stageChanges + 1)
  })

  it('refuses an event that does not extend the run, or is not latest-wins', () => {
    const base = baseJob(undefined)
    const [first, second] = randomRun(seededRandom(3), base.seq + 1, 2) as [JobEvent & { type: 'item' | 'progress' }, JobEvent]
    const run = new CoalescedRun(first, 10, null)
    expect(run.add({ ...second, seq: second.seq + 1 }, 10)).toBe(false)
    expect(run.add({ jobId: 'j', seq: second.seq, type: 'chunk', at: at(99), data: { text: 'x' } }, 10)).toBe(false)
    expect(run.add(second, 10)).toBe(true)
  })

  it('keeps a single untouched event a plain event', () => {
    const base = baseJob(undefined)
    const [first] = randomRun(seededRandom(5), base.seq + 1, 1) as [JobEvent & { type: 'item' | 'progress' }]
    expect(new CoalescedRun(first, 10, null).toMessage()).toEqual({ type: 'event', event: first })
  })
})
