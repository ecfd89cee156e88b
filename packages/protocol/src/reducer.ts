import type { JobEvent } from './events.js'
import type { ItemState, JobState } from './job.js'
import { nextStatus } from './lifecycle.js'
import { mergeMetadata } from './metadata.js'
import { advancePlan, finishPlan, planPercent, startPlan, stopPlan } from './stage-plan.js'

/** How many stage changes a job's `stages` timeline keeps: the most recent ones. */
export const stageHistoryLimit = 100

/**
 * The reducer: a job's state is a pure function of its events. The server, the clients and the
 * tests all run this one function, so a watcher's state is the job's true state.
 *
 * It never mutates its input. It throws on an event that does not belong (wrong job, a seq that
 * is not the next one, a transition the state machine refuses): callers feeding it a stream are
 * expected to have deduplicated and ordered it first.
 */
export function applyEvent(state: JobState | null, event: JobEvent): JobState {
  if (event.type === 'created') {
    if (state !== null) throw new Error(`job ${event.jobId}: created applied twice`)
    return {
      id: event.jobId,
      type: event.data.type,
      owner: event.data.owner,
      input: event.data.input,
      status: 'queued',
      progress: { stage: null, percent: null, message: null },
      stages: [],
      items: [],
      text: '',
      checkpoint: null,
      result: null,
      error: null,
      attempt: 0,
      maxAttempts: event.data.maxAttempts,
      dispatch: event.data.dispatch,
      worker: null,
      queuePosition: null,
      createdAt: event.at,
      startedAt: null,
      finishedAt: null,
      updatedAt: event.at,
      seq: event.seq,
      ...(event.data.plan === undefined ? {} : { plan: startPlan(event.data.plan) }),
    }
  }
  if (state === null) throw new Error(`job ${event.jobId}: ${event.type} before created`)
  const status = admit(state, event)
  const next = { ...state }
  applyTo(next, status, event)
  return next
}

/**
 * Applies consecutive events to `state`: the same result as `applyEvent` one after another, with
 * one copy of the state for the whole run instead of one per event (a server applies each batch a
 * producer sends). Never mutates its input; throws as `applyEvent` does, at the first event that
 * does not belong.
 */
export function applyEvents(state: JobState | null, events: Iterable<JobEvent>): JobState | null {
  let current = state
  // Whether `current` is this call's own copy, free to change in place.
  let owned = false
  // Its items likewise: copied once for the run, not once per item event (see ItemsRun).
  let itemsRun: ItemsRun = { owned: false, index: null, lookups: 0 }
  for (const event of events) {
    if (current === null || event.type === 'created') {
      current = applyEvent(current, event)
      owned = true
      itemsRun = { owned: false, index: null, lookups: 0 }
      continue
    }
    const status = admit(current, event)
    if (!owned) {
      current = { ...current }
      owned = true
    }
    applyTo(current, status, event, itemsRun)
  }
  return current
}

/**
 * What a run of events (applyEvents) knows of its state's items: whether `items` is the run's own
 * copy (the copy of the state it starts from shares the caller's array), and, once a run has looked
 * up more than a few ids, an index of them. A batch of N item events on a job of M items then
 * costs O(N + M), not O(N × M): at 100,000 items, filling a job 500 at a time took minutes.
 */
interface ItemsRun {
  owned: boolean
  index: Map<string, number> | null
  lookups: number
}

/** The status `event` leads `state` to, or throws when the event does not belong there. */
function admit(state: JobState, event: JobEvent): JobState['status'] {
  if (event.jobId !== state.id) throw new Error(`event of job ${event.jobId} applied to job ${state.id}`)
  if (event.seq !== state.seq + 1) throw new Error(`job ${state.id}: seq ${event.seq} follows ${state.seq}`)
  const status = nextStatus(state.status, event.type)
  if (status === 'job_finished' || status === 'invalid_transition') {
    throw new Error(`job ${state.id}: ${event.type} is not allowed while ${state.status}`)
  }
  return status
}

/**
 * Applies an admitted event to `next`, a copy of the state that nobody else holds yet: it sets
 * top-level fields only, and replaces (never changes) the objects and arrays they hold, which the
 * state it was copied from still shares.
 */
function applyTo(next: JobState, status: JobState['status'], event: Exclude<JobEvent, { type: 'created' }>, run?: ItemsRun): void {
  next.status = status
  next.seq = event.seq
  next.updatedAt = event.at
  switch (event.type) {
    case 'started':
      next.attempt = event.data.attempt
      next.worker = event.data.worker
      next.startedAt = event.at
      next.error = null
      next.queuePosition = null
      return
    case 'progress': {
      const { stage, percent, message, fraction, metadata } = event.data
      const before = next.progress
      const stageChanged = stage !== undefined && stage !== before.stage
      const current = stage ?? before.stage
      // With a plan, entering a planned stage or reporting its fraction moves the overall percent.
      let planned: number | undefined
      if (next.plan !== undefined && current !== null && (stageChanged || fraction !== undefined)) {
        const reached = fraction ?? 0
        const plan = advancePlan(next.plan, current, reached)
        const entry = plan?.find((one) => one.name === current)
        if (plan !== null && entry !== undefined) {
          next.plan = plan
          planned = planPercent(entry, reached)
        }
      }
      next.progress = {
        stage: current,
        percent: percent ?? planned ?? (stageChanged ? null : before.percent),
        message: message ?? (stageChanged ? null : before.message),
      }
      if (metadata !== undefined) next.progress.metadata = mergeMetadata(before.metadata, metadata)
      else if (before.metadata !== undefined) next.progress.metadata = before.metadata
      if (stageChanged) {
        // The timeline keeps the last `stageHistoryLimit` changes: a job cycling through stages for
        // hours must not grow a state every write and every snapshot carries.
        const kept = next.stages.length >= stageHistoryLimit ? next.stages.slice(next.stages.length - stageHistoryLimit + 1) : next.stages
        next.stages = [...kept, { stage, at: event.at }]
      }
      return
    }
    case 'item':
      if (run === undefined) next.items = upsertItem(next.items, event.data, event.at)
      else upsertItemInRun(next, run, event.data, event.at)
      return
    case 'chunk':
      next.text = appendText(next.text, event.data.text)
      return
    case 'checkpoint':
      next.checkpoint = event.data.data
      if (event.data.textLength !== undefined) next.checkpointTextLength = event.data.textLength
      // `next` is this call's own copy: dropping a key from it changes no earlier state.
      if (event.data.ref !== undefined) next.checkpointRef = event.data.ref
      else delete next.checkpointRef
      return
    case 'completed':
      next.result = event.data.result
      if (event.data.resultRef !== undefined) next.resultRef = event.data.resultRef
      next.finishedAt = event.at
      next.progress = { ...next.progress, percent: 100 }
      if (next.plan !== undefined) next.plan = finishPlan(next.plan)
      next.queuePosition = null
      return
    case 'failed':
      next.error = { ...event.data }
      next.finishedAt = event.at
      if (next.plan !== undefined) next.plan = stopPlan(next.plan, 'failed')
      next.queuePosition = null
      return
    case 'cancelled':
      next.finishedAt = event.at
      if (next.plan !== undefined) next.plan = stopPlan(next.plan, 'cancelled')
      next.queuePosition = null
      return
    case 'requeued':
      next.worker = null
      next.finishedAt = null
      next.result = null
      next.error = event.data.error === undefined ? null : { ...event.data.error, retryable: true }
      next.maxAttempts = event.data.maxAttempts ?? next.maxAttempts
      if (event.data.counted === false) next.attempt = Math.max(0, event.data.attempt - 1)
      if (event.data.textLength !== undefined) next.text = next.text.slice(0, event.data.textLength)
      return
    default:
      assertNever(event)
  }
}

/**
 * `text + chunk`, flattened now and then. V8 makes `a + b` a rope node pointing at both, so a text
 * streamed as token deltas is a chain of one node and one small string per delta: 8 bytes a
 * character for 4-character deltas (32 MB for a text of 4 M characters), and as many objects for
 * the collector to mark in every job state a server or a page holds. Reading a character of a rope
 * flattens it in place into one string; doing so each time the text grows past one of 8 steps per
 * doubling of its length copies each character ~12 times over the text's life (a few ms for 4 M)
 * and keeps it near 1 byte a character (a scratch loop of 1 M deltas: 8.0 → 1.07, no slower).
 */
function appendText(text: string, chunk: string): string {
  const joined = text + chunk
  if (joined.length >= flattenFrom && lengthStep(joined.length) !== lengthStep(text.length)) _flattened ^= joined.charCodeAt(0)
  return joined
}

/** Texts shorter than this are left as they are (a rope of at most a few dozen deltas). */
const flattenFrom = 256
/** Written so that the read that flattens a text is not optimized away. */
let _flattened = 0

/** A length's step: its power of two and the next three bits, 8 steps per doubling. */
function lengthStep(length: number): number {
  if (length < flattenFrom) return 0
  const top = 31 - Math.clz32(length)
  return (top << 3) | ((length >>> (top - 3)) & 7)
}

/** Reduces a whole log (starting with `created`) into the job's state. */
export function reduceEvents(events: Iterable<JobEvent>, from: JobState | null = null): JobState | null {
  return applyEvents(from, events)
}

type ItemData = Extract<JobEvent, { type: 'item' }>['data']

function upsertItem(items: ItemState[], data: ItemData, at: string): ItemState[] {
  const index = items.findIndex((item) => item.id === data.id)
  const next = itemAfter(index === -1 ? undefined : items[index], data, at)
  if (index === -1) return [...items, next]
  const copy = items.slice()
  copy[index] = next
  return copy
}

/** upsertItem on a run's own copy of the items (made at its first item event), in place. */
function upsertItemInRun(next: JobState, run: ItemsRun, data: ItemData, at: string): void {
  if (!run.owned) {
    next.items = next.items.slice()
    run.owned = true
  }
  const items = next.items
  if (run.index === null && ++run.lookups > 8) run.index = new Map(items.map((item, i) => [item.id, i]))
  const index = run.index === null ? items.findIndex((item) => item.id === data.id) : (run.index.get(data.id) ?? -1)
  const item = itemAfter(index === -1 ? undefined : items[index], data, at)
  if (index !== -1) {
    items[index] = item
    return
  }
  run.index?.set(data.id, items.length)
  items.push(item)
}

function itemAfter(previous: ItemState | undefined, data: ItemData, at: string): ItemState {
  const next: ItemState = {
    id: data.id,
    label: data.label ?? previous?.label ?? null,
    status: data.status ?? previous?.status ?? 'running',
    percent: data.percent ?? previous?.percent ?? null,
    message: data.message ?? previous?.message ?? null,
    updatedAt: at,
  }
  if (data.metadata !== undefined) next.metadata = mergeMetadata(previous?.metadata, data.metadata)
  else if (previous?.metadata !== undefined) next.metadata = previous.metadata
  return next
}

function assertNever(value: never): never {
  throw new Error(`unhandled event ${JSON.stringify(value)}`)
}
