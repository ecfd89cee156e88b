import { applyEvents, isTerminal, type JobEvent, type JobEventOf, type JobState } from '@jobwire/protocol'
import type { AppendPlan, Lease, NewJob, Retention } from './store.js'

export interface AppliedPlan {
  job: JobState
  events: JobEvent[]
  lease: Lease | null
  /** Whether the lease was set or cleared by the plan (it must be persisted even with no events). */
  leaseChanged: boolean
  availableAt: number | undefined
}

/**
 * The part of an append every backend shares: run the plan against the current state, number
 * the events, reduce them. Backends wrap it in their own atomic section.
 */
export function applyPlan(job: JobState, lease: Lease | null, plan: AppendPlan, at: string): AppliedPlan {
  const decision = plan(job, lease)
  const drafts = Array.isArray(decision) ? decision : decision.events
  const nextLease = Array.isArray(decision) || decision.lease === undefined ? lease : decision.lease
  const availableAt = Array.isArray(decision) ? undefined : decision.availableAt
  const events = drafts.map((draft, i) => ({ jobId: job.id, seq: job.seq + 1 + i, type: draft.type, at, data: draft.data }) as JobEvent)
  // applyEvents returns `job` itself when there are no events, never null after it.
  return { job: applyEvents(job, events) as JobState, events, lease: nextLease, leaseChanged: nextLease !== lease, availableAt }
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
    data: { type: job.type, input: job.input, owner: job.owner, dispatch: job.dispatch, maxAttempts: job.maxAttempts },
  }
}

/** When a job may be swept, or null while it is not finished. */
export function expiryOf(job: JobState, retention: Retention): number | null {
  if (!isTerminal(job.status) || job.finishedAt === null) return null
  return Date.parse(job.finishedAt) + retention.ttlMs[job.status]
}

/** Opaque list cursors: the ordinal of the last job on the page. */
export function encodeCursor(ordinal: number): string {
  return Buffer.from(String(ordinal)).toString('base64url')
}

export function decodeCursor(cursor: string | undefined): number | null {
  if (cursor === undefined) return null
  const value = Number(Buffer.from(cursor, 'base64url').toString())
  return Number.isSafeInteger(value) && value > 0 ? value : null
}
