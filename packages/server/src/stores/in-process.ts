import type { Owner } from '@jobwire/protocol'
import { FanOut } from '../core/fan-out.js'
import type { EventListener, OwnerListener, Unsubscribe } from '../core/store.js'

/**
 * What the embedded stores (memory, SQLite) share: one process holds every watcher, so a commit
 * is handed to the node's `FanOut` right after it lands, and subscribing is subscribing to it.
 */
export abstract class InProcessStore {
  protected readonly fanOut = new FanOut()

  subscribe(jobId: string, listener: EventListener): Unsubscribe {
    return this.fanOut.subscribe(jobId, listener)
  }

  subscribeQueue(type: string, listener: () => void): Unsubscribe {
    return this.fanOut.subscribeQueue(type, listener)
  }

  subscribeOwner(owner: Owner, listener: OwnerListener): Unsubscribe {
    return this.fanOut.subscribeOwner(owner, listener)
  }
}
