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

  get jobCount(): number {
    return this.#listeners.size
  }
}
