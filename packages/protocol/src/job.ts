import type { Metadata } from './metadata.js'
import type { StagePlanEntry } from './stage-plan.js'

/** A value stored once, apart from the log and snapshots (a large result or checkpoint): its id and its size in bytes of JSON. */
export interface ValueRef {
  ref: string
  size: number
}

/** A job's lifecycle status. `completed`, `failed` and `cancelled` are terminal. */
export type JobStatus = 'queued' | 'running' | 'completed' | 'failed' | 'cancelled'
/** Every status, in lifecycle order (a tuple type: a test fails to compile when JobStatus gains one this list lacks). */
export const jobStatuses = ['queued', 'running', 'completed', 'failed', 'cancelled'] as const satisfies readonly JobStatus[]
export type TerminalStatus = 'completed' | 'failed' | 'cancelled'

export function isTerminal(status: JobStatus): status is TerminalStatus {
  return status === 'completed' || status === 'failed' || status === 'cancelled'
}

/** The statuses a job can still leave (every one but the terminal ones): what "unfinished jobs" lists ask for. */
export const activeStatuses: readonly Exclude<JobStatus, TerminalStatus>[] = /* @__PURE__ */ jobStatuses.filter(
  (status): status is Exclude<JobStatus, TerminalStatus> => !isTerminal(status),
)

/** Who a job belongs to. Scopes (tokens, lists) are checked against it. */
export interface Owner {
  tenant: string
  user: string
}

export interface Progress {
  stage: string | null
  percent: number | null
  message: string | null
  /** App data merged from `progress` events (latest wins per key); absent until a first one. */
  metadata?: Metadata
}

export type ItemStatus = 'pending' | 'running' | 'completed' | 'failed' | 'skipped'
export const itemStatuses: readonly ItemStatus[] = ['pending', 'running', 'completed', 'failed', 'skipped']

/** Progress of one sub-task (a file, a page, a step), keyed by `id`. */
export interface ItemState {
  id: string
  label: string | null
  status: ItemStatus
  percent: number | null
  message: string | null
  /** App data merged from this item's updates (latest wins per key); absent until a first one. */
  metadata?: Metadata
  updatedAt: string
}

/** One entry of the stage timeline: when the job entered `stage`. */
export interface StageEntry {
  stage: string
  at: string
}

export interface JobErrorInfo {
  code: string
  message: string
  retryable: boolean
}

/**
 * A job's state: the reduction of its events up to and including `seq`. Everything a watcher
 * shows comes from here; a snapshot is this object at some seq.
 */
export interface JobState {
  id: string
  type: string
  owner: Owner | null
  input: unknown
  status: JobStatus
  progress: Progress
  stages: StageEntry[]
  /**
   * The job's stage plan with each stage's status and fraction, for jobs whose type or create
   * request declared one (absent otherwise). With a plan, `progress.percent` follows the stages.
   */
  plan?: StagePlanEntry[]
  items: ItemState[]
  /** All streamed text so far, in order. */
  text: string
  checkpoint: unknown
  /**
   * Characters of `text` when the checkpoint was saved: a re-queued job's text is rolled back to
   * it. Absent before a first checkpoint.
   */
  checkpointTextLength?: number
  /** Present when the checkpoint is stored apart (too large for an event): `checkpoint` is null; `GET /v1/jobs/:id/checkpoint` has it. */
  checkpointRef?: ValueRef
  result: unknown
  /** Present when the result is stored apart (too large for an event): `result` is null; `GET /v1/jobs/:id/result` has it. */
  resultRef?: ValueRef
  error: JobErrorInfo | null
  /** Run attempt, 0 until the job first starts; each `started` adds one. */
  attempt: number
  /** Attempts allowed before a lost worker or a retryable failure fails the job for good. */
  maxAttempts: number
  /** False for jobs their creator runs itself; true for jobs handed to workers through claims. */
  dispatch: boolean
  /** Name of the worker running the current attempt, if it said. */
  worker: string | null
  /**
   * 1-based place in its type's queue while queued for dispatch, else null. Not derived from
   * events: the server fills it in snapshots and sends `queue` messages when it moves.
   */
  queuePosition: number | null
  createdAt: string
  startedAt: string | null
  finishedAt: string | null
  updatedAt: string
  /** Seq of the last event applied. */
  seq: number
}
