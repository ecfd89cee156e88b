import type { ConnectionState, JobState, JobwireError } from '@jobwire/client'

/** How the job reaches the component; the transport behind it never shows. */
export type JobConnection = 'live' | 'polling' | 'reconnecting' | 'offline'

interface Common {
  jobId: string
  connection: JobConnection
  /** Cancels the job (needs the `cancel` right). */
  cancel(reason?: string): Promise<void>
}

interface Known extends Common {
  /** The whole state, for anything not lifted out below. */
  job: JobState
  progress: JobState['progress']
  items: JobState['items']
  text: string
  queuePosition: number | null
}

/**
 * What `useJob` returns: a union keyed on `status`. Each status carries what makes sense for it
 * (`result` once completed, the job's `error` once failed, the watching `error` when it could not
 * be watched), so a `switch (job.status)` reads naturally and TypeScript checks it.
 */
export type JobView =
  /** No job id given. */
  | (Omit<Common, 'cancel'> & { status: 'idle'; job: null })
  /** Waiting for the first snapshot. */
  | (Common & { status: 'loading'; job: null })
  | (Known & { status: 'queued' | 'running' })
  | (Known & { status: 'completed'; result: unknown })
  | (Known & { status: 'failed'; error: NonNullable<JobState['error']> })
  | (Known & { status: 'cancelled' })
  /** It cannot be watched: `job_not_found` (or out of scope), `unauthorized`… `job` is the last state seen, if any. */
  | (Common & { status: 'error'; job: JobState | null; error: JobwireError })

export function connectionOf(state: ConnectionState, reason: string, online: boolean, previous: JobConnection): JobConnection {
  if (!online || reason === 'offline') return 'offline'
  switch (state) {
    case 'live':
      return 'live'
    case 'polling':
      return 'polling'
    case 'connecting':
    case 'reconnecting':
      return 'reconnecting'
    case 'offline':
      // Retrying stopped (the client's retry cap): the app shows it as the connection lost.
      return 'offline'
    case 'idle':
    case 'closed':
      // Finished: nothing is connected any more, and nothing needs to be.
      return previous
    default:
      return assertNever(state)
  }
}

export function viewOf(
  jobId: string,
  job: JobState | null,
  error: JobwireError | null,
  connection: JobConnection,
  cancel: (reason?: string) => Promise<void>,
): JobView {
  if (error !== null) return { status: 'error', jobId, job, error, connection, cancel }
  if (job === null) return { status: 'loading', jobId, job: null, connection, cancel }
  const known = { jobId, job, progress: job.progress, items: job.items, text: job.text, queuePosition: job.queuePosition, connection, cancel }
  switch (job.status) {
    case 'queued':
    case 'running':
      return { ...known, status: job.status }
    case 'completed':
      return { ...known, status: 'completed', result: job.result }
    case 'failed':
      return { ...known, status: 'failed', error: job.error ?? { code: 'unknown', message: 'The job failed', retryable: false } }
    case 'cancelled':
      return { ...known, status: 'cancelled' }
    default:
      return assertNever(job.status)
  }
}

function assertNever(value: never): never {
  throw new Error(`unhandled ${String(value)}`)
}
