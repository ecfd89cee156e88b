import {
  isTerminal,
  JobwireError,
  needsRunning,
  nextStatus,
  type EventDraft,
  type JobState,
  type Owner,
  type PollResponse,
} from '@jobwire/protocol'
import { newJobId } from './ids.js'
import type { AppendResult, CreateResult, JobPage, JobQuery, Store } from './store.js'
import { JobSubscription, type StreamSink } from './subscription.js'

export interface CoreLimits {
  /** Most characters of streamed text one job may hold. */
  maxTextLength: number
  /** Events read from the log per round trip when replaying. */
  replayPageSize: number
}

export const defaultCoreLimits: CoreLimits = { maxTextLength: 4 * 1024 * 1024, replayPageSize: 1000 }

export interface CreateJobInput {
  type: string
  input?: unknown
  owner?: Owner | null
  idempotencyKey?: string | null
}

/**
 * The rules of a job's life, independent of HTTP and of the storage backend: what may be appended
 * when, idempotent creation and cancel, subscriptions and long-polls.
 */
export class JobService {
  readonly limits: CoreLimits

  constructor(
    readonly store: Store,
    limits: Partial<CoreLimits> = {},
    private readonly now: () => Date = () => new Date(),
  ) {
    this.limits = { ...defaultCoreLimits, ...limits }
  }

  async createJob(input: CreateJobInput): Promise<CreateResult> {
    const result = await this.store.createJob({
      id: newJobId(),
      type: input.type,
      input: input.input ?? null,
      owner: input.owner ?? null,
      idempotencyKey: input.idempotencyKey ?? null,
      at: this.now().toISOString(),
    })
    if (!result.created && result.job.type !== input.type) {
      throw new JobwireError('idempotency_conflict', { key: input.idempotencyKey, jobId: result.job.id })
    }
    return result
  }

  async getJob(jobId: string): Promise<JobState> {
    const job = await this.store.getJob(jobId)
    if (job === null) throw new JobwireError('job_not_found', { jobId })
    return job
  }

  listJobs(query: JobQuery): Promise<JobPage> {
    return this.store.listJobs(query)
  }

  /**
   * Appends a producer's batch atomically. Work events on a queued job start it first (an
   * implicit `started` in the same batch), so simple producers need not send one.
   */
  appendEvents(jobId: string, drafts: EventDraft[]): Promise<AppendResult> {
    const { maxTextLength } = this.limits
    return this.store.append(jobId, (job) => {
      const out: EventDraft[] = []
      let status = job.status
      let textLength = job.text.length
      drafts.forEach((draft, index) => {
        if (status === 'queued' && needsRunning(draft.type)) {
          out.push({ type: 'started', data: { attempt: job.attempt + 1, worker: null } })
          status = 'running'
        }
        if (draft.type === 'started') draft = { type: 'started', data: { ...draft.data, attempt: job.attempt + 1 } }
        const next = nextStatus(status, draft.type)
        if (next === 'job_finished' || next === 'invalid_transition') {
          throw new JobwireError(next, { jobId, status, type: draft.type, index })
        }
        if (draft.type === 'chunk') {
          textLength += draft.data.text.length
          if (textLength > maxTextLength) throw new JobwireError('text_limit_exceeded', { jobId, limit: maxTextLength, index })
        }
        status = next
        out.push(draft)
      })
      return out
    })
  }

  /** Cancels a queued or running job. Cancelling a cancelled job again is a no-op that returns it. */
  async cancelJob(jobId: string, reason: string | null = null): Promise<AppendResult> {
    return this.store.append(jobId, (job) => {
      if (job.status === 'cancelled') return []
      if (isTerminal(job.status)) throw new JobwireError('job_finished', { jobId, status: job.status })
      return [{ type: 'cancelled', data: { reason } }]
    })
  }

  /** Opens a subscription (see JobSubscription). Rejects with `job_not_found` or `position_ahead`. */
  async subscribe(jobId: string, after: number | undefined, sink: StreamSink): Promise<JobSubscription> {
    const subscription = new JobSubscription(this.store, jobId, sink, this.limits.replayPageSize)
    await subscription.start(after)
    return subscription
  }

  /**
   * Long-poll: the events after `after`, waiting up to `waitMs` for the first one. Without a
   * position, or from a trimmed one, answers with a snapshot instead.
   */
  async poll(jobId: string, after: number | undefined, waitMs: number, signal?: AbortSignal): Promise<PollResponse> {
    if (after === undefined) {
      const job = await this.getJob(jobId)
      return { snapshot: { job, reset: false, reason: 'initial' }, events: [], next: job.seq, done: isTerminal(job.status) }
    }
    let wake: () => void = () => {}
    const woken = new Promise<void>((resolve) => (wake = resolve))
    // Listen before reading, so an event committed between the read and the wait still wakes us.
    const unsubscribe = this.store.subscribe(jobId, () => wake())
    try {
      for (let round = 0; ; round++) {
        const range = await this.store.readLog(jobId, after, this.limits.replayPageSize)
        if (range === null) throw new JobwireError('job_not_found', { jobId })
        if (after > range.head) throw new JobwireError('position_ahead', { jobId, position: after, seq: range.head })
        if (range.firstSeq > after + 1) {
          const job = await this.getJob(jobId)
          return { snapshot: { job, reset: true, reason: 'trimmed' }, events: [], next: job.seq, done: isTerminal(job.status) }
        }
        const last = range.events.at(-1)?.seq ?? after
        const done = isTerminal(range.status) && last === range.head
        if (range.events.length > 0 || done || round > 0 || waitMs <= 0) {
          return { events: range.events, next: last, done }
        }
        await waitFor(woken, waitMs, signal)
      }
    } finally {
      unsubscribe()
    }
  }

  sweep(): Promise<{ expiredJobs: number }> {
    return this.store.sweep(this.now().getTime())
  }
}

function waitFor(woken: Promise<void>, ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms)
    function done(): void {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    signal?.addEventListener('abort', done, { once: true })
    void woken.then(done)
  })
}
