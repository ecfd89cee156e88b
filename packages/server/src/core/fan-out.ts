import type { JobEvent, JobEventOf, Owner } from '@jobwire/protocol'
import type { EventListener, OwnerListener, Unsubscribe } from './store.js'

/** Hooks that let a cross-node backend listen on a channel only while someone here watches it. */
export interface FanOutHooks {
  onFirst?: (jobId: string) => void
  onLast?: (jobId: string) => void
  onFirstOwner?: (owner: Owner) => void
  onLastOwner?: (owner: Owner) => void
}

/**
 * Node-local fan-out of committed events to the subscriptions of each job. Written once; a store
 * publishes into it after each commit (memory, SQLite) or from its cross-node channel (Redis).
 */
export class FanOut {
  readonly #listeners = new Map<string, Set<EventListener>>()

  /** `onFirst`/`onLast` let a backend subscribe to its channel only for jobs someone watches. */
  constructor(private readonly hooks: FanOutHooks = {}) {}

  subscribe(jobId: string, listener: EventListener): Unsubscribe {
    let set = this.#listeners.get(jobId)
    if (set === undefined) {
      set = new Set()
      this.#listeners.set(jobId, set)
      this.hooks.onFirst?.(jobId)
    }
    set.add(listener)
    return () => {
      const current = this.#listeners.get(jobId)
      if (current === undefined || !current.delete(listener) || current.size > 0) return
      this.#listeners.delete(jobId)
      this.hooks.onLast?.(jobId)
    }
  }

  publish(jobId: string, events: readonly JobEvent[]): void {
    const set = this.#listeners.get(jobId)
    if (set === undefined || events.length === 0) return
    // One clock read per batch, however many subscribers it goes to.
    const publishedAt = performance.now()
    for (const listener of set) {
      try {
        listener(events, publishedAt)
      } catch (error) {
        // Subscriptions end themselves with an error frame when their sink fails (JobSubscription);
        // a listener that throws anyway must not starve the others, and is reported, not swallowed.
        reportListenerError(jobId, error)
      }
    }
  }

  /**
   * Tells a job's listeners that events may have been missed or lost (a dropped connection to a
   * shared store, data loss in it): they get an empty batch, and re-read the log from where they are.
   */
  resync(jobId: string): void {
    for (const listener of this.#listeners.get(jobId) ?? []) {
      try {
        listener([])
      } catch (error) {
        reportListenerError(jobId, error)
      }
    }
  }

  readonly #queueListeners = new Map<string, Set<() => void>>()

  subscribeQueue(type: string, listener: () => void): Unsubscribe {
    let set = this.#queueListeners.get(type)
    if (set === undefined) this.#queueListeners.set(type, (set = new Set()))
    set.add(listener)
    return () => {
      set.delete(listener)
      if (set.size === 0 && this.#queueListeners.get(type) === set) this.#queueListeners.delete(type)
    }
  }

  /** Tells the queue's listeners that a job of `type` entered or left it. */
  publishQueue(type: string): void {
    for (const listener of this.#queueListeners.get(type) ?? []) {
      try {
        listener()
      } catch {
        // as in publish()
      }
    }
  }

  readonly #ownerListeners = new Map<string, Set<OwnerListener>>()

  /** Listens for new jobs of `owner` (see `Store.subscribeOwner`). */
  subscribeOwner(owner: Owner, listener: OwnerListener): Unsubscribe {
    const key = ownerKey(owner.tenant, owner.user)
    let set = this.#ownerListeners.get(key)
    if (set === undefined) {
      this.#ownerListeners.set(key, (set = new Set()))
      this.hooks.onFirstOwner?.(owner)
    }
    set.add(listener)
    return () => {
      const current = this.#ownerListeners.get(key)
      if (current === undefined || !current.delete(listener) || current.size > 0) return
      this.#ownerListeners.delete(key)
      this.hooks.onLastOwner?.(owner)
    }
  }

  /** Tells the owner's listeners that a job was created (a store calls it once its `createJob` committed). */
  publishCreated(event: JobEventOf<'created'>): void {
    const owner = event.data.owner
    if (owner === null) return
    for (const listener of this.#ownerListeners.get(ownerKey(owner.tenant, owner.user)) ?? []) {
      try {
        listener(event)
      } catch {
        // as in publish()
      }
    }
  }

  get jobCount(): number {
    return this.#listeners.size
  }
}

/** A listener broke its contract (never throw): a process warning names the job, whatever logger the server has. */
function reportListenerError(jobId: string, error: unknown): void {
  process.emitWarning(`Jobwire: a fan-out listener of job ${jobId} threw: ${error instanceof Error ? error.message : String(error)}`, 'JobwireFanOutWarning')
}

function ownerKey(tenant: string, user: string): string {
  return `${tenant}\u0000${user}`
}
