import { formatJobErrorMessage, isTerminal, JobwireError, type JobState } from '@jobwire/protocol'
import { dueKind } from './apply.js'
import type { AppendDecision, DeadlineSettings, JobTimers, Store } from './store.js'

/** A job's deadline settings from its create request, its type's and the defaults: the job's win, then its type's. */
export function resolveDeadlines(
  requested: DeadlineSettings | undefined,
  byType: DeadlineSettings | undefined,
  defaults: DeadlineSettings,
): DeadlineSettings {
  const out: DeadlineSettings = {}
  for (const source of [defaults, byType ?? {}, requested ?? {}]) {
    for (const [key, value] of Object.entries(source) as [keyof DeadlineSettings, unknown][]) {
      if (value !== undefined) (out as Record<string, unknown>)[key] = value
    }
  }
  // A zero turns a deadline off (a job can opt out of its type's).
  for (const key of ['timeoutMs', 'queueTimeoutMs', 'heartbeatTimeoutMs', 'cancelWhenUnwatchedMs'] as const) if (out[key] === 0) delete out[key]
  if (out.timeoutMs === undefined) {
    delete out.timeoutPer
    delete out.timeoutRetryable
  }
  return out
}

export interface DeadlineBackoff {
  retryBackoffMs: number
  retryBackoffMaxMs: number
}

/**
 * What firing the deadline that is due at `now` appends, decided on the job's current state and
 * timers inside the store's atomic section: nothing when the job finished or the deadline moved
 * meanwhile (another node fired it, a heartbeat came), so each deadline fires exactly once.
 */
function deadlineDecision(job: JobState, timers: JobTimers, now: number, backoff: DeadlineBackoff): AppendDecision {
  if (isTerminal(job.status)) return { events: [] }
  const kind = dueKind(timers, now)
  const settings = timers.settings
  switch (kind) {
    case null:
      return { events: [] }
    case 'timeout': {
      const per = settings.timeoutPer ?? 'job'
      const message = formatJobErrorMessage('timed_out', { timeoutMs: settings.timeoutMs, per })
      // Only a per-attempt timeout can be retried: a whole-job one would fire again at once.
      if (settings.timeoutRetryable === true && per === 'attempt' && job.status === 'running' && job.attempt < job.maxAttempts) {
        const delay = Math.min(backoff.retryBackoffMaxMs, backoff.retryBackoffMs * 2 ** Math.max(0, job.attempt - 1))
        return {
          events: [
            {
              type: 'requeued',
              data: { reason: 'timed_out', attempt: job.attempt, retryAt: new Date(now + delay).toISOString(), error: { code: 'timed_out', message } },
            },
          ],
          lease: null,
          availableAt: now + delay,
        }
      }
      return { events: [{ type: 'failed', data: { code: 'timed_out', message, retryable: false } }], lease: null }
    }
    case 'queueTimeout':
      return {
        events: [{ type: 'failed', data: { code: 'queue_timeout', message: formatJobErrorMessage('queue_timeout', { ...settings }), retryable: false } }],
        lease: null,
      }
    case 'heartbeatTimeout':
      return {
        events: [{ type: 'failed', data: { code: 'runner_lost', message: formatJobErrorMessage('runner_lost', { ...settings }), retryable: false } }],
        lease: null,
      }
    case 'unwatched':
      return { events: [{ type: 'cancelled', data: { reason: 'unwatched' } }], lease: null }
    default:
      return assertNever(kind)
  }
}

/**
 * Fires due deadlines, and keeps the "unwatched" deadline of the jobs watched on this node moving.
 * Every node runs one; the store's index says which jobs are due, and the append that fires one
 * re-checks it, so a node that dies holding nothing loses nothing: another fires it.
 */
export class DeadlineKeeper {
  /** Open subscriptions per job on this node. */
  readonly #watched = new Map<string, number>()
  /** Jobs long-polled since the last refresh. */
  #polled = new Set<string>()
  /** Per watched job: its cancelWhenUnwatched (null: none), and when this node last pushed it back. */
  readonly #unwatched = new Map<string, { ms: number | null; touchedAt: number }>()

  constructor(
    private readonly store: () => Store,
    private readonly backoff: DeadlineBackoff,
    private readonly now: () => number,
  ) {}

  /** Fires what is due now; the number of jobs it ended or re-queued. */
  async fireDue(limit = 200): Promise<number> {
    const store = this.store()
    const now = this.now()
    // All at once: the stores commit them together (one SQLite transaction, pipelined Redis scripts).
    const results = await Promise.all(
      (await store.dueDeadlines(now, limit)).map((jobId) =>
        store.append(jobId, (job, _lease, timers) => deadlineDecision(job, timers, now, this.backoff)).catch((error: unknown) => {
          // Deleted meanwhile: nothing to fire. Anything else is for the next tick.
          if (error instanceof JobwireError && error.code === 'job_not_found') return null
          throw error
        }),
      ),
    )
    return results.filter((result) => result !== null && result.events.length > 0).length
  }

  /** A subscription to `jobId` opened on this node; call the result when it closes. */
  watching(jobId: string): () => void {
    this.#watched.set(jobId, (this.#watched.get(jobId) ?? 0) + 1)
    let done = false
    return () => {
      if (done) return
      done = true
      const left = (this.#watched.get(jobId) ?? 1) - 1
      if (left > 0) this.#watched.set(jobId, left)
      else this.#watched.delete(jobId)
    }
  }

  /** A long-poll asked about `jobId`: it counts as watched at the next refresh. */
  polled(jobId: string): void {
    this.#polled.add(jobId)
  }

  /**
   * Pushes back the unwatched deadline of every job watched here that has one, at most every
   * third of its duration, so a job watched anywhere is never cancelled as unwatched.
   */
  async refreshWatched(): Promise<number> {
    const store = this.store()
    const now = this.now()
    const polled = this.#polled
    this.#polled = new Set()
    for (const id of this.#unwatched.keys()) if (!this.#watched.has(id) && !polled.has(id)) this.#unwatched.delete(id)
    // Every job at once: one after another, a node watching 1,000 jobs on a busy Redis could take
    // longer than a third of the deadline to go round, and a watched job could be cancelled. A job
    // known to have no such deadline, or pushed back lately, costs a lookup: no read, no promise
    // (a node watching 1,000 jobs made 1,000 promises a second for nothing).
    const work: Promise<boolean>[] = []
    const visit = (jobId: string): void => {
      const known = this.#unwatched.get(jobId)
      if (known !== undefined && !pushBackDue(known, now)) return
      work.push(this.#pushBack(store, jobId, known, now))
    }
    for (const jobId of this.#watched.keys()) visit(jobId)
    for (const jobId of polled) if (!this.#watched.has(jobId)) visit(jobId)
    if (work.length === 0) return 0
    return (await Promise.all(work)).filter(Boolean).length
  }

  /** Pushes back one watched job's unwatched deadline (read first if not yet known); whether it did. */
  async #pushBack(store: Store, jobId: string, known: { ms: number | null; touchedAt: number } | undefined, now: number): Promise<boolean> {
    let entry = known
    if (entry === undefined) {
      const record = await store.getRecord(jobId)
      entry = { ms: record?.timers.settings.cancelWhenUnwatchedMs ?? null, touchedAt: -Infinity }
      this.#unwatched.set(jobId, entry)
    }
    if (!pushBackDue(entry, now)) return false
    const result = await store.append(jobId, (job) => (isTerminal(job.status) ? [] : { events: [], touch: { kinds: ['unwatched'], at: now } })).catch(() => null)
    entry.touchedAt = now
    if (result !== null && isTerminal(result.job.status)) entry.ms = null
    return result !== null && !isTerminal(result.job.status)
  }
}

/** Whether a watched job's unwatched deadline is due to be pushed back: it has one, not pushed back in the last third of it. */
function pushBackDue(entry: { ms: number | null; touchedAt: number }, now: number): boolean {
  return entry.ms !== null && now - entry.touchedAt >= entry.ms / 3
}

function assertNever(value: never): never {
  throw new Error(`unhandled deadline ${String(value)}`)
}
