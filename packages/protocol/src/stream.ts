import type { ErrorBody } from './errors.js'
import type { JobEvent } from './events.js'
import type { JobState } from './job.js'

/**
 * Why a subscription starts with a snapshot: `initial` when no position was given, `trimmed`
 * when the given position is older than the log still holds (the client must reset its state).
 */
export type SnapshotReason = 'initial' | 'trimmed'

/** What a job subscription delivers, in order, whatever the transport. */
export type StreamMessage =
  | { type: 'snapshot'; job: JobState; reset: boolean; reason: SnapshotReason }
  /** The subscription resumed from a position the log still held: the events that follow are exactly the missing ones. */
  | { type: 'recovered'; after: number }
  | { type: 'event'; event: JobEvent }
  /** A queued job moved in its queue (not a log event: it has no seq). */
  | { type: 'queue'; position: number | null }
  | { type: 'error'; error: ErrorBody }

/** Body of `GET /v1/jobs/:id/events` (long-poll): the same messages a stream would carry. */
export interface PollResponse {
  /** Present when the poll had no position or its position was trimmed: replace local state with it. */
  snapshot?: { job: JobState; reset: boolean; reason: SnapshotReason }
  events: JobEvent[]
  /** The position to send as `after` next time. */
  next: number
  /** True once the job is terminal and every event up to it was delivered: stop polling. */
  done: boolean
  /** True when the log holds more events after `next` than one answer carries: poll again at once. */
  more: boolean
}
