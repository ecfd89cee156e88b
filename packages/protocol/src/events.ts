import type { ItemStatus, Owner, ValueRef } from './job.js'
import type { Metadata } from './metadata.js'
import type { PlannedStage } from './stage-plan.js'

/** Payload of each event type. One entry per type; the unions below are derived from it. */
export interface EventDataMap {
  /** `plan`: the job's stage plan (from its type's config or its create request), when it has one. */
  created: { type: string; input: unknown; owner: Owner | null; dispatch: boolean; maxAttempts: number; plan?: PlannedStage[] }
  started: { attempt: number; worker: string | null }
  /**
   * `fraction` (0–1) is how far `stage` (or the current stage) is, for jobs with a stage plan: the
   * reducer turns it into the overall percent. `metadata` is merged into the job's progress metadata.
   */
  progress: { stage?: string; percent?: number; message?: string; fraction?: number; metadata?: Metadata }
  item: { id: string; label?: string; status?: ItemStatus; percent?: number; message?: string; metadata?: Metadata }
  chunk: { text: string }
  /**
   * `textLength`: how much streamed text the job held when it saved this checkpoint (set by the
   * server). `ref`: the checkpoint was too large for an event and is stored apart (`data` is null);
   * fetch it with `GET /v1/jobs/:id/checkpoint`.
   */
  checkpoint: { data: unknown; textLength?: number; ref?: ValueRef }
  /** `resultRef`: the result was too large for an event and is stored apart (`result` is null); fetch it with `GET /v1/jobs/:id/result`. */
  completed: { result: unknown; resultRef?: ValueRef }
  failed: { code: string; message: string; retryable: boolean }
  cancelled: { reason: string | null }
  /**
   * Back to the queue with its checkpoint: `worker_lost`, `released`, `resumed`, or the code of a
   * retryable failure. `retryAt` delays the next claim (backoff); `maxAttempts` raises the limit (resume).
   * `textLength` rolls the streamed text back to that many characters — what the checkpoint the
   * next attempt resumes from held (0 without one) — so text streamed after it is not repeated.
   * `attempt` is the attempt that ended. `counted: false` says it does not count: the job went back
   * before any handler ran it (a worker stopping with jobs it had claimed ahead, a claim whose answer
   * never reached its worker), so the job's `attempt` goes back to `attempt - 1` and the next start
   * takes the same number again.
   */
  requeued: {
    reason: string
    attempt: number
    retryAt: string | null
    maxAttempts?: number
    error?: { code: string; message: string }
    textLength?: number
    counted?: false
  }
}

export type EventType = keyof EventDataMap
/** Every event type, in lifecycle order. A tuple type, so a test fails to compile when EventDataMap gains a type this list lacks. */
export const eventTypes = [
  'created', 'started', 'progress', 'item', 'chunk', 'checkpoint', 'completed', 'failed', 'cancelled', 'requeued',
] as const satisfies readonly EventType[]

/** Events a producer may append through `POST /v1/jobs/:id/events`. */
export type ProducerEventType = 'started' | 'progress' | 'item' | 'chunk' | 'checkpoint' | 'completed' | 'failed'
export const producerEventTypes: readonly ProducerEventType[] = [
  'started', 'progress', 'item', 'chunk', 'checkpoint', 'completed', 'failed',
]

/** An event as stored and delivered: `seq` is contiguous per job from 1, assigned by the store. */
export type JobEvent = {
  [K in EventType]: { jobId: string; seq: number; type: K; at: string; data: EventDataMap[K] }
}[EventType]

export type JobEventOf<K extends EventType> = Extract<JobEvent, { type: K }>

/** An event before the store has numbered it. */
export type EventDraft = { [K in EventType]: { type: K; data: EventDataMap[K] } }[EventType]

/** Event types whose latest event supersedes the earlier ones (see isLatestWins). */
export type LatestWinsType = 'progress' | 'item'

/** Delivery classes: latest-wins events may be coalesced for a slow reader; the rest never are. */
export function isLatestWins(type: EventType): type is LatestWinsType {
  return type === 'progress' || type === 'item'
}

/** isLatestWins for a whole event or draft, narrowing it to the latest-wins types. */
export function isLatestWinsEvent<T extends { type: EventType }>(event: T): event is Extract<T, { type: LatestWinsType }> {
  return isLatestWins(event.type)
}

export function isTerminalEvent(type: EventType): boolean {
  return type === 'completed' || type === 'failed' || type === 'cancelled'
}
