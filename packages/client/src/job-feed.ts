import {
  applyCoalesced,
  applyEvent,
  isTerminal,
  type JobEvent,
  type JobState,
  type JobwireError,
  type StreamMessage,
} from '@jobwire/protocol'
import { ConnectionStateMachine, type RetryState, type StateChange } from './connection.js'

export type TransportName = 'ws' | 'sse' | 'poll'

/** What any transport hands a feed: a stream message, or a slow reader's coalesced events (WebSocket). */
export type FeedMessage = StreamMessage | { type: 'coalesced'; from: number; events: readonly JobEvent[] }

/** Why the state changed: a first snapshot, a reset (the position was lost), an event, or a queue move. */
export interface JobUpdate {
  cause: 'snapshot' | 'reset' | 'event' | 'queue'
  /** The event applied (for a slow reader's coalesced run, its last event). */
  event?: JobEvent
}

export interface FeedListener {
  update?(state: JobState, update: JobUpdate): void
  connection?(change: StateChange): void
  /** The feed is over: the job reached a terminal status (`error` null), or it cannot be watched. */
  end?(error: JobwireError | null): void
  /** The client was closed: nothing more comes, though the job did not end. */
  closed?(): void
}

/** Delivers one job's messages to its feed over some transport. */
export interface Carrier {
  readonly kind: TransportName
  /** Failed attempts in a row and the next retry's time (the WebSocket's, for a job on it). */
  readonly retryState: RetryState
  /** Starts over from the feed's position: after a gap, or when the position was refused. */
  resync(): void
  /** Tries again now, forgetting the attempts so far. */
  reconnect(): void
  stop(): void
}

/**
 * One job as this client knows it: the state folded with the server's own reducer, the position
 * to resume from, dedupe by seq, and the carrier currently delivering it. One per job id, however
 * many watches share it.
 */
export class JobFeed {
  state: JobState | null = null
  error: JobwireError | null = null
  done = false
  readonly connection = new ConnectionStateMachine()
  carrier: Carrier | null = null
  readonly listeners = new Set<FeedListener>()
  /** Watches (watchJob, watchJobs) holding it. */
  holders = 0
  /** Whether the user feed holds it. */
  inMyJobs = false
  /** The next subscription asks for a snapshot whatever the state's seq (the position was refused). */
  #wantSnapshot = false

  constructor(readonly jobId: string) {
    this.connection.subscribe((change) => {
      for (const listener of [...this.listeners]) listener.connection?.(change)
    })
  }

  /** The seq to resume after, or undefined to start with a snapshot. */
  get position(): number | undefined {
    return this.#wantSnapshot || this.state === null ? undefined : this.state.seq
  }

  receive(message: FeedMessage): void {
    if (this.done) return
    switch (message.type) {
      case 'snapshot':
        // A snapshot older than what we hold adds nothing (a second carrier overlapping the first).
        if (this.state !== null && !message.reset && !this.#wantSnapshot && message.job.seq <= this.state.seq) return
        this.#wantSnapshot = false
        this.state = message.job
        this.#notify({ cause: message.reset ? 'reset' : 'snapshot' })
        break
      case 'recovered':
        return
      case 'event':
        this.#apply(message.event)
        break
      case 'coalesced':
        this.#applyRun(message.from, message.events)
        break
      case 'queue':
        if (this.state === null || this.state.queuePosition === message.position) return
        this.state = { ...this.state, queuePosition: message.position }
        this.#notify({ cause: 'queue' })
        return
      case 'error':
        // Errors are the carrier's to interpret (retry, refresh the token, fall back, or fail the feed).
        return
      default:
        return assertNever(message)
    }
    if (this.state !== null && isTerminal(this.state.status)) this.finish()
  }

  #apply(event: JobEvent): void {
    const state = this.state
    if (state === null) {
      if (event.type === 'created') {
        this.state = applyEvent(null, event)
        this.#notify({ cause: 'event', event })
      } else {
        this.carrier?.resync()
      }
      return
    }
    // Dedupe: an event at or below the position was applied already (a replay overlapping live).
    if (event.seq <= state.seq) return
    if (event.seq !== state.seq + 1) {
      // A gap: never apply across it, resume from the position.
      this.carrier?.resync()
      return
    }
    this.#update(() => applyEvent(state, event), event)
  }

  /** A slow reader's coalesced run (seqs `from`… the highest in `events`): all of it, or nothing. */
  #applyRun(from: number, events: readonly JobEvent[]): void {
    const state = this.state
    const last = events.reduce<JobEvent | undefined>((latest, event) => (latest === undefined || event.seq > latest.seq ? event : latest), undefined)
    if (last === undefined) return
    if (state !== null && last.seq <= state.seq) return
    if (state === null || from !== state.seq + 1) {
      this.carrier?.resync()
      return
    }
    this.#update(() => applyCoalesced(state, from, events), last)
  }

  #update(reduce: () => JobState, event: JobEvent): void {
    try {
      this.state = reduce()
    } catch {
      // The reducer refused (it should not): start over from a snapshot rather than show a wrong state.
      this.#wantSnapshot = true
      this.carrier?.resync()
      return
    }
    this.#notify({ cause: 'event', event })
  }

  /** Asks the next subscription for a snapshot (the position was refused, e.g. `position_ahead`). */
  wantSnapshot(): void {
    this.#wantSnapshot = true
  }

  #notify(update: JobUpdate): void {
    const state = this.state
    if (state === null) return
    for (const listener of [...this.listeners]) listener.update?.(state, update)
  }

  /**
   * The finished job was resumed (or may have been): the feed is live again and its next
   * subscription starts from a snapshot, which says whether the job really moved on (a terminal
   * snapshot simply ends it again). False when the feed is not finished, or ended with an error.
   */
  reopen(): boolean {
    if (!this.done || this.error !== null) return false
    this.done = false
    this.#wantSnapshot = true
    this.connection.reopen('following the job again')
    return true
  }

  /** The job is terminal: no carrier runs for it any more. */
  finish(): void {
    this.#end(null, 'finished')
  }

  fail(error: JobwireError): void {
    this.error = error
    this.#end(error, error.code)
  }

  /** Stops delivery without an end (the last holder let go). */
  detach(): void {
    this.carrier?.stop()
    this.carrier = null
  }

  /** The client closed: delivery stops, and its watches hear that nothing more will come. */
  close(): void {
    this.detach()
    if (!this.done) this.connection.set('closed', 'client closed')
    for (const listener of [...this.listeners]) listener.closed?.()
  }

  #end(error: JobwireError | null, reason: string): void {
    if (this.done) return
    this.done = true
    this.detach()
    this.connection.set('closed', reason)
    for (const listener of [...this.listeners]) listener.end?.(error)
  }
}

function assertNever(value: never): never {
  throw new Error(`unhandled message ${JSON.stringify(value)}`)
}
