import type { EventDraft, JobEvent, JobEventOf, JobState, JobStatus, Metadata, Owner, PlannedStage } from '@jobwire/protocol'

/** What a new job starts from. The store writes its `created` event as seq 1. */
export interface NewJob {
  id: string
  type: string
  input: unknown
  owner: Owner | null
  idempotencyKey: string | null
  dispatch: boolean
  maxAttempts: number
  /** The job's stage plan, when its type or its create request declares one. */
  plan?: PlannedStage[]
  at: string
  /** Deadlines and retention of this job, resolved at create (job over type over default). */
  deadlines?: DeadlineSettings
}

/**
 * The JSON of a job's input when a durable store keeps it once, apart from the state it rewrites on
 * every write; null when the input is small enough to ride in the state. A job created with a
 * 500 KB document cost 3–4 times the CPU per progress tick of one without, and sent or wrote the
 * document again each time, while the input never changes after the job is created.
 */
export function inputKeptApart(input: unknown): string | null {
  if (input === null || input === undefined) return null
  const json = JSON.stringify(input)
  return json.length >= 1024 ? json : null
}

/** A state as a durable store read it back, with its input put back when it was kept apart (`inputJson`). */
export function withInputKeptApart(job: JobState, inputJson: string | null | undefined): JobState {
  if (inputJson !== null && inputJson !== undefined) job.input = JSON.parse(inputJson) as JobState['input']
  return job
}

/**
 * The state a durable store writes for `job`: without its text (kept in rows or a key of its own,
 * appended to), when `inputApart` without its input (kept once, see inputKeptApart), and when
 * `itemsApart` without its items (kept one by one: an item's update rewrites that item, not every
 * item of the job with every write).
 */
export function storedStateJson(job: JobState, inputApart: boolean, itemsApart = false): string {
  const dropItems = itemsApart && job.items.length > 0
  if (job.text === '' && !inputApart && !dropItems) return JSON.stringify(job)
  return JSON.stringify({ ...job, text: '', ...(inputApart ? { input: null } : {}), ...(dropItems ? { items: [] } : {}) })
}

/**
 * The default byte budget of a durable store's cache of parsed states (`--state-cache-bytes`): it
 * keeps at least the states last written that weigh this much (or its last 50,000 jobs, if those
 * weigh less) and at most about twice as much (core/recent-map.ts).
 */
export const defaultStateCacheBytes = 256 * 1024 ** 2

/**
 * About how many bytes a job's parsed state holds in memory, for a store's byte-bounded cache: its
 * stored JSON (`stateJsonLength`: without its text and items, see storedStateJson), an input kept
 * apart (`inputBytes`), its text at two bytes a character, and its items (`itemsBytes`, see
 * itemsWeight). An estimate, cheap enough for every write: the lengths are of strings the write
 * makes anyway.
 */
export function stateWeight(job: JobState, stateJsonLength: number, inputBytes: number, itemsBytes: number): number {
  return stateJsonLength + inputBytes + 2 * job.text.length + itemsBytes
}

/**
 * What a cache entry of `job` records of its weight: its input's and items' (the next write reuses
 * them) and the whole (stateWeight). `before` is the entry the write started from, if any (itemsWeight).
 */
export function stateWeights(
  job: JobState,
  stateJsonLength: number,
  inputBytes: number,
  before?: { job: JobState; itemsBytes: number },
): { inputBytes: number; itemsBytes: number; bytes: number } {
  const itemsBytes = itemsWeight(job.items, before)
  return { inputBytes, itemsBytes, bytes: stateWeight(job, stateJsonLength, inputBytes, itemsBytes) }
}

/**
 * What a job's items weigh (stateWeight): a fixed part each, their strings at two bytes a
 * character and their metadata by its entries. `before` is the cached entry the write started
 * from: a write without item events keeps the same list, and its weight, so only a write that
 * changed items (and copied the list anyway) walks them.
 */
export function itemsWeight(items: JobState['items'], before?: { job: JobState; itemsBytes: number }): number {
  if (before !== undefined && before.job.items === items) return before.itemsBytes
  let bytes = 0
  for (const item of items) {
    bytes += 160 + 2 * (item.id.length + (item.label?.length ?? 0) + (item.message?.length ?? 0))
    if (item.metadata !== undefined) bytes += metadataWeight(item.metadata)
  }
  return bytes
}

function metadataWeight(metadata: Metadata): number {
  let bytes = 0
  for (const key in metadata) {
    const value = metadata[key]
    bytes += 32 + 2 * key.length + (typeof value === 'string' ? 2 * value.length : typeof value === 'object' && value !== null ? 2 * JSON.stringify(value).length : 16)
  }
  return bytes
}

/** Up to this many ids are looked up in a job's item list one by one; more, through one pass or set of it. */
export const itemScanLimit = 8

/** Finds a job's items by id: by a scan for the first `itemScanLimit` lookups, then through an index made once. */
export function itemFinder(items: JobState['items']): (id: string) => JobState['items'][number] | undefined {
  let index: Map<string, JobState['items'][number]> | null = null
  let lookups = 0
  return (id) => {
    if (index === null && ++lookups > itemScanLimit) index = new Map(items.map((item) => [item.id, item]))
    return index === null ? items.find((item) => item.id === id) : index.get(id)
  }
}

/**
 * The places in `job.items` of the items `events` changed (`job`: the state after them); null when
 * they changed none (most writes: a delta, a tick). A store that keeps items apart rewrites just
 * these. A few are looked up one by one, many in one pass over the items.
 */
export function changedItemPlaces(job: JobState, events: readonly JobEvent[]): number[] | null {
  let ids: Set<string> | null = null
  for (const event of events) if (event.type === 'item') (ids ??= new Set()).add(event.data.id)
  if (ids === null) return null
  if (ids.size <= itemScanLimit) return [...ids].map((id) => job.items.findIndex((item) => item.id === id))
  const places: number[] = []
  job.items.forEach((item, index) => {
    if ((ids as Set<string>).has(item.id)) places.push(index)
  })
  return places
}

/**
 * A job's deadline settings, in milliseconds; an absent one does not apply. Stored beside the job
 * (not in its state), so they survive restarts and every node fires them the same way.
 */
export interface DeadlineSettings {
  /** Longest the job may run: `timeoutPer` says from its first start (`job`) or from each start (`attempt`). */
  timeoutMs?: number
  timeoutPer?: 'job' | 'attempt'
  /** A timed-out attempt with attempts left is re-queued instead of failed. */
  timeoutRetryable?: boolean
  /** Longest the job may wait unclaimed in the queue (each time it enters it). */
  queueTimeoutMs?: number
  /** Self-run jobs (`dispatch: false`): longest without an event or a heartbeat from the runner. */
  heartbeatTimeoutMs?: number
  /** Longest nobody may watch the job (on any node) before it is cancelled with reason `unwatched`. */
  cancelWhenUnwatchedMs?: number
  /** How long the job is kept once finished, whatever its terminal status (else the store's retention). */
  retentionMs?: number
}

export type DeadlineKind = 'timeout' | 'queueTimeout' | 'heartbeatTimeout' | 'unwatched'

/** A job's settings and when each of its deadlines falls (epoch ms); the store indexes the earliest. */
export interface JobTimers {
  settings: DeadlineSettings
  due: Partial<Record<DeadlineKind, number>>
}

/**
 * A worker's claim on a running job. Kept beside the job, never in its state: watchers must not
 * see the token. `lastBatch` makes a worker's retried writes idempotent.
 */
export interface Lease {
  token: string
  worker: string
  /** Epoch milliseconds. */
  expiresAt: number
  /** Highest write batch number applied under this lease. */
  lastBatch: number
  /**
   * The worker's own last write ended the lease (terminal event or retryable failure). Kept so
   * a retry of that write is answered `duplicate` instead of an error; it authorizes nothing.
   */
  ended?: boolean
}

/** What a plan decides beyond its events: the lease after them, and when a queued job may next be claimed. */
export interface AppendDecision {
  events: EventDraft[]
  /** `undefined` keeps the lease as it is; `null` clears it. */
  lease?: Lease | null
  /** Epoch ms before which a queued job is not handed out (retry backoff). */
  availableAt?: number
  /** Deadlines that start over at `at` (the writer's clock, epoch ms): a runner's heartbeat, a watcher seen. */
  touch?: { kinds: DeadlineKind[]; at: number }
}

export interface CreateResult {
  job: JobState
  /** False when the idempotency key named an existing job: `job` is that one. */
  created: boolean
}

/**
 * Decides, from the job's current state, which events to append. Runs inside the store's atomic
 * section (a transaction, or a compare-and-set retry loop), so it must be pure and synchronous.
 * It throws a JobwireError to refuse; returning `[]` appends nothing.
 */
export type AppendPlan = (job: JobState, lease: Lease | null, timers: JobTimers) => EventDraft[] | AppendDecision

export interface AppendResult {
  job: JobState
  events: JobEvent[]
  lease: Lease | null
}

export interface JobRecord {
  job: JobState
  lease: Lease | null
  timers: JobTimers
}

/** A slice of a job's log after some position. */
export interface LogRange {
  events: JobEvent[]
  /** Lowest seq the log still holds (head + 1 when it holds nothing). */
  firstSeq: number
  /** Seq of the job's last event. */
  head: number
  status: JobStatus
}

export interface JobQuery {
  status?: JobStatus
  type?: string
  tenant?: string
  user?: string
  /** Opaque, from a previous page's `nextCursor`. */
  cursor?: string
  limit: number
}

/**
 * A job as a list reads it: its state without its text (only the text's length) and without its
 * input. A list shows neither, and reading them cost a page every listed job's whole text (up to
 * `--max-text-length` each) and any large input.
 */
export type ListedJob = Omit<JobState, 'text' | 'input'> & { textLength: number }

/** `job` as a list shows it (stores that hold the whole state). */
export function listedJob(job: JobState): ListedJob {
  const { text, input: _input, ...rest } = job
  return { ...rest, textLength: text.length }
}

export interface JobPage {
  jobs: ListedJob[]
  nextCursor: string | null
}

export interface SweepResult {
  expiredJobs: number
}

export type Unsubscribe = () => void
/**
 * Receives a job's committed events in seq order, as soon as they commit on any node. An empty
 * batch means events may have been missed (a store's connection dropped): re-read the log.
 * `publishedAt` is when this node's fan-out took the batch (`performance.now()`), so transports
 * can report publish→deliver latency.
 */
export type EventListener = (events: readonly JobEvent[], publishedAt?: number) => void
/** Receives the `created` event (seq 1) of each new job of one owner. */
export type OwnerListener = (created: JobEventOf<'created'>) => void

/** How long finished jobs are kept and how much log each job keeps. */
export interface Retention {
  /** Per-job log cap; older events are trimmed (the snapshot still holds their effect). */
  maxEventsPerJob: number
  /** Milliseconds a finished job is kept, by terminal status. */
  ttlMs: { completed: number; failed: number; cancelled: number }
}

/**
 * Everything core needs from storage. Each backend owns its connections, SQL or scripts; the
 * conformance suite (test/store-conformance.ts) is the contract.
 */
export interface Store {
  readonly kind: string
  createJob(job: NewJob): Promise<CreateResult>
  getJob(id: string): Promise<JobState | null>
  listJobs(query: JobQuery): Promise<JobPage>
  /**
   * Atomically: read the job, run `plan`, number its events from seq + 1, apply them with the
   * reducer, trim the log to the cap, persist, and only then resolve and fan out.
   * Rejects with `job_not_found` for an unknown job, or with whatever `plan` throws.
   */
  append(jobId: string, plan: AppendPlan): Promise<AppendResult>
  /** Events with seq > `after`, at most `limit` of them; `null` when the job does not exist. */
  readLog(jobId: string, after: number, limit: number): Promise<LogRange | null>
  /**
   * Atomically picks the oldest claimable jobs (queued, dispatched, one of `types`, available by
   * `now`), at most `max` of them, and appends `plan`'s decision to each (`plan` runs once per job,
   * so each can get its own lease); `[]` when there is none. FIFO by creation, so a re-queued job
   * goes ahead of younger ones. Each job goes to exactly one claimer, however many claim at once;
   * the jobs of one call are committed together (one transaction, or one round of pipelined
   * compare-and-sets), not one commit per job.
   */
  claim(types: readonly string[], now: number, max: number, plan: AppendPlan): Promise<AppendResult[]>
  /** A job with its lease, for lease checks outside an append. */
  getRecord(id: string): Promise<JobRecord | null>
  /** Ids of running jobs whose lease expired before `now`. */
  expiredLeases(now: number, limit: number): Promise<string[]>
  /**
   * Ids of unfinished jobs with a deadline at or before `now` (earliest first), from an index of
   * each job's earliest deadline, not a scan. Firing one is an append whose plan re-checks it, so
   * of several nodes asking at once exactly one fires it.
   */
  dueDeadlines(now: number, limit: number): Promise<string[]>
  /** 1-based place of a queued dispatched job among its type's queued jobs, else null. */
  queuePosition(jobId: string): Promise<number | null>
  /** Delivers every event committed for `jobId` from now on, on whatever node it was written. */
  subscribe(jobId: string, listener: EventListener): Unsubscribe
  /** Called (without detail) whenever a job of `type` enters or leaves the dispatch queue. */
  subscribeQueue(type: string, listener: () => void): Unsubscribe
  /**
   * Per-owner fan-out for "all my jobs" (the WebSocket user feed): calls `listener` with the
   * `created` event of every job created from now on whose owner is `owner`, on whatever node it
   * was created. At-least-once is enough (the feed ignores a job it already streams); a listener
   * registered before a job's creation commits must hear of it. Backends feed it from their
   * `createJob` commit (`FanOut.publishCreated`); a cross-node backend also needs an owner channel
   * (`FanOut`'s `onFirstOwner`/`onLastOwner` hooks say when one is watched).
   *
   * Optional only while backends adopt it: without it the user feed finds new jobs by listing the
   * owner's jobs every few seconds, which costs more and shows them later.
   */
  subscribeOwner?(owner: Owner, listener: OwnerListener): Unsubscribe
  /**
   * Large values (results and checkpoints too big for an event) are stored once, apart from the
   * log, under a ref the event carries. `putValue` must be durable before it resolves; values go
   * when their job is swept, or with `deleteValue` (a replaced checkpoint).
   */
  putValue(jobId: string, ref: string, json: string): Promise<void>
  /** The JSON stored under `ref`, or null when there is none. */
  getValue(jobId: string, ref: string): Promise<string | null>
  deleteValue(jobId: string, ref: string): Promise<void>
  /** Deletes finished jobs whose TTL has passed. */
  sweep(now: number): Promise<SweepResult>
  /** Cheap liveness check for readiness probes. */
  ping(): Promise<void>
  close(): Promise<void>
}
