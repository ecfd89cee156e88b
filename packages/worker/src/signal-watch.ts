import type { SignalReason } from '@jobwire/protocol'
import type { WorkerApi } from './api.js'
import { SlotList } from './slot-list.js'
import { backoffDelay, sleep, type Backoff, type Timers } from './timing.js'

/** The shortest round of an empty poll: a server that answers at once is asked again after this. */
export const minPollMs = 1_000

/** A running job the watch reports on. */
export interface Watched {
  readonly id: string
  readonly leaseToken: string
  /** Its index in the watch's list; -1 when not watched (the watch keeps it). */
  watchSlot: number
  signalled(reason: SignalReason): void
}

/** How long newly claimed jobs wait to be added to the signals long-poll (they are batched). */
const restartDelayMs = 50

export interface SignalWatchOptions {
  api: WorkerApi
  waitSeconds: number
  timers: Timers
  random: () => number
  backoff: Backoff
  onError(error: unknown): void
}

/**
 * One long-poll (`POST /v1/workers/signals`) for all the jobs this process runs, so a cancel
 * reaches a handler's signal within one round trip. A new job restarts the poll with the new
 * set; nothing is lost by that, because the server answers at once for any listed job that is
 * no longer running under its lease.
 */
export class SignalWatch {
  /** At most one run per job id: the newest (a job claimed again replaces its old run). */
  private readonly watched = new SlotList<Watched>(
    (job) => job.watchSlot,
    (job, slot) => (job.watchSlot = slot),
  )
  private request: { controller: AbortController; jobs: readonly Watched[] } | null = null
  private loop: Promise<void> | null = null
  private restartQueued = false
  private readonly closed = new AbortController()

  constructor(private readonly options: SignalWatchOptions) {}

  add(job: Watched): void {
    // A scan of the running jobs, once per claimed job: no hash table to churn (slot-list.ts).
    const older = this.watched.find((other) => other.id === job.id)
    if (older !== undefined) this.watched.delete(older)
    this.watched.add(job)
    this.added()
  }

  /**
   * Stops reporting on `job`. The poll in flight is not restarted: a job leaves the set when it
   * ends or is released, so the server answers for it at once and the next poll leaves it out.
   */
  remove(job: Watched): void {
    this.watched.delete(job)
  }

  /** Ends the poll; resolves when it has stopped. */
  async close(): Promise<void> {
    this.closed.abort()
    this.request?.controller.abort()
    await this.loop
  }

  private added(): void {
    if (this.closed.signal.aborted) return
    if (this.loop === null) {
      this.ensureLoop()
      return
    }
    // Jobs claimed within a short window restart the poll once: a busy worker claiming many short
    // jobs does not pay a signals request per job, and a cancel still arrives within ~restartDelayMs.
    if (this.restartQueued) return
    this.restartQueued = true
    this.options.timers.setTimeout(() => {
      this.restartQueued = false
      const request = this.request
      if (request === null) return
      // One set per restart window (at most every restartDelayMs), not a scan of the poll's jobs per
      // watched job: with a prefetching worker's line that was ~1.5 million comparisons a window.
      const asked = new Set(request.jobs)
      if (this.watched.find((job) => !asked.has(job)) !== undefined) request.controller.abort()
    }, restartDelayMs)
  }

  private ensureLoop(): void {
    if (this.loop !== null || this.watched.size === 0 || this.closed.signal.aborted) return
    this.loop = this.run().finally(() => {
      this.loop = null
      // A job may have been added after the loop saw an empty set, before it ended.
      this.ensureLoop()
    })
  }

  private async run(): Promise<void> {
    const { api, waitSeconds, timers, backoff, random } = this.options
    let failures = 0
    while (this.watched.size > 0 && !this.closed.signal.aborted) {
      const jobs = this.watched.values()
      const request = { controller: new AbortController(), jobs }
      this.request = request
      const sentAt = timers.now()
      try {
        const signals = await api.signals(
          jobs.map((job) => ({ id: job.id, lease: job.leaseToken })),
          waitSeconds,
          request.controller.signal,
        )
        failures = 0
        for (const signal of signals) {
          // The same job may have been claimed again since (a retry): only the run that was asked about counts.
          const job = jobs.find((candidate) => candidate.id === signal.jobId)
          if (job !== undefined && this.watched.delete(job)) job.signalled(signal.reason)
        }
        // A server that does not hold the poll (a zero --poll-max-wait) must not be hammered.
        if (signals.length === 0) await sleep(timers, minPollMs - (timers.now() - sentAt), request.controller.signal)
      } catch (error) {
        if (request.controller.signal.aborted) continue
        failures += 1
        this.options.onError(error)
        await sleep(timers, backoffDelay(backoff, failures, random, error), this.closed.signal)
      } finally {
        if (this.request === request) this.request = null
      }
    }
  }
}
