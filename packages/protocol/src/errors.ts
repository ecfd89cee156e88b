/**
 * The one error registry. Every error Jobwire sends has a code from here; the server answers
 * `{error: {code, message, details?}}` with the registered HTTP status, and clients raise a
 * `JobwireError` with the same code. docs/errors.md is generated from this list and `errorMeanings`
 * below (`npm run docs`).
 */
export const errorRegistry = {
  invalid_request: { status: 400, retryable: false, message: 'The request is invalid: {reason}' },
  malformed_json: { status: 400, retryable: false, message: 'The request body is not valid JSON' },
  unknown_event_type: { status: 400, retryable: false, message: 'Unknown event type "{type}"' },
  invalid_position: { status: 400, retryable: false, message: 'Stream position "{position}" is not a non-negative integer' },
  unauthorized: { status: 401, retryable: false, message: 'A valid API key or token is required (Authorization: Bearer <credential>)' },
  invalid_token: { status: 401, retryable: false, message: 'The token was refused: {reason}' },
  token_expired: { status: 401, retryable: false, message: 'The token expired at {expiredAt}; get a fresh one and resume from the last seq' },
  forbidden: { status: 403, retryable: false, message: 'This credential may not {action}' },
  job_not_found: { status: 404, retryable: false, message: 'Job {jobId} does not exist' },
  route_not_found: { status: 404, retryable: false, message: 'No route {method} {url}' },
  job_finished: { status: 409, retryable: false, message: 'Job {jobId} is {status}; it takes no more events' },
  invalid_transition: { status: 409, retryable: false, message: 'Event "{type}" is not allowed while job {jobId} is {status}' },
  lease_lost: { status: 409, retryable: false, message: 'This worker no longer holds the lease on job {jobId}: {reason}' },
  idempotency_conflict: { status: 409, retryable: false, message: 'Idempotency key "{key}" was already used for a job of another type' },
  position_ahead: { status: 409, retryable: false, message: 'Position {position} is beyond the last event ({seq}) of job {jobId}' },
  payload_too_large: { status: 413, retryable: false, message: 'The request body exceeds {limit} bytes' },
  event_too_large: { status: 413, retryable: false, message: 'Event {index} is {size} bytes; the limit is {limit}' },
  value_too_large: { status: 413, retryable: false, message: 'The {value} of event {index} is {size} bytes of JSON; the limit is {limit}' },
  batch_too_large: { status: 413, retryable: false, message: 'A batch holds at most {limit} events' },
  text_limit_exceeded: { status: 413, retryable: false, message: 'Job {jobId} text would exceed {limit} characters' },
  item_limit_exceeded: { status: 413, retryable: false, message: 'Job {jobId} would have more than {limit} items' },
  rate_limited: { status: 429, retryable: true, message: 'Too many {limit}: at most {max} per {window}; retry in {retryAfter} s' },
  too_many_streams: { status: 429, retryable: true, message: 'Too many open streams for {scope}: at most {max}' },
  key_not_found: { status: 404, retryable: false, message: 'No API key {keyId}' },
  unsupported_media_type: { status: 415, retryable: false, message: 'Content-Type must be application/json' },
  malformed_message: { status: 400, retryable: false, message: 'A WebSocket message must be a JSON object with a "type": {reason}' },
  unknown_message_type: { status: 400, retryable: false, message: 'Unknown message type "{type}"' },
  message_too_large: { status: 413, retryable: false, message: 'A WebSocket message exceeds {limit} bytes' },
  slow_consumer: { status: 503, retryable: true, message: 'The stream fell {bytes} bytes behind; reconnect to resume' },
  unavailable: { status: 503, retryable: true, message: 'The server is not available: {reason}' },
  server_busy: { status: 503, retryable: true, message: 'The server holds its maximum of {max} connections; retry shortly' },
  overloaded: { status: 503, retryable: true, message: 'The server is reading {bytes} bytes of request bodies: this body of {size} would pass its limit of {limit}; nothing was done, retry in {retryAfter} s' },
  internal: { status: 500, retryable: true, message: 'Internal error (request {requestId})' },
} as const satisfies Record<string, { status: number; retryable: boolean; message: string }>

/**
 * Codes the server itself ends a job with (in its `failed` event's `code`, or a `requeued` or
 * `cancelled` event's `reason`), not HTTP errors: a watcher sees them as ordinary terminal events.
 * `retryable` says whether the job may be re-queued for it (per its type's settings).
 */
export const jobErrorRegistry = {
  worker_lost: { retryable: true, message: 'The worker holding the job stopped heartbeating (its lease lapsed) on the last attempt' },
  timed_out: { retryable: true, message: 'The job ran longer than its timeout ({timeoutMs} ms, measured per {per})' },
  queue_timeout: { retryable: false, message: 'The job waited unclaimed longer than its queue timeout ({queueTimeoutMs} ms): no worker of its type took it' },
  runner_lost: { retryable: false, message: 'The self-run job got no event and no heartbeat for {heartbeatTimeoutMs} ms: its runner is gone' },
  unwatched: { retryable: false, message: 'Nobody watched the job for {cancelWhenUnwatchedMs} ms, on any node (a cancel reason)' },
} as const satisfies Record<string, { retryable: boolean; message: string }>

export type JobErrorCode = keyof typeof jobErrorRegistry

/** A job error code's message, with `{name}` filled from details. */
export function formatJobErrorMessage(code: JobErrorCode, details: Record<string, unknown> = {}): string {
  return jobErrorRegistry[code].message.replace(/\{(\w+)\}/g, (whole, key: string) => (key in details ? String(details[key]) : whole))
}

export type ErrorCode = keyof typeof errorRegistry
export const errorCodes = Object.keys(errorRegistry) as ErrorCode[]

/**
 * What each code means and what to do about it, for people: docs/errors.md is generated from this
 * and the registry (`npm run docs`). Kept apart from the registry so that clients, which ship the
 * registry, do not ship these sentences.
 */
export const errorMeanings = {
  invalid_request: 'a field is missing, of the wrong type or out of range; `details.field` names it',
  malformed_json: 'the body is not JSON (or is empty with a JSON content type)',
  unknown_event_type: 'an event\'s `type` is not a producer event type; `details.allowed` lists them',
  invalid_position: '`Last-Event-ID` or `after` is not a non-negative integer',
  unauthorized: 'no credential, a wrong one, or a revoked API key (also ends open streams of that key)',
  invalid_token: 'a JWT that fails verification: signature, algorithm, `aud`, `iss`, `nbf`, unknown `kid`, missing claims; `details.reason` says which',
  token_expired: 'the token\'s `exp` passed; on a stream it arrives as an `error` event and the stream ends — reconnect with a fresh token and `Last-Event-ID`',
  forbidden: 'the credential is valid but its role may not do this (e.g. a worker key creating jobs, a backend key minting for another tenant)',
  key_not_found: 'no API key with that id',
  job_not_found: 'no such job (or it expired)',
  route_not_found: 'no such endpoint',
  job_finished: 'the job is completed, failed or cancelled and takes no more events',
  invalid_transition: 'the event is not allowed in the job\'s status (e.g. `started` twice)',
  lease_lost: 'a worker wrote to, heartbeated or released a job it no longer holds (another worker has it, it was re-queued, or the lease expired); stop working on it',
  idempotency_conflict: 'the idempotency key belongs to a job of another type',
  position_ahead: 'a stream position beyond the job\'s last event',
  payload_too_large: 'the body exceeds `--max-body-bytes`',
  event_too_large: 'one event exceeds `--max-event-bytes`',
  value_too_large: 'a result or checkpoint exceeds `--max-value-bytes` (larger than an event, they are stored apart; see App features)',
  batch_too_large: 'more than `--max-batch-events` events in one batch',
  text_limit_exceeded: 'the job\'s text would exceed `--max-text-length`',
  item_limit_exceeded: 'an `item` event with a new id would give the job more than `--max-items-per-job` items',
  rate_limited: 'too many job creations for one person; `Retry-After` says when to retry',
  too_many_streams: 'too many open streams for one person or one address; `Retry-After` is set',
  unsupported_media_type: 'a body that is not `application/json`',
  malformed_message: '(WebSocket) a message that is not a JSON object with a string `type`, or a binary frame; the socket stays open',
  unknown_message_type: '(WebSocket) a message `type` the server does not know; `details.allowed` lists them',
  message_too_large: '(WebSocket) a message over `--ws-max-message-bytes`; the socket closes with 1009',
  slow_consumer: '(stream only) the reader fell too far behind; resume from the last seq',
  unavailable: 'the store is closed or unreachable, or a demo capacity is reached',
  server_busy: 'the node holds `--max-connections` streams; `Retry-After` is set',
  overloaded: 'the node is reading and parsing `--max-body-bytes-in-flight` of request bodies (each counted by its `Content-Length`), and this body is 64 KiB or more; the request was refused before its body was read, so retrying it is safe; `Retry-After` is set',
  internal: 'a bug; logged with the request id, which the message names',
} as const satisfies Record<ErrorCode, string>

/** The error body every HTTP error and every stream `error` event carries. */
export interface ErrorBody {
  code: ErrorCode
  message: string
  details?: Record<string, unknown>
}

/** Renders a registry template, filling `{name}` from details. */
export function formatErrorMessage(code: ErrorCode, details: Record<string, unknown> = {}): string {
  return errorRegistry[code].message.replace(/\{(\w+)\}/g, (whole, key: string) =>
    key in details ? String(details[key]) : whole,
  )
}

export class JobwireError extends Error {
  readonly code: ErrorCode
  readonly status: number
  readonly retryable: boolean
  readonly details: Record<string, unknown> | undefined

  constructor(code: ErrorCode, details?: Record<string, unknown>, message?: string) {
    super(message ?? formatErrorMessage(code, details))
    this.name = 'JobwireError'
    this.code = code
    this.status = errorRegistry[code].status
    this.retryable = errorRegistry[code].retryable
    this.details = details
  }

  toBody(): ErrorBody {
    return this.details === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, details: this.details }
  }

  static fromBody(body: ErrorBody): JobwireError {
    const code = isErrorCode(body.code) ? body.code : 'internal'
    return new JobwireError(code, body.details, body.message)
  }
}

export function isErrorCode(value: unknown): value is ErrorCode {
  // Own keys only: `in` would also accept inherited names such as "constructor".
  return typeof value === 'string' && Object.hasOwn(errorRegistry, value)
}
