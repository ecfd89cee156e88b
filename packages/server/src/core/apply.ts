import { applyEvent, isTerminal, type JobEvent, type JobState } from '@jobwire/protocol'
import type { AppendPlan, NewJob, Retention } from './store.js'

/**
 * The part of an append every backend shares: run the plan against the current state, number
 * the events, reduce them. Backends wrap it in their own atomic section.
 */
export function applyPlan(job: JobState, plan: AppendPlan, at: string): { job: JobState; events: JobEvent[] } {
  const drafts = plan(job)
  const events: JobEvent[] = []
  let state = job
  for (const draft of drafts) {
    const event = { jobId: job.id, seq: state.seq + 1, type: draft.type, at, data: draft.data } as JobEvent
    state = applyEvent(state, event)
    events.push(event)
  }
  return { job: state, events }
}

export function createdEvent(job: NewJob): JobEvent {
  return { jobId: job.id, seq: 1, type: 'created', at: job.at, data: { type: job.type, input: job.input, owner: job.owner } }
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
