import type { CreateJobRequest, ErrorResponse, JobState } from '@jobwire/protocol'
import type { Session } from './session.js'

/**
 * What the dashboard does besides watching and cancelling (which the client does): resume,
 * retry and new demo jobs. In demo mode they go through the server's /demo routes, which act
 * only on demo jobs; with an API key through /v1.
 */
export interface JobActions {
  canResume: boolean
  canCreate: boolean
  /** Puts a failed or cancelled job back in the queue; answers with its state. */
  resume(jobId: string): Promise<JobState>
  /** A new job of the same type and input; returns its id. */
  retry(job: JobState): Promise<string>
  createDemo(type: string): Promise<string>
}

export function jobActions(session: Session): JobActions {
  const demo = session.kind === 'demo'
  const key = session.kind === 'key'
  const auth = { authorization: `Bearer ${session.token}` }
  return {
    canResume: demo || key,
    canCreate: demo || key,
    async resume(jobId) {
      const path = demo ? `/demo/jobs/${encodeURIComponent(jobId)}/resume` : `/v1/jobs/${encodeURIComponent(jobId)}/resume`
      return send<JobState>(path, {}, demo ? {} : auth)
    },
    async retry(job) {
      if (demo) return (await send<JobState>('/demo/jobs', { type: job.type }, {})).id
      const body: CreateJobRequest = { type: job.type, input: job.input, ...(job.owner === null ? {} : { owner: job.owner }) }
      return (await send<JobState>('/v1/jobs', body, auth)).id
    },
    async createDemo(type) {
      return (await send<JobState>('/demo/jobs', { type }, {})).id
    },
  }
}

async function send<T>(path: string, body: unknown, headers: Record<string, string>): Promise<T> {
  const response = await fetch(path, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
  const parsed = (await response.json().catch(() => null)) as Partial<ErrorResponse> | null
  if (!response.ok) {
    const error = parsed?.error
    throw new Error(error === undefined ? `HTTP ${response.status}` : `${error.code}: ${error.message}`)
  }
  return parsed as T
}
