import { describe, expect, it } from 'vitest'
import {
  applyEvent,
  applyEvents,
  eventTypes,
  jobStatuses,
  needsRunning,
  normalizeStagePlan,
  nextStatus,
  reduceEvents,
  stageHistoryLimit,
  type EventDraft,
  type EventType,
  type JobEvent,
  type JobState,
  type JobStatus,
  type TransitionRefusal,
} from '@jobwire/protocol'
import { seededRandom } from '../../../test/support/random.js'

const jobId = 'job_AAAAAAAAAAAAAAAAAAAAAA'

/** Numbers drafts from seq 1 with one timestamp per second, the way a store would. */
function logOf(drafts: EventDraft[], id = jobId): JobEvent[] {
  return drafts.map((draft, index) => ({ jobId: id, seq: index + 1, at: at(index), ...draft }) as JobEvent)
}

function at(index: number): string {
  return new Date(Date.UTC(2025, 0, 1, 12, 0, index)).toISOString()
}

const created: EventDraft = {
  type: 'created',
  data: { type: 'transcode', input: { file: 'a.wav' }, owner: { tenant: 't1', user: 'u1' }, dispatch: true, maxAttempts: 3 },
}
const started: EventDraft = { type: 'started', data: { attempt: 1, worker: 'w1' } }

function reduce(drafts: EventDraft[]): JobState {
  const state = reduceEvents(logOf(drafts))
  if (state === null) throw new Error('empty log')
  return state
}

/** The event that would follow `state`. */
function next(state: JobState, draft: EventDraft): JobEvent {
  return { jobId: state.id, seq: state.seq + 1, at: at(state.seq), ...draft } as JobEvent
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const child of Object.values(value)) deepFreeze(child)
  }
  return value
}

describe('applyEvent: one case per event type', () => {
  it('created makes a queued job holding type, owner and input, at seq 1', () => {
    const state = reduce([created])
    // What the created event says, and nothing that only a later event records.
    const unset = ['checkpoint', 'result', 'error', 'worker', 'queuePosition', 'startedAt', 'finishedAt'] as const
    expect(state).toEqual({
      ...Object.fromEntries(unset.map((key) => [key, null])),
      id: jobId,
      type: 'transcode',
      owner: { tenant: 't1', user: 'u1' },
      input: { file: 'a.wav' },
      status: 'queued',
      progress: { stage: null, percent: null, message: null },
      stages: [],
      items: [],
      text: '',
      attempt: 0,
      maxAttempts: 3,
      dispatch: true,
      createdAt: at(0),
      updatedAt: at(0),
      seq: 1,
    })
  })

  it('started runs the job, records the attempt and the start time', () => {
    const state = reduce([created, started])
    expect(state).toMatchObject({ status: 'running', attempt: 1, worker: 'w1', startedAt: at(1), updatedAt: at(1), seq: 2 })
  })

  it('progress sets stage, percent and message', () => {
    const state = reduce([created, started, { type: 'progress', data: { stage: 'decoding', percent: 10, message: 'frame 1' } }])
    expect(state.progress).toEqual({ stage: 'decoding', percent: 10, message: 'frame 1' })
    expect(state.status).toBe('running')
  })

  it('progress without a stage keeps the stage and updates only what it carries', () => {
    const state = reduce([
      created,
      started,
      { type: 'progress', data: { stage: 'decoding', percent: 10, message: 'frame 1' } },
      { type: 'progress', data: { percent: 40 } },
    ])
    expect(state.progress).toEqual({ stage: 'decoding', percent: 40, message: 'frame 1' })
  })

  it('a new stage clears the percent and message the previous stage left', () => {
    const state = reduce([
      created,
      started,
      { type: 'progress', data: { stage: 'decoding', percent: 90, message: 'almost' } },
      { type: 'progress', data: { stage: 'transcribing' } },
    ])
    expect(state.progress).toEqual({ stage: 'transcribing', percent: null, message: null })
  })

  it('item adds a new item, running by default', () => {
    const state = reduce([created, started, { type: 'item', data: { id: 'a.wav', label: 'A' } }])
    expect(state.items).toEqual([
      { id: 'a.wav', label: 'A', status: 'running', percent: null, message: null, updatedAt: at(2) },
    ])
  })

  it('chunk appends its text to the job text', () => {
    const state = reduce([
      created,
      started,
      { type: 'chunk', data: { text: 'Hello, ' } },
      { type: 'chunk', data: { text: 'world\n' } },
    ])
    expect(state.text).toBe('Hello, world\n')
  })

  it('checkpoint replaces the previous checkpoint', () => {
    const state = reduce([
      created,
      started,
      { type: 'checkpoint', data: { data: { page: 3 } } },
      { type: 'checkpoint', data: { data: { page: 7 } } },
    ])
    expect(state.checkpoint).toEqual({ page: 7 })
  })

  it('completed stores the result, the finish time and sets percent to 100', () => {
    const state = reduce([
      created,
      started,
      { type: 'progress', data: { stage: 'synthesizing', percent: 80 } },
      { type: 'completed', data: { result: { url: 'https://example.test/out.mp3' } } },
    ])
    expect(state).toMatchObject({
      status: 'completed',
      result: { url: 'https://example.test/out.mp3' },
      finishedAt: at(3),
      progress: { stage: 'synthesizing', percent: 100, message: null },
    })
  })

  it('failed stores the error and the finish time', () => {
    const state = reduce([created, started, { type: 'failed', data: { code: 'decode_error', message: 'bad header', retryable: false } }])
    expect(state).toMatchObject({
      status: 'failed',
      error: { code: 'decode_error', message: 'bad header', retryable: false },
      finishedAt: at(2),
    })
  })

  it('failed is allowed straight from queued (the job never started)', () => {
    const state = reduce([created, { type: 'failed', data: { code: 'no_worker', message: 'none', retryable: true } }])
    expect(state.status).toBe('failed')
    expect(state.startedAt).toBeNull()
  })

  it('cancelled finishes a queued or a running job', () => {
    expect(reduce([created, { type: 'cancelled', data: { reason: 'user' } }])).toMatchObject({ status: 'cancelled', finishedAt: at(1) })
    expect(reduce([created, started, { type: 'cancelled', data: { reason: null } }])).toMatchObject({
      status: 'cancelled',
      finishedAt: at(2),
    })
  })

  it('requeued puts a failed job back in the queue, keeping its checkpoint and clearing its finish', () => {
    const state = reduce([
      created,
      started,
      { type: 'checkpoint', data: { data: { page: 3 } } },
      { type: 'failed', data: { code: 'lease_lost', message: 'worker gone', retryable: true } },
      { type: 'requeued', data: { reason: 'lease_lost', attempt: 1, retryAt: null } },
    ])
    expect(state).toMatchObject({ status: 'queued', attempt: 1, finishedAt: null, result: null, checkpoint: { page: 3 } })
  })

  it('requeued from running (lost worker) and started again clears the previous error', () => {
    const state = reduce([
      created,
      started,
      { type: 'requeued', data: { reason: 'lease_lost', attempt: 1, retryAt: null } },
      { type: 'started', data: { attempt: 2, worker: 'w2' } },
    ])
    expect(state).toMatchObject({ status: 'running', attempt: 2, error: null, startedAt: at(3) })
  })

  it('requeued with counted: false (no handler ran that attempt) takes the attempt back, so the next start reuses its number', () => {
    const released = reduce([created, started, { type: 'requeued', data: { reason: 'worker stopping', attempt: 1, retryAt: null, counted: false } }])
    expect(released).toMatchObject({ status: 'queued', attempt: 0, maxAttempts: 3 })
    const again = reduce([
      created,
      started,
      { type: 'requeued', data: { reason: 'worker stopping', attempt: 1, retryAt: null, counted: false } },
      started,
      { type: 'requeued', data: { reason: 'worker_lost', attempt: 1, retryAt: null } },
    ])
    expect(again).toMatchObject({ status: 'queued', attempt: 1 })
  })

  it('every event type moves updatedAt and seq forward', () => {
    const drafts: EventDraft[] = [
      created,
      started,
      { type: 'progress', data: { percent: 1 } },
      { type: 'item', data: { id: 'x' } },
      { type: 'chunk', data: { text: 't' } },
      { type: 'checkpoint', data: { data: 1 } },
      { type: 'failed', data: { code: 'e', message: 'm', retryable: true } },
      { type: 'requeued', data: { reason: 'retry', attempt: 1, retryAt: null } },
      { type: 'cancelled', data: { reason: null } },
    ]
    // Together with the completed case above this is every event type.
    expect(new Set([...drafts.map((d) => d.type), 'completed'])).toEqual(new Set(eventTypes))
    const log = logOf(drafts)
    let state: JobState | null = null
    for (const event of log) {
      state = applyEvent(state, event)
      expect(state.seq).toBe(event.seq)
      expect(state.updatedAt).toBe(event.at)
    }
  })
})

describe('applyEvent: stage timeline', () => {
  it('records each stage change once, in order, with the time it was entered', () => {
    const state = reduce([
      created,
      started,
      { type: 'progress', data: { stage: 'validating' } },
      { type: 'progress', data: { stage: 'validating', percent: 50 } },
      { type: 'progress', data: { percent: 100 } },
      { type: 'progress', data: { stage: 'decoding' } },
      { type: 'progress', data: { stage: 'transcribing', percent: 5 } },
      { type: 'progress', data: { message: 'still transcribing' } },
    ])
    expect(state.stages).toEqual([
      { stage: 'validating', at: at(2) },
      { stage: 'decoding', at: at(5) },
      { stage: 'transcribing', at: at(6) },
    ])
    expect(state.progress).toEqual({ stage: 'transcribing', percent: 5, message: 'still transcribing' })
  })

  it('the timeline keeps the last stageHistoryLimit stage changes', () => {
    const changes = Array.from({ length: stageHistoryLimit + 30 }, (_, i) => ({ type: 'progress' as const, data: { stage: `s${i}` } }))
    const state = reduce([created, started, ...changes])
    expect(state.stages).toHaveLength(stageHistoryLimit)
    expect(state.stages[0]?.stage).toBe('s30')
    expect(state.stages.at(-1)?.stage).toBe(`s${stageHistoryLimit + 29}`)
    expect(state.progress.stage).toBe(`s${stageHistoryLimit + 29}`)
  })

  it('returning to an earlier stage is a new timeline entry', () => {
    const state = reduce([
      created,
      started,
      { type: 'progress', data: { stage: 'a' } },
      { type: 'progress', data: { stage: 'b' } },
      { type: 'progress', data: { stage: 'a' } },
    ])
    expect(state.stages.map((s) => s.stage)).toEqual(['a', 'b', 'a'])
  })
})

describe('applyEvent: item upsert', () => {
  it('updates an item in place by id, keeping the fields the update leaves out', () => {
    const state = reduce([
      created,
      started,
      { type: 'item', data: { id: 'a', label: 'File A', status: 'pending' } },
      { type: 'item', data: { id: 'b', label: 'File B' } },
      { type: 'item', data: { id: 'a', status: 'running', percent: 30, message: 'decoding' } },
      { type: 'item', data: { id: 'a', percent: 60 } },
    ])
    expect(state.items).toEqual([
      { id: 'a', label: 'File A', status: 'running', percent: 60, message: 'decoding', updatedAt: at(5) },
      { id: 'b', label: 'File B', status: 'running', percent: null, message: null, updatedAt: at(3) },
    ])
  })

  it('keeps items in the order they first appeared', () => {
    const state = reduce([
      created,
      started,
      { type: 'item', data: { id: 'c' } },
      { type: 'item', data: { id: 'a' } },
      { type: 'item', data: { id: 'b' } },
      { type: 'item', data: { id: 'a', status: 'completed' } },
      { type: 'item', data: { id: 'c', status: 'skipped' } },
    ])
    expect(state.items.map((item) => `${item.id}:${item.status}`)).toEqual(['c:skipped', 'a:completed', 'b:running'])
  })
})

describe('applyEvent: never mutates its input', () => {
  it('leaves a deep-frozen state untouched through every event type', () => {
    const drafts: EventDraft[] = [
      created,
      started,
      { type: 'progress', data: { stage: 's1', percent: 1, message: 'm' } },
      { type: 'progress', data: { stage: 's2' } },
      { type: 'item', data: { id: 'a', label: 'A' } },
      { type: 'item', data: { id: 'a', status: 'completed' } },
      { type: 'item', data: { id: 'b' } },
      { type: 'chunk', data: { text: 'abc' } },
      { type: 'checkpoint', data: { data: { at: 1 } } },
      { type: 'failed', data: { code: 'x', message: 'y', retryable: true } },
      { type: 'requeued', data: { reason: 'retry', attempt: 1, retryAt: null } },
      { type: 'started', data: { attempt: 2, worker: null } },
      { type: 'completed', data: { result: 42 } },
    ]
    let state: JobState | null = null
    for (const event of logOf(drafts)) {
      const before = state === null ? null : structuredClone(state)
      // Frozen objects throw on any write in strict mode, so a mutation fails loudly here.
      const after: JobState = applyEvent(state === null ? null : deepFreeze(state), deepFreeze(event))
      expect(state).toEqual(before)
      if (state !== null) {
        expect(after).not.toBe(state)
        if (after.items !== state.items) expect(after.items).not.toBe(state.items)
      }
      state = after
    }
    expect(state?.status).toBe('completed')
  })

  it('an item update returns a new items array and leaves the old one as it was', () => {
    const state = reduce([created, started, { type: 'item', data: { id: 'a', percent: 10 } }])
    const oldItems = state.items
    const updated = applyEvent(state, next(state, { type: 'item', data: { id: 'a', percent: 20 } }))
    expect(oldItems[0]?.percent).toBe(10)
    expect(updated.items[0]?.percent).toBe(20)
    expect(updated.items).not.toBe(oldItems)
  })
})

describe('applyEvents: a run of events with one copy of the state', () => {
  const drafts: EventDraft[] = [
    created,
    started,
    { type: 'progress', data: { stage: 's1', percent: 1, message: 'm' } },
    { type: 'item', data: { id: 'a', label: 'A' } },
    { type: 'progress', data: { percent: 40 } },
    { type: 'progress', data: { stage: 's2' } },
    { type: 'item', data: { id: 'a', status: 'completed' } },
    { type: 'item', data: { id: 'b' } },
    { type: 'chunk', data: { text: 'abc' } },
    { type: 'chunk', data: { text: 'def' } },
    { type: 'checkpoint', data: { data: { at: 1 } } },
    { type: 'failed', data: { code: 'x', message: 'y', retryable: true } },
    { type: 'requeued', data: { reason: 'retry', attempt: 1, retryAt: null, maxAttempts: 5 } },
    { type: 'started', data: { attempt: 2, worker: null } },
    { type: 'completed', data: { result: 42 } },
  ]

  it('gives the state applyEvent gives one event at a time, for every split of the log into runs, and never changes its input', () => {
    const log = logOf(drafts)
    const oneByOne: JobState[] = []
    let state: JobState | null = null
    for (const event of log) oneByOne.push((state = applyEvent(state, event)))
    for (let from = 0; from < log.length; from++) {
      for (let to = from + 1; to <= log.length; to++) {
        const before = from === 0 ? null : deepFreeze(structuredClone(oneByOne[from - 1] as JobState))
        const copy = before === null ? null : structuredClone(before)
        const after = applyEvents(before, deepFreeze(log.slice(from, to)))
        expect(after).toEqual(oneByOne[to - 1])
        expect(before).toEqual(copy)
        if (before !== null) expect(after).not.toBe(before)
      }
    }
  })

  it('a long run of item events (looked up through an index once there are more than a few) gives the same items, in the same order', () => {
    const random = seededRandom(7)
    const statuses = ['pending', 'running', 'completed', 'failed', 'skipped'] as const
    const items: EventDraft[] = Array.from({ length: 80 }, (_, n) => ({
      type: 'item',
      data: { id: `file-${Math.floor(random() * 30)}`, status: statuses[n % 5], ...(n % 3 === 0 ? { percent: n } : {}), ...(n % 7 === 0 ? { metadata: { n } } : {}) },
    }))
    const log = logOf([created, started, ...items, { type: 'completed', data: { result: null } }])
    let oneByOne: JobState | null = null
    for (const event of log) oneByOne = applyEvent(oneByOne, event)
    for (const cut of [2, 3, 12, 40, 81]) {
      const before = deepFreeze(reduceEvents(log.slice(0, cut)) as JobState)
      const itemsBefore = structuredClone(before.items)
      expect(applyEvents(before, deepFreeze(log.slice(cut)))).toEqual(oneByOne)
      expect(before.items).toEqual(itemsBefore)
    }
    expect(oneByOne?.items.length).toBeGreaterThan(20)
  })

  it('returns the state itself for no events, and throws at the first event that does not belong', () => {
    const state = reduce([created, started])
    expect(applyEvents(state, [])).toBe(state)
    const good = next(state, { type: 'chunk', data: { text: 'a' } })
    const skipped = { ...next(state, { type: 'chunk', data: { text: 'b' } }), seq: state.seq + 3 } as JobEvent
    expect(() => applyEvents(state, [good, skipped])).toThrow(/seq 5 follows 3/)
    expect(state.text).toBe('')
  })
})

describe('applyEvent: refuses events that do not belong', () => {
  it('refuses created on an existing job', () => {
    const state = reduce([created])
    expect(() => applyEvent(state, next(state, created))).toThrow(/created applied twice/)
  })

  it('refuses any event before created', () => {
    expect(() => applyEvent(null, { jobId, seq: 1, type: 'started', at: at(0), data: { attempt: 1, worker: null } })).toThrow(
      /before created/,
    )
  })

  it('refuses an event of another job', () => {
    const state = reduce([created, started])
    const event = { ...next(state, { type: 'chunk', data: { text: 'x' } }), jobId: 'job_BBBBBBBBBBBBBBBBBBBBBB' }
    expect(() => applyEvent(state, event)).toThrow(/applied to job/)
  })

  it('refuses a seq that skips ahead', () => {
    const state = reduce([created, started])
    const event = { ...next(state, { type: 'chunk', data: { text: 'x' } }), seq: state.seq + 2 }
    expect(() => applyEvent(state, event)).toThrow(/seq 4 follows 2/)
  })

  it('refuses a seq already applied (a duplicate delivery)', () => {
    const state = reduce([created, started])
    const event = { ...next(state, { type: 'chunk', data: { text: 'x' } }), seq: state.seq }
    expect(() => applyEvent(state, event)).toThrow(/seq 2 follows 2/)
  })

  it.each<[string, EventDraft[], EventDraft]>([
    ['progress on a queued job', [created], { type: 'progress', data: { percent: 1 } }],
    ['chunk on a queued job', [created], { type: 'chunk', data: { text: 'x' } }],
    ['completed on a queued job', [created], { type: 'completed', data: { result: null } }],
    ['started on a running job', [created, started], started],
    ['chunk after completed', [created, started, { type: 'completed', data: { result: null } }], { type: 'chunk', data: { text: 'x' } }],
    ['requeued after completed', [created, started, { type: 'completed', data: { result: null } }], { type: 'requeued', data: { reason: 'r', attempt: 1, retryAt: null } }],
    ['cancelled after cancelled', [created, { type: 'cancelled', data: { reason: null } }], { type: 'cancelled', data: { reason: null } }],
  ])('refuses %s and does not touch the state', (_name, history, draft) => {
    const state = reduce(history)
    const copy = structuredClone(state)
    expect(() => applyEvent(state, next(state, draft))).toThrow(/is not allowed while/)
    expect(state).toEqual(copy)
  })
})

describe('reduceEvents', () => {
  it('reduces a whole log the same as applying its events one by one', () => {
    const log = logOf([created, started, { type: 'chunk', data: { text: 'a' } }, { type: 'completed', data: { result: 1 } }])
    let state: JobState | null = null
    for (const event of log) state = applyEvent(state, event)
    expect(reduceEvents(log)).toEqual(state)
  })

  it('continues from a snapshot with the rest of the log', () => {
    const log = logOf([created, started, { type: 'chunk', data: { text: 'a' } }, { type: 'chunk', data: { text: 'b' } }])
    const snapshot = reduceEvents(log.slice(0, 2))
    expect(reduceEvents(log.slice(2), snapshot)).toEqual(reduceEvents(log))
  })

  it('answers null for an empty log', () => {
    expect(reduceEvents([])).toBeNull()
  })
})

describe('lifecycle: nextStatus', () => {
  const F: TransitionRefusal = 'job_finished'
  const X: TransitionRefusal = 'invalid_transition'
  // Columns follow eventTypes: created started progress item chunk checkpoint completed failed cancelled requeued
  const table: Record<JobStatus, (JobStatus | TransitionRefusal)[]> = {
    queued: [X, 'running', X, X, X, X, X, 'failed', 'cancelled', X],
    running: [X, X, 'running', 'running', 'running', 'running', 'completed', 'failed', 'cancelled', 'queued'],
    completed: [F, F, F, F, F, F, F, F, F, X],
    failed: [F, F, F, F, F, F, F, F, F, 'queued'],
    cancelled: [F, F, F, F, F, F, F, F, F, 'queued'],
  }

  it('the table covers every status and every event type', () => {
    expect(Object.keys(table).sort()).toEqual([...jobStatuses].sort())
    expect(eventTypes).toEqual([
      'created', 'started', 'progress', 'item', 'chunk', 'checkpoint', 'completed', 'failed', 'cancelled', 'requeued',
    ])
  })

  for (const status of jobStatuses) {
    for (const [column, type] of eventTypes.entries()) {
      const expected = table[status][column]
      it(`${type} on a ${status} job → ${expected}`, () => {
        expect(nextStatus(status, type)).toBe(expected)
      })
    }
  }

  it('needsRunning is true exactly for the work events and completed', () => {
    const needing = eventTypes.filter((type: EventType) => needsRunning(type))
    expect(needing).toEqual(['progress', 'item', 'chunk', 'checkpoint', 'completed'])
  })

  it('the reducer follows the table: what nextStatus refuses, applyEvent refuses', () => {
    const states: Record<JobStatus, JobState> = {
      queued: reduce([created]),
      running: reduce([created, started]),
      completed: reduce([created, started, { type: 'completed', data: { result: null } }]),
      failed: reduce([created, started, { type: 'failed', data: { code: 'c', message: 'm', retryable: true } }]),
      cancelled: reduce([created, started, { type: 'cancelled', data: { reason: null } }]),
    }
    const sample: Record<EventType, EventDraft> = {
      created,
      started,
      progress: { type: 'progress', data: { percent: 5 } },
      item: { type: 'item', data: { id: 'i' } },
      chunk: { type: 'chunk', data: { text: 'x' } },
      checkpoint: { type: 'checkpoint', data: { data: 1 } },
      completed: { type: 'completed', data: { result: 1 } },
      failed: { type: 'failed', data: { code: 'c', message: 'm', retryable: false } },
      cancelled: { type: 'cancelled', data: { reason: null } },
      requeued: { type: 'requeued', data: { reason: 'r', attempt: 2, retryAt: null } },
    }
    for (const status of jobStatuses) {
      for (const type of eventTypes) {
        const state = states[status]
        const expected = nextStatus(status, type)
        const apply = () => applyEvent(state, next(state, sample[type]))
        if (expected === 'job_finished' || expected === 'invalid_transition') expect(apply, `${type} on ${status}`).toThrow()
        else expect(apply().status, `${type} on ${status}`).toBe(expected)
      }
    }
  })
})

describe('applyEvent: metadata', () => {
  it('merges progress metadata latest-wins per key, keeps it across stages, and removes a key set to null', () => {
    const state = reduce([
      created,
      started,
      { type: 'progress', data: { stage: 'decoding', metadata: { chunksProcessed: 1, totalChunks: 40, codec: 'opus' } } },
      { type: 'progress', data: { percent: 10, metadata: { chunksProcessed: 4 } } },
      { type: 'progress', data: { stage: 'transcribing', metadata: { codec: null } } },
    ])
    expect(state.progress).toEqual({ stage: 'transcribing', percent: null, message: null, metadata: { chunksProcessed: 4, totalChunks: 40 } })
  })

  it('keeps each item its own metadata, merged across its updates', () => {
    const state = reduce([
      created,
      started,
      { type: 'item', data: { id: 'a.wav', metadata: { bytes: 100 } } },
      { type: 'item', data: { id: 'b.wav', metadata: { bytes: 7 } } },
      { type: 'item', data: { id: 'a.wav', status: 'completed', metadata: { words: 12 } } },
    ])
    expect(state.items.map((item) => [item.id, item.metadata])).toEqual([
      ['a.wav', { bytes: 100, words: 12 }],
      ['b.wav', { bytes: 7 }],
    ])
  })

  it('leaves progress and items without metadata as they were (no metadata key)', () => {
    const state = reduce([created, started, { type: 'progress', data: { percent: 3 } }, { type: 'item', data: { id: 'x' } }])
    expect('metadata' in state.progress).toBe(false)
    expect('metadata' in (state.items[0] as object)).toBe(false)
  })

  it('does not change the metadata object an earlier state holds', () => {
    const before = deepFreeze(reduce([created, started, { type: 'progress', data: { metadata: { a: 1 } } }]))
    const after = applyEvent(before, next(before, { type: 'progress', data: { metadata: { b: 2 } } }))
    expect(before.progress.metadata).toEqual({ a: 1 })
    expect(after.progress.metadata).toEqual({ a: 1, b: 2 })
  })
})

describe('applyEvent: stage plans', () => {
  const plan = [
    { name: 'validating', from: 0, to: 10 },
    { name: 'decoding', from: 10, to: 20 },
    { name: 'transcribing', from: 20, to: 70 },
    { name: 'synthesizing', from: 70, to: 100 },
  ]
  const planned: EventDraft = { type: 'created', data: { ...(created.data as object), plan } as Extract<EventDraft, { type: 'created' }>['data'] }
  const statuses = (state: JobState) => state.plan?.map((stage) => `${stage.name}:${stage.status}`)

  it('a new job holds its plan with every stage pending', () => {
    expect(reduce([planned]).plan).toEqual(plan.map((stage) => ({ ...stage, status: 'pending', fraction: null })))
  })

  it('computes the overall percent from the stage and its fraction', () => {
    const state = reduce([planned, started, { type: 'progress', data: { stage: 'transcribing', fraction: 0.5 } }])
    expect(state.progress.percent).toBe(45)
    expect(state.plan?.find((stage) => stage.name === 'transcribing')).toMatchObject({ status: 'running', fraction: 0.5 })
  })

  it('entering a stage puts the percent at its start; a fraction without a stage applies to the current one', () => {
    const entered = reduce([planned, started, { type: 'progress', data: { stage: 'decoding' } }])
    expect(entered.progress.percent).toBe(10)
    const later = applyEvent(entered, next(entered, { type: 'progress', data: { fraction: 0.25 } }))
    expect(later.progress.percent).toBe(12.5)
  })

  it('marks earlier stages done when they ran and skipped when they never started', () => {
    const state = reduce([
      planned,
      started,
      { type: 'progress', data: { stage: 'validating', fraction: 1 } },
      { type: 'progress', data: { stage: 'transcribing', fraction: 0.1 } },
    ])
    expect(statuses(state)).toEqual(['validating:done', 'decoding:skipped', 'transcribing:running', 'synthesizing:pending'])
  })

  it('completion marks the running stage done and the stages never reached skipped', () => {
    const state = reduce([
      planned,
      started,
      { type: 'progress', data: { stage: 'decoding', fraction: 0.5 } },
      { type: 'completed', data: { result: null } },
    ])
    expect(statuses(state)).toEqual(['validating:skipped', 'decoding:done', 'transcribing:skipped', 'synthesizing:skipped'])
    expect(state.progress.percent).toBe(100)
  })

  it('a failed or cancelled job marks the stage it was in failed or cancelled, at its fraction; a resume that passes it marks it done', () => {
    const failed = reduce([
      planned,
      started,
      { type: 'progress', data: { stage: 'decoding', fraction: 0.5 } },
      { type: 'failed', data: { code: 'audio_corrupt', message: 'bad header', retryable: false } },
    ])
    expect(statuses(failed)).toEqual(['validating:skipped', 'decoding:failed', 'transcribing:pending', 'synthesizing:pending'])
    expect(failed.plan?.[1]?.fraction).toBe(0.5)
    const resumed: EventDraft[] = [
      { type: 'requeued', data: { reason: 'resumed', attempt: 1, retryAt: null } },
      { type: 'started', data: { attempt: 2, worker: 'w2' } },
      { type: 'progress', data: { stage: 'transcribing', fraction: 0.2 } },
    ]
    const passed = resumed.reduce((state, draft) => applyEvent(state, next(state, draft)), failed)
    expect(statuses(passed)).toEqual(['validating:skipped', 'decoding:done', 'transcribing:running', 'synthesizing:pending'])
    const cancelled = applyEvent(passed, next(passed, { type: 'cancelled', data: { reason: null } }))
    expect(statuses(cancelled)).toEqual(['validating:skipped', 'decoding:done', 'transcribing:cancelled', 'synthesizing:pending'])
  })

  it('going back to an earlier stage (a retry) makes the later ones pending again', () => {
    const state = reduce([
      planned,
      started,
      { type: 'progress', data: { stage: 'transcribing', fraction: 0.9 } },
      { type: 'requeued', data: { reason: 'worker_lost', attempt: 1, retryAt: null } },
      { type: 'started', data: { attempt: 2, worker: 'w2' } },
      { type: 'progress', data: { stage: 'decoding', fraction: 0 } },
    ])
    expect(statuses(state)).toEqual(['validating:skipped', 'decoding:running', 'transcribing:pending', 'synthesizing:pending'])
    expect(state.progress.percent).toBe(10)
  })

  it('an explicit percent wins over the plan; a stage outside the plan leaves the plan as it is', () => {
    const explicit = reduce([planned, started, { type: 'progress', data: { stage: 'decoding', fraction: 0.5, percent: 17 } }])
    expect(explicit.progress.percent).toBe(17)
    const outside = reduce([planned, started, { type: 'progress', data: { stage: 'warming-up', fraction: 0.5 } }])
    expect(statuses(outside)).toEqual(['validating:pending', 'decoding:pending', 'transcribing:pending', 'synthesizing:pending'])
    expect(outside.progress.percent).toBeNull()
  })

  it('a job without a plan has no plan key and ignores fractions', () => {
    const state = reduce([created, started, { type: 'progress', data: { stage: 'a', fraction: 0.5 } }])
    expect('plan' in state).toBe(false)
    expect(state.progress.percent).toBeNull()
  })
})

describe('normalizeStagePlan', () => {
  it('spreads weights over 0–100 in order', () => {
    expect(normalizeStagePlan(['a', { name: 'b', weight: 2 }, { name: 'c', weight: 1 }])).toEqual([
      { name: 'a', from: 0, to: 25 },
      { name: 'b', from: 25, to: 75 },
      { name: 'c', from: 75, to: 100 },
    ])
  })

  it('spreads weights whose sum overflows a double: two stages of 1e308 get 0–50 and 50–100 (0–0 and NaN–100 before)', () => {
    expect(normalizeStagePlan([{ name: 'a', weight: 1e308 }, { name: 'b', weight: 1e308 }])).toEqual([
      { name: 'a', from: 0, to: 50 },
      { name: 'b', from: 50, to: 100 },
    ])
    expect(normalizeStagePlan([{ name: 'a', weight: Number.MAX_VALUE }, 'b', { name: 'c', weight: Number.MAX_VALUE }])).toEqual([
      { name: 'a', from: 0, to: 50 },
      { name: 'b', from: 50, to: 50 },
      { name: 'c', from: 50, to: 100 },
    ])
  })

  it('gives any plan of positive finite weights ranges that are finite, in order, contiguous, from 0 to 100 and proportional (seeded)', () => {
    const random = seededRandom(20261205)
    for (let round = 0; round < 2000; round++) {
      const count = 1 + Math.floor(random() * 50)
      // Weights from the smallest subnormal to the largest double, often several huge ones together.
      const weights = Array.from({ length: count }, () => {
        const pick = random()
        if (pick < 0.2) return Number.MAX_VALUE * (0.5 + random() / 2)
        if (pick < 0.25) return Number.MIN_VALUE
        return Math.max(Number.MIN_VALUE, 10 ** (random() * 630 - 322))
      })
      const plan = normalizeStagePlan(weights.map((weight, i) => ({ name: `s${i}`, weight })))
      const context = `seed round ${round}: ${JSON.stringify(weights)}`
      expect(plan[0]?.from, context).toBe(0)
      expect(plan[plan.length - 1]?.to, context).toBe(100)
      const largest = Math.max(...weights)
      const total = weights.reduce((sum, w) => sum + w / largest, 0)
      plan.forEach((stage, i) => {
        expect(Number.isFinite(stage.from) && Number.isFinite(stage.to), context).toBe(true)
        expect(stage.from <= stage.to, context).toBe(true)
        if (i > 0) expect(stage.from, context).toBe(plan[i - 1]?.to)
        // Each endpoint is rounded to 0.001, so a width is off its share by at most that (and a hair of float error).
        expect(Math.abs(stage.to - stage.from - ((weights[i] as number) / largest / total) * 100), context).toBeLessThanOrEqual(0.0011)
      })
    }
  })

  it('keeps percent ranges, each starting where the previous ended unless it says', () => {
    expect(normalizeStagePlan([{ name: 'validating', to: 10 }, { name: 'decoding', to: 20 }, { name: 'transcribing', from: 20, to: 100 }])).toEqual([
      { name: 'validating', from: 0, to: 10 },
      { name: 'decoding', from: 10, to: 20 },
      { name: 'transcribing', from: 20, to: 100 },
    ])
  })

  it('refuses duplicate names, mixed weights and ranges, overlapping or out-of-range stages, and empty plans', () => {
    expect(() => normalizeStagePlan(['a', 'a'])).toThrow(/appears twice/)
    expect(() => normalizeStagePlan([{ name: 'a', weight: 1 }, { name: 'b', to: 50 }])).toThrow(/not both/)
    expect(() => normalizeStagePlan([{ name: 'a', to: 50 }, { name: 'b', from: 40, to: 60 }])).toThrow(/overlap/)
    expect(() => normalizeStagePlan([{ name: 'a', to: 120 }])).toThrow(/0–100/)
    expect(() => normalizeStagePlan([{ name: 'a', weight: 0 }])).toThrow(/positive/)
    expect(() => normalizeStagePlan([])).toThrow(/at least one/)
  })
})

describe('applyEvent: resume rolls text back', () => {
  it('a checkpoint records the text length it was saved at; a requeue with textLength cuts the text back to it', () => {
    const state = reduce([
      created,
      started,
      { type: 'chunk', data: { text: 'Hello ' } },
      { type: 'checkpoint', data: { data: { step: 1 }, textLength: 6 } },
      { type: 'chunk', data: { text: 'world' } },
      { type: 'failed', data: { code: 'boom', message: 'x', retryable: false } },
      { type: 'requeued', data: { reason: 'resumed', attempt: 1, retryAt: null, maxAttempts: 4, textLength: 6 } },
    ])
    expect(state.checkpointTextLength).toBe(6)
    expect(state.text).toBe('Hello ')
    const resumed = applyEvents(state, [
      next(state, { type: 'started', data: { attempt: 2, worker: 'w' } }),
      { ...next(state, { type: 'chunk', data: { text: 'world' } }), seq: state.seq + 2 },
    ])
    expect(resumed?.text).toBe('Hello world')
  })

  it('a requeue without textLength keeps the text (old logs)', () => {
    const state = reduce([
      created,
      started,
      { type: 'chunk', data: { text: 'abc' } },
      { type: 'requeued', data: { reason: 'worker_lost', attempt: 1, retryAt: null } },
    ])
    expect(state.text).toBe('abc')
  })
})
