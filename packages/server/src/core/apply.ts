import { applyEvents, isTerminal, JobwireError, type JobEvent, type JobEventOf, type JobState } from '@jobwire/protocol'
import type { AppendPlan, DeadlineKind, DeadlineSettings, JobTimers, Lease, NewJob, Retention } from './store.js'

export interface AppliedPlan {
  job: JobState
  events: JobEvent[]
  lease: Lease | null
  /** Whether the lease was set or cleared by the plan (it must be persisted even with no events). */
  leaseChanged: boolean
  availableAt: number | undefined
  timers: JobTimers
  /** Whether a deadline moved (it must be persisted even with no events). */
  timersChanged: boolean
}

/**
 * The part of an append every backend shares: run the plan against the current state, number
 * the events, reduce them. Backends wrap it in their own atomic section.
 */
export function applyPlan(job: JobState, lease: Lease | null, plan: AppendPlan, at: string, timers: JobTimers = noTimers): AppliedPlan {
  const decision = plan(job, lease, timers)
  const drafts = Array.isArray(decision) ? decision : decision.events
  const nextLease = Array.isArray(decision) || decision.lease === undefined ? lease : decision.lease
  const availableAt = Array.isArray(decision) ? undefined : decision.availableAt
  const touch = Array.isArray(decision) ? undefined : decision.touch
  const events = drafts.map((draft, i) => ({ jobId: job.id, seq: job.seq + 1 + i, type: draft.type, at, data: draft.data }) as JobEvent)
  // applyEvents returns `job` itself when there are no events, never null after it.
  const next = applyEvents(job, events) as JobState
  const nextTimers = events.length === 0 && touch === undefined ? timers : advanceTimers(job, next, events, timers, at, touch)
  return {
    job: next,
    events,
    lease: nextLease,
    leaseChanged: nextLease !== lease,
    availableAt,
    timers: nextTimers,
    timersChanged: nextTimers !== timers,
  }
}

export const noTimers: JobTimers = { settings: {}, due: {} }

/** The deadlines of a job just created at `at` (epoch ms). */
export function initialTimers(settings: DeadlineSettings | undefined, dispatch: boolean, at: number): JobTimers {
  if (settings === undefined || Object.keys(settings).length === 0) return noTimers
  const due: JobTimers['due'] = {}
  if (settings.queueTimeoutMs !== undefined && dispatch) due.queueTimeout = at + settings.queueTimeoutMs
  if (settings.heartbeatTimeoutMs !== undefined && !dispatch) due.heartbeatTimeout = at + settings.heartbeatTimeoutMs
  if (settings.cancelWhenUnwatchedMs !== undefined) due.unwatched = at + settings.cancelWhenUnwatchedMs
  return { settings, due }
}

/**
 * Moves a job's deadlines after a commit at `at`: the queue timeout runs while it waits in the
 * queue (anew each time it enters it), the run timeout from its first start or each start, the
 * runner's heartbeat timeout from its last event or heartbeat, the unwatched one from the last
 * time a watcher was seen. A finished job has none.
 */
function advanceTimers(
  before: JobState,
  after: JobState,
  events: readonly JobEvent[],
  timers: JobTimers,
  atIso: string,
  touch: { kinds: readonly DeadlineKind[]; at: number } | undefined,
): JobTimers {
  const { settings } = timers
  // Most jobs have no deadlines: nothing to parse or copy for them.
  if (Object.keys(settings).length === 0) return timers
  if (isTerminal(after.status)) return Object.keys(timers.due).length === 0 ? timers : { settings, due: {} }
  const at = Date.parse(atIso)
  const due = { ...timers.due }
  const reopened = isTerminal(before.status)
  if (settings.queueTimeoutMs !== undefined) {
    if (!isQueuedForDispatch(after)) delete due.queueTimeout
    else if (reopened || !isQueuedForDispatch(before) || events.some((e) => e.type === 'requeued')) due.queueTimeout = at + settings.queueTimeoutMs
  }
  if (settings.timeoutMs !== undefined) {
    const started = events.some((e) => e.type === 'started')
    if (settings.timeoutPer === 'attempt') {
      if (after.status !== 'running') delete due.timeout
      else if (started) due.timeout = at + settings.timeoutMs
    } else if (started && due.timeout === undefined) {
      due.timeout = at + settings.timeoutMs
    }
  }
  if (settings.heartbeatTimeoutMs !== undefined && !after.dispatch) {
    if (touch?.kinds.includes('heartbeatTimeout') === true) due.heartbeatTimeout = touch.at + settings.heartbeatTimeoutMs
    else if (events.length > 0) due.heartbeatTimeout = at + settings.heartbeatTimeoutMs
  }
  if (settings.cancelWhenUnwatchedMs !== undefined) {
    if (touch?.kinds.includes('unwatched') === true) due.unwatched = touch.at + settings.cancelWhenUnwatchedMs
    else if (reopened) due.unwatched = at + settings.cancelWhenUnwatchedMs
  }
  return sameDue(due, timers.due) ? timers : { settings, due }
}

function sameDue(a: JobTimers['due'], b: JobTimers['due']): boolean {
  const keys = Object.keys(a) as (keyof JobTimers['due'])[]
  return keys.length === Object.keys(b).length && keys.every((key) => a[key] === b[key])
}

/** The earliest deadline of a job (epoch ms), or null when none is set: what the stores index. */
export function nextDeadline(timers: JobTimers): number | null {
  let earliest: number | null = null
  for (const at of Object.values(timers.due)) if (at !== undefined && (earliest === null || at < earliest)) earliest = at
  return earliest
}

/** The deadline that has passed by `now` (the earliest of them), or null. */
export function dueKind(timers: JobTimers, now: number): DeadlineKind | null {
  let found: DeadlineKind | null = null
  for (const [kind, at] of Object.entries(timers.due) as [DeadlineKind, number][]) {
    if (at <= now && (found === null || at < (timers.due[found] as number))) found = kind
  }
  return found
}

/**
 * What a `requeued` event adds so the next attempt's text starts where its checkpoint left it:
 * `textLength` when the job holds text past that point (all of it without a checkpoint). A job
 * whose checkpoint predates text lengths keeps its text.
 */
export function textRewind(job: Pick<JobState, 'checkpoint' | 'checkpointTextLength' | 'checkpointRef'>, textLength: number): { textLength?: number } {
  const keep = job.checkpoint === null && job.checkpointRef === undefined ? 0 : job.checkpointTextLength
  return keep !== undefined && keep < textLength ? { textLength: keep } : {}
}

/** Whether a job waits in its type's dispatch queue. */
export function isQueuedForDispatch(job: JobState): boolean {
  return job.status === 'queued' && job.dispatch
}

export function createdEvent(job: NewJob): JobEventOf<'created'> {
  return {
    jobId: job.id,
    seq: 1,
    type: 'created',
    at: job.at,
    data: {
      type: job.type,
      input: job.input,
      owner: job.owner,
      dispatch: job.dispatch,
      maxAttempts: job.maxAttempts,
      ...(job.plan === undefined ? {} : { plan: job.plan }),
    },
  }
}

/** When a job may be swept, or null while it is not finished. */
export function expiryOf(job: JobState, retention: Retention, timers: JobTimers = noTimers): number | null {
  if (!isTerminal(job.status) || job.finishedAt === null) return null
  return Date.parse(job.finishedAt) + (timers.settings.retentionMs ?? retention.ttlMs[job.status])
}

/** Opaque list cursors: the ordinal of the last job on the page. */
export function encodeCursor(ordinal: number): string {
  return Buffer.from(String(ordinal)).toString('base64url')
}

/**
 * The ordinal a cursor holds; null for none. Text that `encodeCursor` did not make is refused
 * (base64 decoding skips what it cannot read): read as no cursor, it would answer the first page
 * again, and a client that mangles every `nextCursor` the same way (encoded twice, padded) would
 * page from the first page forever.
 */
export function decodeCursor(cursor: string | undefined): number | null {
  if (cursor === undefined) return null
  const value = Number(Buffer.from(cursor, 'base64url').toString())
  if (Number.isSafeInteger(value) && value > 0 && encodeCursor(value) === cursor) return value
  throw new JobwireError('invalid_request', { field: 'cursor', reason: 'cursor: not a cursor this server gave (pass nextCursor as it came)' })
}
