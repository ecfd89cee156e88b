import { itemStatuses, mergeMetadata, metadataProblem, type ItemStatus, type JobState, type Metadata } from '@jobwire/protocol'
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
   * `fraction` (0–1, clamped) is how far the stage is, for a job with a stage plan (`job.plan`):
   * the server turns it into the overall percent. `metadata` is merged into the job's progress
   * metadata (latest wins per key, `null` removes a key); past `metadataLimits` once merged
   * (32 keys, 4 KiB of JSON) it throws a RangeError.
   */
  progress(update: ProgressUpdate): void
  /**
   * Reports the job in `stage` of its stage plan, `fraction` (0–1) of the way through: the same as
   * `progress({stage, fraction})`. Throws a RangeError for a stage that is not in `job.plan`.
   */
  stage(name: string, fraction?: number, metadata?: Metadata): void
  /**
   * Progress of one sub-task (a file, a page), merged into the item with this `id` (1–200
   * characters). Updates of one id coalesce: the latest value of each field wins; `metadata` is
   * merged per key within the same limits as `progress`.
   */
  item(id: string, update?: ItemUpdate): void
  /** Appends streamed text. Never dropped or reordered; batched, and split when long. */
  chunk(text: string): void
  /**
   * Saves where to resume from. Sent at once, after everything reported before it; resolves
   * once it is durable on the server. A retry or another worker gets it as `job.checkpoint`
   * (a large one, stored apart by the server, is fetched before the handler runs). Rejects with a
   * RangeError, before any request, past `limits.maxValueBytes` (16 MiB).
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
  /** The run's signal, asked for only when the handler reads `ctx.signal`. */
  signal: () => AbortSignal,
  maxValueBytes: number,
  job?: Pick<JobState, 'plan' | 'progress' | 'items'>,
): JobContext<Checkpoint> {
  // Metadata as the server will hold it, so an update past the merged limits throws here, not in a refused batch.
  let progressMetadata = job?.progress.metadata
  // Made at the first item() (most jobs report none): a Map per job is among what a busy worker pays.
  let itemMetadata: Map<string, Metadata | undefined> | null = null
  let currentStage = job?.progress.stage ?? null
  const progress = (update: ProgressUpdate): void => {
    if (typeof update !== 'object' || update === null) throw new TypeError('progress(): expected {stage?, percent?, message?, fraction?, metadata?}')
    const clean: ProgressUpdate = {}
    if (update.stage !== undefined) clean.stage = identifier('progress(): stage', update.stage, maxStage)
    if (update.percent !== undefined) clean.percent = percentOf('progress(): percent', update.percent)
    if (update.message !== undefined) clean.message = humanText('progress(): message', update.message, maxMessage)
    if (update.fraction !== undefined) {
      const stage = clean.stage ?? currentStage
      if (job !== undefined && !job.plan?.some((entry) => entry.name === stage)) {
        throw new RangeError(`progress(): fraction needs a stage of the job's plan; ${job.plan === undefined ? 'the job has no plan' : `"${stage ?? ''}" is not in it`}`)
      }
      if (typeof update.fraction !== 'number' || Number.isNaN(update.fraction)) throw new TypeError('progress(): fraction must be a number')
      clean.fraction = Math.min(1, Math.max(0, update.fraction))
    }
    if (update.metadata !== undefined) {
      const merged = checkedMetadata('progress()', progressMetadata, update.metadata)
      clean.metadata = update.metadata
      progressMetadata = merged
    }
    if (clean.stage !== undefined) currentStage = clean.stage
    if (Object.keys(clean).length > 0) outbox.progress(clean)
  }
  return new RunContext<Checkpoint>(signal, {
    progress,
    stage: (name, fraction = 0, metadata) => progress({ stage: name, fraction, ...(metadata === undefined ? {} : { metadata }) }),
    item: (id, update = {}) => {
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
      if (update.metadata !== undefined) {
        itemMetadata ??= new Map(job?.items.map((item) => [item.id, item.metadata]))
        itemMetadata.set(id, checkedMetadata('item()', itemMetadata.get(id), update.metadata))
        clean.metadata = update.metadata
      }
      outbox.item(id, clean)
    },
    chunk: (text) => {
      if (typeof text !== 'string') throw new TypeError('chunk(): text must be a string')
      outbox.chunk(text)
    },
    checkpoint: (data) => {
      try {
        if (data === undefined) throw new TypeError('checkpoint(): data must be a JSON value, not undefined')
        const bytes = Buffer.byteLength(JSON.stringify({ type: 'checkpoint', data }))
        if (bytes > maxValueBytes) throw new RangeError(`checkpoint(): ${bytes} bytes of JSON; the limit is ${maxValueBytes} (limits.maxValueBytes, the server's --max-value-bytes)`)
        return outbox.checkpoint(data, bytes)
      } catch (error) {
        return Promise.reject(error)
      }
    },
    flush: () => outbox.flush(),
  })
}

/**
 * A run's context: its reports as functions of its own (a handler may take them out of `ctx`), and
 * `signal` as a getter on the class. A getter written in an object literal gave every context a
 * hidden class of its own, kept in the old generation with that getter's closure, and so the
 * run's objects with it: in a busy worker they outlived young-generation collections until a full
 * one, and the collector took a fifth of the worker's time (docs/benchmarks.md).
 */
class RunContext<Checkpoint> implements JobContext<Checkpoint> {
  declare readonly progress: JobContext<Checkpoint>['progress']
  declare readonly stage: JobContext<Checkpoint>['stage']
  declare readonly item: JobContext<Checkpoint>['item']
  declare readonly chunk: JobContext<Checkpoint>['chunk']
  declare readonly checkpoint: JobContext<Checkpoint>['checkpoint']
  declare readonly flush: JobContext<Checkpoint>['flush']
  readonly #signal: () => AbortSignal

  constructor(signal: () => AbortSignal, reports: Omit<JobContext<Checkpoint>, 'signal'>) {
    this.#signal = signal
    Object.assign(this, reports)
  }

  get signal(): AbortSignal {
    return this.#signal()
  }
}

/** `update` merged into `current`, or a RangeError when the update or the merged result breaks `metadataLimits`. */
function checkedMetadata(what: string, current: Metadata | undefined, update: unknown): Metadata {
  if (typeof update !== 'object' || update === null || Array.isArray(update)) throw new TypeError(`${what}: metadata must be an object`)
  const own = metadataProblem(update as Metadata)
  if (own !== null) throw new RangeError(`${what}: metadata ${own}`)
  const merged = mergeMetadata(current, update as Metadata)
  const problem = metadataProblem(merged)
  if (problem !== null) throw new RangeError(`${what}: metadata merged into the job's ${problem}`)
  return merged
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
