/**
 * How a watch is connected. `connecting`: first attempt; `live`: a realtime stream (WebSocket or
 * SSE) delivers; `reconnecting`: it dropped (or the device is offline) and a retry is scheduled;
 * `polling`: HTTP polling delivers (the realtime transports failed); `idle`: nothing to carry, so
 * no socket is open (the client's link after its last watch stopped; the next watch opens one);
 * `offline`: retrying stopped after `maxRetries` failed attempts in a row — the next watch, the
 * device coming back online or `client.reconnect()` tries again; `closed`: over for good — the job
 * finished, the watch was stopped, or a terminal error (see `error`).
 */
export type ConnectionState = 'connecting' | 'live' | 'reconnecting' | 'polling' | 'idle' | 'offline' | 'closed'

/** Why a state changed, in words a log line or a status bar can show. */
export interface StateChange {
  from: ConnectionState
  to: ConnectionState
  reason: string
}

/** The one place a connection state changes: `set` emits `{from, to, reason}` when it does. */
export class ConnectionStateMachine {
  #state: ConnectionState
  #reason = 'created'
  readonly #listeners = new Set<(change: StateChange) => void>()

  constructor(initial: ConnectionState = 'connecting') {
    this.#state = initial
  }

  get state(): ConnectionState {
    return this.#state
  }

  get reason(): string {
    return this.#reason
  }

  set(to: ConnectionState, reason: string): void {
    // `closed` is final for `set`: only `reopen` (a finished job was resumed) leaves it.
    if (this.#state === 'closed') return
    const from = this.#state
    this.#reason = reason
    if (from === to) return
    this.#state = to
    for (const listener of [...this.#listeners]) listener({ from, to, reason })
  }

  /** Leaves `closed` for `connecting`: the finished job this connection carried was resumed. */
  reopen(reason: string): void {
    if (this.#state !== 'closed') return
    this.#state = 'connecting'
    this.#reason = reason
    for (const listener of [...this.#listeners]) listener({ from: 'closed', to: 'connecting', reason })
  }

  subscribe(listener: (change: StateChange) => void): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }
}

/** Where a link's retries stand: failed attempts in a row, and when the next one runs. */
export interface RetryState {
  /** Backoff retries scheduled since the last success (0 while connected). */
  attempt: number
  /** Epoch ms of the scheduled retry; null when none is scheduled (connected, offline, or gave up). */
  nextRetryAt: number | null
}

export interface BackoffOptions {
  /** First retry delay cap, doubled per attempt. Default 500 ms. */
  minMs?: number
  /** Largest retry delay cap. Default 20 s. */
  maxMs?: number
}

/** "Full jitter": uniform in [0, min(maxMs, minMs · 2^attempt)), so reconnecting clients spread out. */
export function backoffDelay(attempt: number, options: Required<BackoffOptions>, random: () => number): number {
  const cap = Math.min(options.maxMs, options.minMs * 2 ** Math.min(attempt, 30))
  return Math.floor(random() * cap)
}
