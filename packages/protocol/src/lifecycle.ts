import type { EventType } from './events.js'
import { isTerminal, type JobStatus } from './job.js'

/**
 * The state machine: which event may follow which status, and the status it leads to.
 * `null` means the event is refused. Work events keep the status they find.
 */
const transitions: Record<JobStatus, Partial<Record<EventType, JobStatus>>> = {
  queued: { started: 'running', failed: 'failed', cancelled: 'cancelled' },
  running: {
    progress: 'running',
    item: 'running',
    chunk: 'running',
    checkpoint: 'running',
    completed: 'completed',
    failed: 'failed',
    cancelled: 'cancelled',
    requeued: 'queued',
  },
  completed: {},
  failed: { requeued: 'queued' },
  cancelled: { requeued: 'queued' },
}

export type TransitionRefusal = 'job_finished' | 'invalid_transition'

/** The status after `type` is applied to a job in `status`, or why it is refused. */
export function nextStatus(status: JobStatus, type: EventType): JobStatus | TransitionRefusal {
  const next = transitions[status][type]
  if (next !== undefined) return next
  return isTerminal(status) && type !== 'requeued' ? 'job_finished' : 'invalid_transition'
}

/** Events that need a running job; on a queued job the server starts it implicitly first. */
export function needsRunning(type: EventType): boolean {
  return type === 'progress' || type === 'item' || type === 'chunk' || type === 'checkpoint' || type === 'completed'
}
