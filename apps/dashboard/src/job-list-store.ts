import { JobwireError, type JobListPage, type JobListQuery, type JobState } from '@jobwire/client'
import type { ListFilters } from './route.js'

/** A job as a row shows it: a summary from the list, or a live state without its heavy parts. */
export type ListedJob = Omit<JobState, 'text' | 'input' | 'result' | 'checkpoint'>

export interface JobListSnapshot {
  /** Newest first. */
  rows: readonly ListedJob[]
  phase: 'loading' | 'ready' | 'error'
  /** Why the first page, or the last "load more", failed. */
  error: JobwireError | null
  /** Older jobs are on the server, one `loadMore` away. */
  hasMore: boolean
  loadingMore: boolean
  /** Whether the last request reached the server. */
  reachable: boolean
}

export interface JobListOptions {
  /** Jobs per page. Default 50. */
  pageSize?: number
  /** How often the newest page is listed again, for jobs created since. Default 5 s. */
  refreshMs?: number
  /** Whether the page is shown; listing pauses while it is not. Default: the document's visibility. */
  visibility?: Visibility
}

export interface Visibility {
  visible(): boolean
  /** Calls `onChange` on every change until the returned function is called. */
  subscribe(onChange: () => void): () => void
}

const documentVisibility: Visibility = {
  visible: () => document.visibilityState !== 'hidden',
  subscribe(onChange) {
    document.addEventListener('visibilitychange', onChange)
    return () => document.removeEventListener('visibilitychange', onChange)
  },
}

/**
 * The jobs list's data, for any number of jobs: pages of `GET /v1/jobs` (newest first, filtered by
 * the server), "load more" for older ones, the newest page listed again every few seconds so jobs
 * created since join at the top, and newer states of listed jobs noted as they arrive (live
 * watches, the user feed, an action's answer). A state replaces a row only when its seq is newer,
 * so whichever source is behind never rolls a row back.
 */
export class JobListStore {
  #snapshot: JobListSnapshot = { rows: [], phase: 'loading', error: null, hasMore: false, loadingMore: false, reachable: true }
  #rows: ListedJob[] = []
  readonly #byId = new Map<string, ListedJob>()
  #cursor: string | null = null
  #loaded = false
  readonly #listeners = new Set<() => void>()
  #running = false
  #timer: ReturnType<typeof setTimeout> | null = null
  #refreshing: AbortController | null = null
  #emitQueued = false
  readonly #pageSize: number
  readonly #refreshMs: number
  readonly #visibility: Visibility
  #stopVisibility: (() => void) | null = null

  constructor(
    private readonly lister: { listJobs(query: JobListQuery): Promise<JobListPage> },
    readonly filters: ListFilters,
    options: JobListOptions = {},
  ) {
    this.#pageSize = options.pageSize ?? 50
    this.#refreshMs = options.refreshMs ?? 5_000
    this.#visibility = options.visibility ?? documentVisibility
  }

  /** For useSyncExternalStore: listing runs while someone is subscribed. */
  readonly subscribe = (listener: () => void): (() => void) => {
    this.#listeners.add(listener)
    if (this.#listeners.size === 1) this.#start()
    return () => {
      this.#listeners.delete(listener)
      if (this.#listeners.size === 0) this.#stop()
    }
  }

  readonly getSnapshot = (): JobListSnapshot => this.#snapshot

  /** The row of `jobId`, if listed. */
  row(jobId: string): ListedJob | undefined {
    return this.#byId.get(jobId)
  }

  /** Appends the next (older) page. */
  async loadMore(): Promise<void> {
    if (!this.#loaded || this.#cursor === null || this.#snapshot.loadingMore) return
    this.#update({ loadingMore: true })
    try {
      const page = await this.lister.listJobs({ ...this.#query(), cursor: this.#cursor })
      this.#append(page.jobs)
      this.#cursor = page.nextCursor
      this.#update({ loadingMore: false, error: null, reachable: true })
    } catch (error) {
      this.#update({ loadingMore: false, error: asError(error), reachable: false })
    }
  }

  /** A newer state of a job: updates its row, or adds the job when it belongs in the list as loaded. */
  note(job: ListedJob): void {
    if (this.#merge(job)) this.#emitSoon()
  }

  #start(): void {
    this.#running = true
    this.#stopVisibility = this.#visibility.subscribe(this.#onVisibility)
    void this.#refresh()
  }

  #stop(): void {
    this.#running = false
    this.#stopVisibility?.()
    this.#stopVisibility = null
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
    this.#refreshing?.abort()
    this.#refreshing = null
  }

  readonly #onVisibility = (): void => {
    if (this.#visibility.visible() && this.#running && this.#refreshing === null) void this.#refresh()
  }

  /** Lists the newest page: the first load, then every `refreshMs` while the tab is visible. */
  async #refresh(): Promise<void> {
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
    if (!this.#running) return
    if (!this.#visibility.visible() && this.#loaded) return
    const controller = new AbortController()
    this.#refreshing = controller
    try {
      const page = await this.lister.listJobs({ ...this.#query(), limit: this.#pageSize, signal: controller.signal })
      if (controller.signal.aborted) return
      if (!this.#loaded) {
        this.#loaded = true
        this.#cursor = page.nextCursor
        this.#append(page.jobs)
      } else {
        for (const job of page.jobs) this.#merge(job)
      }
      this.#update({ phase: 'ready', error: null, reachable: true })
    } catch (error) {
      if (controller.signal.aborted) return
      this.#update(this.#loaded ? { reachable: false } : { phase: 'error', error: asError(error), reachable: false })
    } finally {
      if (this.#refreshing === controller) this.#refreshing = null
    }
    if (this.#running) this.#timer = setTimeout(() => void this.#refresh(), this.#refreshMs)
  }

  #query(): JobListQuery {
    const { status, type, owner } = this.filters
    const [tenant, user] = owner.split(':')
    return {
      limit: this.#pageSize,
      ...(status === '' ? {} : { status }),
      ...(type === '' ? {} : { type }),
      ...(tenant === undefined || tenant === '' ? {} : { owner: user === undefined || user === '' ? { tenant } : { tenant, user } }),
    }
  }

  /** A page, below what is listed (the cursor keeps pages from overlapping; live notes may have added a job already). */
  #append(jobs: readonly ListedJob[]): void {
    for (const job of jobs) {
      if (this.#byId.has(job.id)) {
        this.#merge(job)
        continue
      }
      const row = listed(job)
      this.#rows.push(row)
      this.#byId.set(row.id, row)
    }
  }

  /** Whether anything changed. */
  #merge(job: ListedJob): boolean {
    const known = this.#byId.get(job.id)
    if (known !== undefined) {
      // The same seq can still carry a new queue position (the queue moves without events).
      if (job.seq < known.seq || (job.seq === known.seq && job.queuePosition === known.queuePosition)) return false
      const row = listed(job)
      this.#rows[this.#rows.indexOf(known)] = row
      this.#byId.set(row.id, row)
      return true
    }
    if (!this.#belongs(job)) return false
    const row = listed(job)
    // Newest first; a job created in the same millisecond as a listed one was created after it.
    const at = this.#rows.findIndex((other) => other.createdAt <= row.createdAt)
    this.#rows.splice(at === -1 ? this.#rows.length : at, 0, row)
    this.#byId.set(row.id, row)
    return true
  }

  /** A job not listed yet belongs when it matches the filters and is no older than the oldest page loaded. */
  #belongs(job: ListedJob): boolean {
    if (!this.#loaded) return false
    const { status, type, owner } = this.filters
    if (status !== '' && job.status !== status) return false
    if (type !== '' && job.type !== type) return false
    if (owner !== '') {
      const [tenant, user] = owner.split(':')
      if (job.owner === null || job.owner.tenant !== tenant || (user !== undefined && user !== '' && job.owner.user !== user)) return false
    }
    const oldest = this.#rows.at(-1)
    return this.#cursor === null || oldest === undefined || job.createdAt >= oldest.createdAt
  }

  #update(change: Partial<JobListSnapshot>): void {
    this.#snapshot = { ...this.#snapshot, ...change, rows: [...this.#rows], hasMore: this.#cursor !== null }
    for (const listener of [...this.#listeners]) listener()
  }

  /** Many notes in a row (a burst of live updates) make one new snapshot. */
  #emitSoon(): void {
    if (this.#emitQueued) return
    this.#emitQueued = true
    queueMicrotask(() => {
      this.#emitQueued = false
      this.#update({})
    })
  }
}

/** Drops what a row never shows (a live state's text can be large). */
function listed(job: ListedJob | JobState): ListedJob {
  if (!('text' in job)) return job
  const { text: _text, input: _input, result: _result, checkpoint: _checkpoint, ...row } = job
  return row
}

function asError(error: unknown): JobwireError {
  return error instanceof JobwireError ? error : new JobwireError('unavailable', { reason: error instanceof Error ? error.message : String(error) })
}
