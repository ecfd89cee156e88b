/**
 * Fixtures for the worker's tests: a real Jobwire server on a free port, a small JSON client to
 * play the backend and the watcher, a worker factory that records `onError`, and manual timers.
 * Every fixture has an explicit teardown.
 */
import { applyEvent, type JobEvent, type JobState, type PollResponse } from '@jobwire/protocol'
import { startServer, type RunningServer } from '../../server/src/server.js'
import { createWorker, type ErrorContext, type Worker, type WorkerOptions } from '../src/index.js'

export const apiKey = 'test-admin-key-123456'

export interface TestServer {
  url: string
  server: RunningServer
  createJob(type: string, input?: unknown): Promise<JobState>
  getJob(id: string): Promise<JobState>
  /** The job's whole log, read the way a polling watcher reads it (`?after=0`, then `after=next`). */
  events(id: string): Promise<JobEvent[]>
  cancel(id: string): Promise<number>
  /** A new API key of `role` (admin's `POST /v1/keys`): its id and the key itself. */
  createKey(role: 'admin' | 'backend' | 'worker'): Promise<{ id: string; key: string }>
  revokeKey(id: string): Promise<void>
  /** Polls the job until `until` holds (bounded by the test's timeout). */
  waitForJob(id: string, until: (job: JobState) => boolean): Promise<JobState>
  close(): Promise<void>
}

export async function startTestServer(config: Record<string, unknown> = {}): Promise<TestServer> {
  const server = await startServer({
    logger: false,
    config: { port: 0, memory: true, apiKey, logLevel: 'silent', ...config },
  })
  const url = server.url
  async function call<T>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
    const response = await fetch(`${url}${path}`, {
      method,
      headers: { authorization: `Bearer ${apiKey}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    })
    const text = await response.text()
    return { status: response.status, body: (text === '' ? null : JSON.parse(text)) as T }
  }
  const getJob = async (id: string): Promise<JobState> => {
    const answer = await call<JobState>('GET', `/v1/jobs/${id}`)
    if (answer.status !== 200) throw new Error(`GET job ${id}: ${answer.status} ${JSON.stringify(answer.body)}`)
    return answer.body
  }
  return {
    url,
    server,
    async createJob(type, input) {
      const answer = await call<JobState>('POST', '/v1/jobs', { type, input })
      if (answer.status !== 201) throw new Error(`create: ${answer.status} ${JSON.stringify(answer.body)}`)
      return answer.body
    },
    getJob,
    async events(id) {
      const events: JobEvent[] = []
      let after = 0
      for (;;) {
        const answer = await call<PollResponse>('GET', `/v1/jobs/${id}/events?after=${after}`)
        if (answer.status !== 200) throw new Error(`poll: ${answer.status} ${JSON.stringify(answer.body)}`)
        if (answer.body.snapshot !== undefined) throw new Error('the log was trimmed; raise maxEventsPerJob')
        events.push(...answer.body.events)
        if (answer.body.events.length === 0) return events
        after = answer.body.next
      }
    },
    async cancel(id) {
      return (await call('POST', `/v1/jobs/${id}/cancel`, {})).status
    },
    async createKey(role) {
      const answer = await call<{ id: string; key: string }>('POST', '/v1/keys', { name: `test ${role} key`, role })
      if (answer.status !== 201) throw new Error(`create key: ${answer.status} ${JSON.stringify(answer.body)}`)
      return answer.body
    },
    async revokeKey(id) {
      const answer = await call('DELETE', `/v1/keys/${id}`)
      if (answer.status !== 200) throw new Error(`revoke key: ${answer.status} ${JSON.stringify(answer.body)}`)
    },
    async waitForJob(id, until) {
      for (;;) {
        const job = await getJob(id)
        if (until(job)) return job
        await new Promise((resolve) => setTimeout(resolve, 20))
      }
    },
    close: () => server.close(),
  }
}

export interface TestWorker {
  worker: Worker
  errors: { error: unknown; context: ErrorContext }[]
}

/** A worker on `server` that records what it reports to `onError`. */
export function startTestWorker(server: TestServer, options: Partial<WorkerOptions> = {}): TestWorker {
  const errors: TestWorker['errors'] = []
  const worker = createWorker({
    url: server.url,
    apiKey,
    name: 'test-worker',
    pollWaitSeconds: 5,
    onError: (error, context) => errors.push({ error, context }),
    ...options,
  })
  return { worker, errors }
}

/** Runs `body` with a started worker and always stops it. */
export async function withWorker(worker: Worker, body: () => Promise<void>): Promise<void> {
  await worker.start()
  try {
    await body()
  } finally {
    await worker.stop({ timeoutMs: 5_000 })
  }
}

/** The job's state rebuilt from its log with the shared reducer: what any watcher shows. */
export function reduceLog(events: JobEvent[]): JobState {
  let state: JobState | null = null
  for (const event of events) state = applyEvent(state, event)
  if (state === null) throw new Error('empty log')
  return state
}

export function codeOf(error: unknown): string | undefined {
  return (error as { code?: string } | null)?.code
}

export { ManualTimers, settle } from '../../../test/support/manual-timers.js'
export { until } from '../../../test/support/wait.js'
