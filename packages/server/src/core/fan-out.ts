import type { JobEvent } from '@jobwire/protocol'
import type { EventListener, Unsubscribe } from './store.js'

/**
 * Node-local fan-out of committed events to the subscriptions of each job. Written once; a store
 * publishes into it after each commit (memory, SQLite) or from its cross-node channel (Redis).
 */
export class FanOut {
  readonly #listeners = new Map<string, Set<EventListener>>()

  /** `onFirst`/`onLast` let a backend subscribe to its channel only for jobs someone watches. */
  constructor(
    private readonly hooks: { onFirst?: (jobId: string) => void; onLast?: (jobId: string) => void } = {},
  ) {}

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
    for (const listener of set) {
      try {
        listener(events)
      } catch {
        // One broken subscriber must not starve the others; it is closed by its own error path.
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

  get jobCount(): number {
    return this.#listeners.size
  }
}
