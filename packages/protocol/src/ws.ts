import { errorRegistry, isErrorCode, type ErrorBody, type ErrorCode } from './errors.js'
import type { JobEvent, JobEventOf } from './events.js'
import type { JobState, Owner } from './job.js'
import { applyEvent } from './reducer.js'
import type { SnapshotReason } from './stream.js'

/**
 * The WebSocket protocol (`GET /v1/ws`, same port as the HTTP API). One socket carries many job
 * streams: each is keyed by its job id and delivers what an SSE stream of that job would, in the
 * same order, with the same snapshot / exact-replay guarantees.
 *
 * Framing: every text frame holds one or more JSON messages separated by `\n` (the server puts all
 * it has for a socket in one turn of its event loop into one frame). Binary frames are refused.
 */
export const wsPath = '/v1/ws'

/**
 * The version of the streaming protocols (SSE, long-poll, WebSocket) specified in docs/protocol.md.
 * It changes only when a change would break a client written against the previous version; a
 * WebSocket's `welcome` carries it.
 */
export const protocolVersion = 1

/** Messages a client sends. Unknown fields are refused, so a typo never passes silently. */
export type WsClientMessage =
  /**
   * Starts (or restarts) the stream of one job. Without `after`: a snapshot, then live events.
   * With `after` (the last seq applied): exactly the missing events, or a reset snapshot when the
   * log no longer holds them. Subscribing to a job already streamed on this socket restarts it.
   * `token`: this job's own credential (a per-job subscription token, say). The stream is checked
   * against it instead of the socket's credential, gets its own `token_expiring` (with `jobId`),
   * is refreshed on its own (`refresh_token` with `jobId`), and ends alone with `token_expired`
   * if it is not: one socket carries jobs under as many credentials as it likes.
   */
  | { type: 'subscribe'; jobId: string; after?: number; token?: string }
  | { type: 'unsubscribe'; jobId: string }
  /**
   * "All my jobs": streams every unfinished job of the owner, jobs finished since `since` (an `at`
   * from an earlier `user_synced`), every job named in `positions` (resumed from the seq given),
   * and each job the owner gets later, as it is created. A person's credential implies the owner;
   * API keys name it. One per socket; sending it again replaces the previous one.
   */
  | { type: 'subscribe_user'; owner?: Owner; positions?: Record<string, number>; since?: string }
  | { type: 'unsubscribe_user' }
  /** Answered by `ack` (the `cancelled` event arrives on the job's stream) or an `error` with the same `ref`. */
  | { type: 'cancel'; jobId: string; reason?: string; ref?: string }
  /**
   * Swaps the socket's credential without touching its streams; with `jobId`, the credential of
   * that job's stream (one subscribed with its own `token`). Answered by `token_refreshed` or `error`.
   */
  | { type: 'refresh_token'; token: string; jobId?: string; ref?: string }
  | { type: 'ping'; ref?: string }

export type WsClientMessageType = WsClientMessage['type']
export const wsClientMessageTypes: readonly WsClientMessageType[] = [
  'subscribe', 'unsubscribe', 'subscribe_user', 'unsubscribe_user', 'cancel', 'refresh_token', 'ping',
]

/** Messages the server sends. */
export type WsServerMessage =
  /**
   * First message on every socket. `protocol`: the version of the streaming protocol the server
   * speaks (`protocolVersion`); `expiresAt`: when the credential expires (null: never, or a socket
   * opened without one, whose subscriptions each bring their own `token`).
   */
  | { type: 'welcome'; protocol: number; heartbeatMs: number; expiresAt: string | null; maxMessageBytes: number; maxSubscriptions: number }
  /**
   * A job's stream starts. `recovered`: the position `after` was held and exactly the events after
   * it follow. Otherwise a `snapshot` follows (with `reset: true` when the position was trimmed).
   * `via` says whether the client asked for the job or the user feed brought it.
   */
  | { type: 'subscribed'; jobId: string; via: 'job' | 'user'; recovered: boolean; after: number | null }
  | { type: 'snapshot'; jobId: string; job: JobState; reset: boolean; reason: SnapshotReason }
  | { type: 'event'; event: JobEvent }
  /**
   * A slow reader's run of latest-wins events (`progress`, `item`) of one job, seqs `from` to the
   * highest seq in `events`, reduced to the latest of each (one per item id, one per stage):
   * `applyCoalesced` gives the state the whole run would have. Stage changes are never merged away.
   */
  | { type: 'coalesced'; jobId: string; from: number; events: JobEvent[] }
  | { type: 'queue'; jobId: string; position: number | null }
  /** The user feed announced every job it held at subscription; new ones follow as they are created. */
  | { type: 'user_synced'; owner: Owner; at: string }
  /**
   * With `jobId`: that job's stream failed or was refused and is over. With `ref`: that request
   * failed. With `feed: 'user'`: the user feed was refused or ended. With none: about the socket
   * (a bad message; or a fatal problem, and the socket closes with `closeCodeOf(code)`).
   */
  | { type: 'error'; error: ErrorBody; jobId?: string; ref?: string; feed?: 'user' }
  /**
   * The credential expires soon: send `refresh_token` before `expiresAt` or the socket closes with
   * `token_expired`. With `jobId`: that job's own credential; unrefreshed, only its stream ends
   * (an `error` with `token_expired` and the `jobId`).
   */
  | { type: 'token_expiring'; expiresAt: string; jobId?: string }
  | { type: 'token_refreshed'; expiresAt: string | null; jobId?: string; ref?: string }
  | { type: 'ack'; ref: string }
  | { type: 'pong'; ref?: string }
  /** Sent after `heartbeatMs` of silence, so a client can tell a quiet socket from a dead one. */
  | { type: 'heartbeat' }

export type WsServerMessageType = WsServerMessage['type']

/** Standard close codes the server uses, besides `closeCodeOf(code)` for registry errors. */
export const wsCloseCodes = {
  normal: 1000,
  /** The server is shutting down: reconnect (to another node) and resume. */
  goingAway: 1001,
  /** A frame larger than the server's `maxMessageBytes`. */
  messageTooBig: 1009,
  internal: 1011,
} as const

/**
 * The close code for a registry error: 4000 + its HTTP status (4401 `token_expired`, 4429
 * `rate_limited`, 4503 `slow_consumer`…), and the standard 1009 for `message_too_large`; the close
 * reason is the error code itself.
 */
export function closeCodeOf(code: ErrorCode): number {
  return code === 'message_too_large' ? wsCloseCodes.messageTooBig : 4000 + errorRegistry[code].status
}

/** The registry code a close carries in its reason, if it is one of ours. */
export function errorCodeOfClose(code: number, reason: string): ErrorCode | null {
  if (code === wsCloseCodes.messageTooBig) return 'message_too_large'
  if (code >= 4000 && code < 5000 && isErrorCode(reason)) return reason
  return null
}

/** One frame's worth of server messages. JSON never contains a raw newline, so `\n` separates them. */
export function encodeWsFrame(messages: readonly WsServerMessage[]): string {
  return messages.map((message) => JSON.stringify(message)).join('\n')
}

/** The messages of a server frame, in order. Throws on a frame that is not JSON. */
export function decodeWsFrame(text: string): WsServerMessage[] {
  const out: WsServerMessage[] = []
  for (const line of text.split('\n')) if (line !== '') out.push(JSON.parse(line) as WsServerMessage)
  return out
}

/**
 * Merges two consecutive latest-wins events of one job (`later.seq` follows `earlier`'s run) into
 * one event whose reduction equals applying both, or returns null when they cannot be merged:
 * different types or items, or a stage change (stage changes are never skipped, and their
 * timeline entry keeps its own time). `stageBefore` is the stage in effect before `earlier`
 * (`undefined` when unknown).
 */
export function mergeLatestWins(earlier: JobEvent, later: JobEvent, stageBefore: string | null | undefined): JobEvent | null {
  if (earlier.jobId !== later.jobId) return null
  if (earlier.type === 'progress' && later.type === 'progress') {
    const first = earlier.data.stage
    if (first !== undefined && first !== stageBefore) return null
    const stage = first ?? stageBefore
    if (later.data.stage !== undefined && (stage === undefined || later.data.stage !== stage)) return null
    const merged: JobEventOf<'progress'> = { ...later, data: { ...pickDefined(earlier.data), ...pickDefined(later.data) } }
    return merged
  }
  if (earlier.type === 'item' && later.type === 'item' && earlier.data.id === later.data.id) {
    const merged: JobEventOf<'item'> = { ...later, data: { ...pickDefined(earlier.data), ...pickDefined(later.data), id: later.data.id } }
    return merged
  }
  return null
}

/**
 * Applies a `coalesced` message: `events` stand for the run of seqs `from`…(highest seq among
 * them), and `state` must be at `from - 1`. The result is the state the run would have produced
 * event by event: same progress, items (in the same order), stage timeline, `updatedAt` and `seq`.
 */
export function applyCoalesced(state: JobState, from: number, events: readonly JobEvent[]): JobState {
  if (state.seq !== from - 1) throw new Error(`job ${state.id}: coalesced events from seq ${from} follow ${state.seq}`)
  let next = state
  let last: JobEvent | undefined
  for (const event of events) {
    next = applyEvent({ ...next, seq: event.seq - 1 }, event)
    if (last === undefined || event.seq > last.seq) last = event
  }
  return last === undefined ? state : { ...next, seq: last.seq, updatedAt: last.at }
}

function pickDefined<T extends object>(value: T): T {
  const out: Record<string, unknown> = {}
  for (const [key, field] of Object.entries(value)) if (field !== undefined) out[key] = field
  return out as T
}
