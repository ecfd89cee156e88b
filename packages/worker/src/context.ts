import { itemStatuses, type ItemStatus, type JobState } from '@jobwire/protocol'
import type { ItemUpdate, Outbox, ProgressUpdate } from './outbox.js'

/** A claimed job as the handler gets it: `input` and `checkpoint` typed as the handler declares. */
export type ClaimedJob<Input = unknown, Checkpoint = unknown> = Omit<JobState, 'input' | 'checkpoint'> & {
  input: Input
  /** The last checkpoint a previous attempt saved (`null` on a first run): resume from it. */
  checkpoint: Checkpoint | null
}

/**
 * What a handler reports through. Reports are cheap to call often: they are coalesced and
 * batched per job, sent in order, and retried without duplicates. After the job ends (the
 * handler settled or `signal` aborted), reports are ignored and `checkpoint()` rejects.
 */
export interface JobContext<Checkpoint = unknown> {
  /**
   * Aborts when the job is cancelled, finished elsewhere, its lease is lost, its events are
   * refused, or `worker.stop()` runs out of time. `signal.reason` is a `JobAbortedError` whose
   * `reason` says which. Pass it to `fetch`, child processes and loops.
   */
  readonly signal: AbortSignal
  /**
   * The job's progress. Sent at most once per `throttleMs` (latest values win), but a new
   * `stage` is sent at once, after the previous stage's last update, so no stage is skipped.
   * `percent` is clamped to 0–100; `message` is cut at 2,000 characters; `stage` must be 1–200.
   */
  progress(update: ProgressUpdate): void
  /**
   * Progress of one sub-task (a file, a page), merged into the item with this `id` (1–200
   * characters). Updates of one id coalesce: the latest value of each field wins.
   */
  item(id: string, update?: ItemUpdate): void
  /** Appends streamed text. Never dropped or reordered; batched, and split when long. */
  chunk(text: string): void
  /**
   * Saves where to resume from. Sent at once, after everything reported before it; resolves
   * once it is durable on the server. A retry or another worker gets it as `job.checkpoint`.
   */
  checkpoint(data: Checkpoint): Promise<void>
  /** Sends what is pending now; resolves once everything reported so far is durable. */
  flush(): Promise<void>
}

const maxStage = 200
const maxItemId = 200
const maxLabel = 500
const maxMessage = 2_000

/** The context of one run: checks arguments at the call, so the server never refuses a batch for them. */
export function createContext<Checkpoint>(
  outbox: Outbox,
  signal: AbortSignal,
  maxEventBytes: number,
): JobContext<Checkpoint> {
  return {
    signal,
    progress(update) {
      if (typeof update !== 'object' || update === null) throw new TypeError('progress(): expected {stage?, percent?, message?}')
      const clean: ProgressUpdate = {}
      if (update.stage !== undefined) clean.stage = identifier('progress(): stage', update.stage, maxStage)
      if (update.percent !== undefined) clean.percent = percentOf('progress(): percent', update.percent)
      if (update.message !== undefined) clean.message = humanText('progress(): message', update.message, maxMessage)
      if (Object.keys(clean).length > 0) outbox.progress(clean)
    },
    item(id, update = {}) {
      identifier('item(): id', id, maxItemId)
      if (typeof update !== 'object' || update === null) throw new TypeError('item(): expected {label?, status?, percent?, message?}')
      const clean: ItemUpdate = {}
      if (update.label !== undefined) clean.label = humanText('item(): label', update.label, maxLabel)
      if (update.status !== undefined) {
        if (!(itemStatuses as readonly unknown[]).includes(update.status)) {
          throw new TypeError(`item(): status must be one of ${itemStatuses.join(', ')}`)
        }
        clean.status = update.status as ItemStatus
      }
      if (update.percent !== undefined) clean.percent = percentOf('item(): percent', update.percent)
      if (update.message !== undefined) clean.message = humanText('item(): message', update.message, maxMessage)
      outbox.item(id, clean)
    },
    chunk(text) {
      if (typeof text !== 'string') throw new TypeError('chunk(): text must be a string')
      outbox.chunk(text)
    },
    checkpoint(data) {
      try {
        if (data === undefined) throw new TypeError('checkpoint(): data must be a JSON value, not undefined')
        const bytes = Buffer.byteLength(JSON.stringify({ type: 'checkpoint', data }))
        if (bytes > maxEventBytes) throw new RangeError(`checkpoint(): ${bytes} bytes of JSON; the limit is ${maxEventBytes}`)
        return outbox.checkpoint(data, bytes)
      } catch (error) {
        return Promise.reject(error)
      }
    },
    flush: () => outbox.flush(),
  }
}

function identifier(what: string, value: unknown, max: number): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > max) {
    throw new TypeError(`${what} must be a string of 1–${max} characters`)
  }
  return value
}

function humanText(what: string, value: unknown, max: number): string {
  if (typeof value !== 'string') throw new TypeError(`${what} must be a string`)
  return value.length > max ? `${value.slice(0, max - 1)}…` : value
}

function percentOf(what: string, value: unknown): number {
  if (typeof value !== 'number' || Number.isNaN(value)) throw new TypeError(`${what} must be a number`)
  return Math.min(100, Math.max(0, value))
}
