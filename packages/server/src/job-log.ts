import type { Logger } from 'pino'
import type { JobEvent, JobState } from '@jobwire/protocol'
import type { JobObserver } from './core/observer.js'

/**
 * One info line per step of a job's life — created, started, re-queued, finished — each naming the
 * job, its type and its owner's tenant, on whichever node committed it, so an operator can follow a
 * job by its id. Progress, items, chunks and messages are the job's own data and are not logged.
 */
export function jobLifecycleLog(logger: Logger): JobObserver {
  const about = (job: JobState): { jobId: string; type: string; tenant: string | undefined } => ({
    jobId: job.id,
    type: job.type,
    tenant: job.owner?.tenant,
  })
  return {
    jobCreated: (job) => logger.info(about(job), 'job created'),
    committed: (job, events) => {
      for (const event of events) logStep(logger, about(job), event)
    },
    // The watcher got an `internal` error with this id and resumes from `after`; the stack stays here.
    deliveryFailed: ({ jobId, after, seq, errorId, error }) =>
      logger.error({ jobId, after, seq, reqId: errorId, err: error }, 'a stream could not deliver events; it ended with an error'),
  }
}

function logStep(logger: Logger, about: Record<string, unknown>, event: JobEvent): void {
  switch (event.type) {
    case 'started':
      logger.info({ ...about, seq: event.seq, attempt: event.data.attempt, worker: event.data.worker }, 'job started')
      return
    case 'requeued':
      logger.info({ ...about, seq: event.seq, reason: event.data.reason, attempt: event.data.attempt, code: event.data.error?.code, counted: event.data.counted }, 'job re-queued')
      return
    case 'completed':
      logger.info({ ...about, seq: event.seq }, 'job completed')
      return
    case 'failed':
      logger.info({ ...about, seq: event.seq, code: event.data.code, retryable: event.data.retryable }, 'job failed')
      return
    case 'cancelled':
      logger.info({ ...about, seq: event.seq }, 'job cancelled')
      return
    default:
      return
  }
}
