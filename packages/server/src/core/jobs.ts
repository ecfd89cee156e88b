import { randomBytes } from 'node:crypto'
import {
  isTerminal,
  JobwireError,
  mergeMetadata,
  metadataProblem,
  needsRunning,
  nextStatus,
  normalizeStagePlan,
  type EventDraft,
  type HeartbeatResponse,
  type JobState,
  type Metadata,
  type Owner,
  type PlannedStage,
  type PollResponse,
  type StageSpec,
  type ValueRef,
} from '@jobwire/protocol'
import { textRewind } from './apply.js'
import { byName } from './by-name.js'
import { newJobId } from './ids.js'
import type { AppendDecision, AppendResult, CreateResult, DeadlineSettings, JobPage, JobQuery, Lease, Store } from './store.js'
import { RecentMap } from './recent-map.js'
import { itemFinder, itemScanLimit } from './store.js'
import { JobSubscription, openAt, withQueuePosition, type Opening, type StreamSink } from './subscription.js'
import { observeStore, type JobObserver } from './observer.js'
import { DeadlineKeeper, resolveDeadlines } from './deadlines.js'
import type { JobFacts } from './access.js'

/** How many jobs' facts a node keeps at least (see JobService.facts). */
const factsKept = 50_000

/** JobService's options: what the config sets (mapped in options.ts), plus two internals tests may change. */
export interface CoreLimits {
  /** Most characters of streamed text one job may hold. */
  maxTextLength: number
  /** Most items (distinct ids of `item` events) one job may hold. */
  maxItemsPerJob: number
  /** Events read from the log per round trip when replaying. Default `replayPageSize`. */
  replayPageSize?: number
  /** Attempts a dispatched job gets unless its type or the job says otherwise. */
  maxAttempts: number
  /** Per-type overrides of `maxAttempts`. */
  maxAttemptsByType: Record<string, number>
  /** First retry delay after a retryable failure; doubles per attempt up to `retryBackoffMaxMs`. */
  retryBackoffMs: number
  /** Default `retryBackoffMaxMs`. */
  retryBackoffMaxMs?: number
  /** Deadlines and retention of every job unless its type or the job says otherwise. */
  deadlines: DeadlineSettings
  /** Per-type overrides of `deadlines`. */
  deadlinesByType: Record<string, DeadlineSettings>
  /** Stage plans by job type (a create request's own plan overrides its type's). */
  stagePlans: Record<string, PlannedStage[]>
  /** A result or checkpoint whose JSON is larger is stored once apart from the log (`putValue`), and its event carries a ref. */
  inlineValueBytes: number
}

/** Events read from the log per round trip when replaying. */
const replayPageSize = 1000
/** Longest retry backoff: the doubling stops here. */
const retryBackoffMaxMs = 60_000

export interface CreateJobInput {
  type: string
  input?: unknown
  owner?: Owner | null
  idempotencyKey?: string | null
  /** False: the creator runs the job itself and no worker may claim it. Default true. */
  dispatch?: boolean
  maxAttempts?: number
  /** This job's deadlines and retention; they override its type's and the defaults (0 turns one off). */
  deadlines?: DeadlineSettings
  /** The job's own stage plan; without one, its type's plan (if any) applies. */
  stages?: StageSpec[]
}

/** Who is writing: a worker holding a lease (with its batch number), or a backend (no lease). */
export interface WriteContext {
  lease?: string
  /** The worker's write batch number under this lease (1, 2, 3, …); a repeat is a retry and appends nothing. */
  batch?: number
  /**
   * Store each result or checkpoint larger than `inlineValueBytes` apart from the log, with a ref
   * in its event (writes over HTTP do). In-process callers that leave it out append values inline.
   */
  storeLargeValues?: boolean
}

export interface AppendOutcome extends AppendResult {
  /** The batch was already applied (a retried request): nothing was appended. */
  duplicate: boolean
}

/**
 * The rules of a job's life, independent of HTTP and of the storage backend: what may be appended
 * when, idempotent creation and cancel, subscriptions and long-polls.
 */
export class JobService {
  readonly limits: Required<CoreLimits>
  /** The store, wrapped so that `observer` hears of every commit and store call. */
  readonly store: Store
  /** Fires due deadlines and keeps watched jobs from counting as unwatched. */
  readonly deadlines: DeadlineKeeper
  #openPolls = 0
  /** Recently seen jobs' facts (id, type, owner: they never change): at least the last `factsKept` seen, at most twice as many (~100 bytes each). */
  readonly #facts = new RecentMap<string, JobFacts>(factsKept)

  constructor(
    store: Store,
    limits: CoreLimits,
    private readonly now: () => Date = () => new Date(),
    private readonly observer: JobObserver = {},
  ) {
    this.limits = { replayPageSize, retryBackoffMaxMs, ...limits }
    this.store = Object.keys(observer).length === 0 ? store : observeStore(store, observer)
    this.deadlines = new DeadlineKeeper(() => this.store, this.limits, () => this.now().getTime())
  }

  async createJob(input: CreateJobInput): Promise<CreateResult> {
    const plan = input.stages === undefined ? byName(this.limits.stagePlans, input.type) : planOf(input.stages)
    const result = await this.store.createJob({
      id: newJobId(),
      type: input.type,
      input: input.input ?? null,
      owner: input.owner ?? null,
      idempotencyKey: input.idempotencyKey ?? null,
      dispatch: input.dispatch ?? true,
      maxAttempts: input.maxAttempts ?? byName(this.limits.maxAttemptsByType, input.type) ?? this.limits.maxAttempts,
      ...(plan === undefined ? {} : { plan }),
      at: this.now().toISOString(),
      deadlines: resolveDeadlines(input.deadlines, byName(this.limits.deadlinesByType, input.type), this.limits.deadlines),
    })
    if (!result.created && result.job.type !== input.type) {
      throw new JobwireError('idempotency_conflict', { key: input.idempotencyKey, jobId: result.job.id })
    }
    this.rememberFacts(result.job)
    return result
  }

  /**
   * What authorization reads of a job (access.ts), kept per node: a job's id, type and owner never
   * change, so its producer's writes are authorized without reading it again — on Redis, one round
   * trip and one parse of the whole state less per request. A job deleted since is still refused
   * (job_not_found) by the write itself.
   */
  async facts(jobId: string): Promise<JobFacts | null> {
    const known = this.#facts.get(jobId)
    if (known !== undefined) return known
    const job = await this.store.getJob(jobId)
    return job === null ? null : this.rememberFacts(job)
  }

  /** Keeps a job's facts seen elsewhere (a claim hands its jobs out): its next write is authorized without a read. */
  rememberFacts(job: JobState): JobFacts {
    const facts: JobFacts = { id: job.id, type: job.type, owner: job.owner }
    this.#facts.set(job.id, facts)
    return facts
  }

  /** The job's snapshot, with its queue position filled in while it waits for a worker. */
  async getJob(jobId: string): Promise<JobState> {
    const job = await this.store.getJob(jobId)
    if (job === null) throw new JobwireError('job_not_found', { jobId })
    return this.withQueuePosition(job)
  }

  withQueuePosition<J extends Pick<JobState, 'id' | 'status' | 'dispatch' | 'queuePosition'>>(job: J): Promise<J> {
    return withQueuePosition(this.store, job)
  }

  listJobs(query: JobQuery): Promise<JobPage> {
    return this.store.listJobs(query)
  }

  /**
   * Appends a producer's batch atomically. Work events on a queued job start it first (an
   * implicit `started` in the same batch), so simple producers need not send one. A job that a
   * worker holds takes writes only with that worker's current lease; a retryable failure with
   * attempts left re-queues the job (with backoff) instead of failing it.
   */
  async appendEvents(jobId: string, input: EventDraft[], context: WriteContext = {}): Promise<AppendOutcome> {
    // Only a result or a checkpoint can be large: most writes (a delta, a tick) skip the step and its await.
    const { drafts, refs } =
      context.storeLargeValues === true && input.some(holdsValue) ? await this.#storeLargeValues(jobId, input) : { drafts: input, refs: [] }
    let replaced: string | undefined
    let result: AppendOutcome
    try {
      result = await this.#append(jobId, drafts, context, (job) => (replaced = job.checkpointRef?.ref))
    } catch (error) {
      if (refs.length > 0) await this.#dropValues(jobId, refs)
      throw error
    }
    // Values no event of the job's state points to any more: a replaced checkpoint, a retried batch's copies.
    if (refs.length > 0 || replaced !== undefined) {
      const kept = new Set([result.job.checkpointRef?.ref, result.job.resultRef?.ref])
      const dropped = [...refs, ...(replaced === undefined ? [] : [replaced])].filter((ref) => !kept.has(ref))
      if (dropped.length > 0) await this.#dropValues(jobId, dropped)
    }
    return result
  }

  /**
   * Stores each result or checkpoint larger than `inlineValueBytes` apart from the log, and
   * returns the drafts with a ref in its place (the value itself null).
   */
  async #storeLargeValues(jobId: string, drafts: EventDraft[]): Promise<{ drafts: EventDraft[]; refs: string[] }> {
    let out = drafts
    const refs: string[] = []
    for (const [index, draft] of drafts.entries()) {
      if (!holdsValue(draft)) continue
      const json = JSON.stringify((draft.type === 'completed' ? draft.data.result : draft.data.data) ?? null)
      const size = Buffer.byteLength(json)
      if (size <= this.limits.inlineValueBytes) continue
      if (refs.length === 0) {
        // A value is never stored for a job that does not exist: nothing would ever sweep it.
        if ((await this.store.getJob(jobId)) === null) throw new JobwireError('job_not_found', { jobId })
        out = drafts.slice()
      }
      const ref: ValueRef = { ref: `v_${randomBytes(12).toString('base64url')}`, size }
      await this.store.putValue(jobId, ref.ref, json)
      refs.push(ref.ref)
      out[index] = draft.type === 'completed'
        ? { type: 'completed', data: { result: null, resultRef: ref } }
        : { type: 'checkpoint', data: { ...draft.data, data: null, ref } }
    }
    return { drafts: out, refs }
  }

  /** Deletes values nothing refers to; a failure leaves them to the job's sweep. */
  async #dropValues(jobId: string, refs: string[]): Promise<void> {
    await Promise.all(refs.map((ref) => this.store.deleteValue(jobId, ref).catch(() => undefined)))
  }

  /**
   * The JSON of a job's result or checkpoint, wherever it is kept: inline in the state, or
   * stored apart under the state's ref (read again if a newer checkpoint replaced it meanwhile).
   */
  async valueJson(jobId: string, which: 'result' | 'checkpoint', job?: JobState): Promise<string> {
    for (let attempt = 0; attempt < 3; attempt++) {
      const state = attempt === 0 && job !== undefined ? job : await this.getJob(jobId)
      const ref = which === 'result' ? state.resultRef : state.checkpointRef
      if (ref === undefined) return JSON.stringify((which === 'result' ? state.result : state.checkpoint) ?? null)
      const json = await this.store.getValue(jobId, ref.ref)
      if (json !== null) return json
    }
    throw new JobwireError('unavailable', { reason: `the ${which} of job ${jobId} changed while it was read; retry` })
  }

  async #append(jobId: string, drafts: EventDraft[], context: WriteContext, seen: (job: JobState) => void): Promise<AppendOutcome> {
    const { maxTextLength, maxItemsPerJob } = this.limits
    const now = this.now().getTime()
    let duplicate = false
    const result = await this.store.append(jobId, (job, lease): AppendDecision => {
      seen(job)
      // A compare-and-set store may run the plan again on a newer state.
      duplicate = false
      if (lease !== null && context.lease === lease.token && context.batch !== undefined && context.batch <= lease.lastBatch) {
        duplicate = true
        return { events: [] }
      }
      if (context.lease !== undefined || (lease !== null && lease.ended !== true)) {
        const reason = leaseProblem(lease, context.lease, now)
        if (reason !== null) {
          // A worker retrying a batch the job took just before it finished gets the truth, not lease_lost.
          if (isTerminal(job.status)) throw new JobwireError('job_finished', { jobId, status: job.status, type: drafts[0]?.type })
          throw new JobwireError('lease_lost', { jobId, reason })
        }
      }
      const out: EventDraft[] = []
      let status = job.status
      let textLength = job.text.length
      checkItemLimit(job, drafts, maxItemsPerJob)
      const merged = new MetadataCheck(job)
      // The text and checkpoint as they stand after each draft, for a retry's rewind.
      let checkpointed: Pick<JobState, 'checkpoint' | 'checkpointTextLength' | 'checkpointRef'> = job
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
        if (draft.type === 'checkpoint') {
          draft = { type: 'checkpoint', data: { ...draft.data, textLength } }
          checkpointed = { checkpoint: draft.data.data, checkpointTextLength: textLength, ...(draft.data.ref === undefined ? {} : { checkpointRef: draft.data.ref }) }
        }
        if (draft.type === 'progress' || draft.type === 'item') merged.add(draft, index)
        status = next
        out.push(draft)
      })
      const last = out.at(-1)
      if (lease === null || lease.ended === true) return { events: out }
      // Field by field: a spread followed by a property its source lacks (`ended`) took V8's slow
      // path, ~1.5 µs per finished job here (every Lease has these fields and no others).
      const ended = (): Lease => ({ token: lease.token, worker: lease.worker, expiresAt: 0, lastBatch: context.batch ?? lease.lastBatch, ended: true })
      if (last?.type === 'failed' && last.data.retryable && job.attempt < job.maxAttempts) {
        // A retryable failure with attempts left goes back to the queue, after a backoff.
        const delay = Math.min(this.limits.retryBackoffMaxMs, this.limits.retryBackoffMs * 2 ** Math.max(0, job.attempt - 1))
        out[out.length - 1] = {
          type: 'requeued',
          data: {
            reason: last.data.code,
            attempt: job.attempt,
            retryAt: new Date(now + delay).toISOString(),
            error: { code: last.data.code, message: last.data.message },
            ...textRewind(checkpointed, textLength),
          },
        }
        return { events: out, lease: ended(), availableAt: now + delay }
      }
      const finished = last !== undefined && (last.type === 'completed' || last.type === 'failed')
      return { events: out, lease: finished ? ended() : { ...lease, lastBatch: context.batch ?? lease.lastBatch } }
    })
    return { job: result.job, events: result.events, lease: result.lease, duplicate }
  }

  /**
   * Cancels a queued or running job; its worker learns at once (signals) and its later writes are
   * refused. Cancelling a cancelled job again is a no-op that returns it.
   */
  async cancelJob(jobId: string, reason: string | null = null): Promise<AppendResult> {
    return this.store.append(jobId, (job) => {
      if (job.status === 'cancelled') return []
      if (isTerminal(job.status)) throw new JobwireError('job_finished', { jobId, status: job.status })
      return { events: [{ type: 'cancelled', data: { reason } }], lease: null }
    })
  }

  /**
   * Puts a failed or cancelled job back in the queue with its last checkpoint, as a new attempt
   * with a fresh attempt budget. Watchers see it continue on the same log.
   */
  async resumeJob(jobId: string): Promise<AppendResult> {
    return this.store.append(jobId, (job) => {
      if (job.status !== 'failed' && job.status !== 'cancelled') {
        throw new JobwireError(job.status === 'completed' ? 'job_finished' : 'invalid_transition', {
          jobId,
          status: job.status,
          type: 'requeued',
        })
      }
      const budget = byName(this.limits.maxAttemptsByType, job.type) ?? this.limits.maxAttempts
      return {
        events: [{ type: 'requeued', data: { reason: 'resumed', attempt: job.attempt, retryAt: null, maxAttempts: job.attempt + budget, ...textRewind(job, job.text.length) } }],
        lease: null,
        availableAt: 0,
      }
    })
  }

  /**
   * Opens a subscription (see JobSubscription). Rejects with `job_not_found` or `position_ahead`.
   * `via` names the transport asking, for metrics (in-process subscribers: `internal`).
   */
  async subscribe(jobId: string, after: number | undefined, sink: StreamSink, via = 'internal'): Promise<JobSubscription> {
    const subscription = new JobSubscription(
      this.store,
      jobId,
      sink,
      this.limits.replayPageSize,
      (start) => this.observer.subscriptionStarted?.(start, via),
      (failure) => this.observer.deliveryFailed?.(failure),
      this.deadlines.watching(jobId),
    )
    await subscription.start(after)
    return subscription
  }

  /**
   * A self-run job's runner says it is alive (`POST /v1/jobs/:id/heartbeat` without a lease):
   * its `heartbeatTimeout` starts over. A dispatched job's worker heartbeats its lease instead.
   */
  async runnerHeartbeat(jobId: string): Promise<HeartbeatResponse> {
    const now = this.now().getTime()
    const result = await this.store.append(jobId, (job) => {
      if (job.dispatch) throw new JobwireError('invalid_request', { reason: `job ${jobId} is dispatched to workers: heartbeat its lease (send "lease")` })
      if (isTerminal(job.status)) return []
      return { events: [], touch: { kinds: ['heartbeatTimeout'], at: now } }
    })
    const record = await this.store.getRecord(jobId)
    const due = record?.timers.due.heartbeatTimeout
    return {
      status: result.job.status,
      cancelled: result.job.status === 'cancelled',
      expiresAt: due === undefined ? null : new Date(due).toISOString(),
      timedOut: result.job.error?.code === 'timed_out' && result.job.status === 'failed',
    }
  }

  /**
   * Long-poll: the events after `after` (one page; `more` says the log holds more), waiting up to
   * `waitMs` for the first one. Opens where a stream would (`openAt`): without a position, or from
   * a trimmed one, answers with a snapshot instead. `onWoken` hears when an answer carries events
   * that arrived while it waited (their fan-out time, for metrics).
   */
  async poll(jobId: string, after: number | undefined, waitMs: number, signal?: AbortSignal, onWoken?: (publishedAt: number) => void): Promise<PollResponse> {
    this.deadlines.polled(jobId)
    if (after === undefined) return this.#pollAnswer(await openAt(this.store, jobId, undefined, this.limits.replayPageSize))
    let wake: () => void = () => {}
    const woken = new Promise<void>((resolve) => (wake = resolve))
    let wokenAt: number | undefined
    // Listen before reading, so an event committed between the read and the wait still wakes us.
    const unsubscribe = this.store.subscribe(jobId, (events, publishedAt) => {
      if (events.length > 0) wokenAt ??= publishedAt
      wake()
    })
    this.#openPolls++
    try {
      for (let round = 0; ; round++) {
        const opening = await openAt(this.store, jobId, after, this.limits.replayPageSize)
        const answer = this.#pollAnswer(opening)
        if (answer.events.length > 0 || answer.done || opening.kind === 'snapshot' || round > 0 || waitMs <= 0) {
          if (round > 0 && answer.events.length > 0 && wokenAt !== undefined) onWoken?.(wokenAt)
          return answer
        }
        await waitFor(woken, waitMs, signal)
      }
    } finally {
      this.#openPolls--
      unsubscribe()
    }
  }

  /** A stream's opening as a long-poll answer; a snapshot counts as a subscription start (metrics). */
  #pollAnswer(opening: Opening): PollResponse {
    if (opening.kind === 'snapshot') {
      const { job, reset } = opening
      this.observer.subscriptionStarted?.(reset ? 'reset' : 'initial', 'poll')
      return { snapshot: { job, reset, reason: reset ? 'trimmed' : 'initial' }, events: [], next: job.seq, done: isTerminal(job.status), more: false }
    }
    const next = opening.events.at(-1)?.seq ?? opening.after
    return { events: opening.events, next, done: isTerminal(opening.status) && next === opening.head, more: next < opening.head }
  }

  /** Long-polls in progress on this node (metrics). */
  get openPolls(): number {
    return this.#openPolls
  }

  sweep(): Promise<{ expiredJobs: number }> {
    return this.store.sweep(this.now().getTime())
  }
}

/** A create request's stage plan as percent ranges, or `invalid_request` saying what is wrong with it. */
function planOf(specs: StageSpec[]): PlannedStage[] {
  try {
    return normalizeStagePlan(specs)
  } catch (error) {
    if (!(error instanceof RangeError)) throw error
    throw new JobwireError('invalid_request', { field: 'stages', reason: `stages: ${error.message}` })
  }
}

/**
 * Follows one batch's progress and item events over the job's state: their merged metadata must
 * keep `metadataLimits`, and a `fraction` needs a stage of the job's plan.
 */
class MetadataCheck {
  #stage: string | null
  #progress: Metadata | undefined
  /** Each item's metadata as this batch leaves it, for the items it touched. */
  readonly #items = new Map<string, Metadata | undefined>()
  /** The job's stored items by id (a scan per draft was O(drafts × items)). */
  readonly #stored: ReturnType<typeof itemFinder>

  constructor(private readonly job: JobState) {
    this.#stage = job.progress.stage
    this.#progress = job.progress.metadata
    this.#stored = itemFinder(job.items)
  }

  add(draft: Extract<EventDraft, { type: 'progress' | 'item' }>, index: number): void {
    if (draft.type === 'progress') {
      this.#stage = draft.data.stage ?? this.#stage
      if (draft.data.fraction !== undefined && !this.job.plan?.some((stage) => stage.name === this.#stage)) {
        const reason = this.job.plan === undefined ? 'the job has no stage plan' : `stage "${this.#stage ?? ''}" is not in the job's plan`
        throw new JobwireError('invalid_request', { field: 'fraction', index, reason: `fraction: ${reason}` })
      }
      if (draft.data.metadata === undefined) return
      this.#progress = this.#check(this.#progress, draft.data.metadata, index, 'progress')
      return
    }
    if (draft.data.metadata === undefined) return
    const { id } = draft.data
    const current = this.#items.has(id) ? this.#items.get(id) : this.#stored(id)?.metadata
    this.#items.set(id, this.#check(current, draft.data.metadata, index, `item "${id}"`))
  }

  #check(current: Metadata | undefined, update: Metadata, index: number, what: string): Metadata {
    const next = mergeMetadata(current, update)
    const problem = metadataProblem(next)
    if (problem !== null) throw new JobwireError('invalid_request', { field: 'metadata', index, reason: `metadata: the ${what} metadata merged ${problem}` })
    return next
  }
}

/** Why a write under `token` is not allowed, or null when the lease is current. */
export function leaseProblem(lease: Lease | null, token: string | undefined, now: number): string | null {
  if (lease === null || lease.ended === true) return 'the job holds no lease (it was re-queued, released or finished)'
  if (token === undefined) return 'the job is held by a worker; writes must carry its lease'
  if (lease.token !== token) return 'another worker holds the job now'
  if (lease.expiresAt < now) return 'the lease expired; heartbeat sooner'
  return null
}

export function waitFor(woken: Promise<void>, ms: number, signal: AbortSignal | undefined): Promise<void> {
  // Aborted already (a client gone while its long-poll read the job): its 'abort' came and goes no
  // more, and the poll held its stream slot for its whole wait.
  if (signal?.aborted === true) return Promise.resolve()
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

/** Whether a draft carries a value that may be stored apart from the log (a result or a checkpoint). */
function holdsValue(draft: EventDraft): draft is Extract<EventDraft, { type: 'completed' | 'checkpoint' }> {
  return draft.type === 'completed' || draft.type === 'checkpoint'
}

/**
 * Refuses a batch whose `item` events would give the job more than `limit` distinct items: a
 * job's items live in its state, which every write carries (and every snapshot sends), so they are
 * bounded like its text. Batches well under the limit are not looked at item by item.
 */
function checkItemLimit(job: JobState, drafts: readonly EventDraft[], limit: number): void {
  let items = 0
  for (const draft of drafts) if (draft.type === 'item') items++
  if (items === 0 || job.items.length + items <= limit) return
  // Near the limit only new ids count. A job at its limit takes every update of its items, each
  // write checked against its list: for a few drafts a scan of it, for many a set of its ids.
  const known = items <= itemScanLimit ? null : new Set(job.items.map((item) => item.id))
  const added = new Set<string>()
  drafts.forEach((draft, index) => {
    if (draft.type !== 'item') return
    const { id } = draft.data
    if (added.has(id) || (known === null ? job.items.some((item) => item.id === id) : known.has(id))) return
    added.add(id)
    if (job.items.length + added.size > limit) throw new JobwireError('item_limit_exceeded', { jobId: job.id, limit, index })
  })
}
