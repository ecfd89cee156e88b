import type { JobEvent } from './events.js'
import type { ItemState, JobState } from './job.js'
import { nextStatus } from './lifecycle.js'

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
    }
  }
  if (state === null) throw new Error(`job ${event.jobId}: ${event.type} before created`)
  if (event.jobId !== state.id) throw new Error(`event of job ${event.jobId} applied to job ${state.id}`)
  if (event.seq !== state.seq + 1) throw new Error(`job ${state.id}: seq ${event.seq} follows ${state.seq}`)
  const status = nextStatus(state.status, event.type)
  if (status === 'job_finished' || status === 'invalid_transition') {
    throw new Error(`job ${state.id}: ${event.type} is not allowed while ${state.status}`)
  }
  // One copy per event (this runs for every event a server commits and every event a client applies).
  const seq = event.seq
  const updatedAt = event.at
  switch (event.type) {
    case 'started':
      return { ...state, status, seq, updatedAt, attempt: event.data.attempt, worker: event.data.worker, startedAt: event.at, error: null, queuePosition: null }
    case 'progress': {
      const { stage, percent, message } = event.data
      const stageChanged = stage !== undefined && stage !== state.progress.stage
      return {
        ...state,
        status,
        seq,
        updatedAt,
        progress: {
          stage: stage ?? state.progress.stage,
          percent: percent ?? (stageChanged ? null : state.progress.percent),
          message: message ?? (stageChanged ? null : state.progress.message),
        },
        stages: stageChanged ? [...state.stages, { stage, at: event.at }] : state.stages,
      }
    }
    case 'item':
      return { ...state, status, seq, updatedAt, items: upsertItem(state.items, event.data, event.at) }
    case 'chunk':
      return { ...state, status, seq, updatedAt, text: state.text + event.data.text }
    case 'checkpoint':
      return { ...state, status, seq, updatedAt, checkpoint: event.data.data }
    case 'completed':
      return {
        ...state,
        status,
        seq,
        updatedAt,
        result: event.data.result,
        finishedAt: event.at,
        progress: { ...state.progress, percent: 100 },
        queuePosition: null,
      }
    case 'failed':
      return { ...state, status, seq, updatedAt, error: { ...event.data }, finishedAt: event.at, queuePosition: null }
    case 'cancelled':
      return { ...state, status, seq, updatedAt, finishedAt: event.at, queuePosition: null }
    case 'requeued':
      return {
        ...state,
        status,
        seq,
        updatedAt,
        worker: null,
        finishedAt: null,
        result: null,
        error: event.data.error === undefined ? null : { ...event.data.error, retryable: true },
        maxAttempts: event.data.maxAttempts ?? state.maxAttempts,
      }
    default:
      return assertNever(event)
  }
}

/** Reduces a whole log (starting with `created`) into the job's state. */
export function reduceEvents(events: Iterable<JobEvent>, from: JobState | null = null): JobState | null {
  let state = from
  for (const event of events) state = applyEvent(state, event)
  return state
}

function upsertItem(items: ItemState[], data: Extract<JobEvent, { type: 'item' }>['data'], at: string): ItemState[] {
  const index = items.findIndex((item) => item.id === data.id)
  const previous = index === -1 ? undefined : items[index]
  const next: ItemState = {
    id: data.id,
    label: data.label ?? previous?.label ?? null,
    status: data.status ?? previous?.status ?? 'running',
    percent: data.percent ?? previous?.percent ?? null,
    message: data.message ?? previous?.message ?? null,
    updatedAt: at,
  }
  if (index === -1) return [...items, next]
  const copy = items.slice()
  copy[index] = next
  return copy
}

function assertNever(value: never): never {
  throw new Error(`unhandled event ${JSON.stringify(value)}`)
}
