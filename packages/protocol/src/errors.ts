/**
 * The one error registry. Every error Jobwire sends has a code from here; the server answers
 * `{error: {code, message, details?}}` with the registered HTTP status, and clients raise a
 * `JobwireError` with the same code. docs/errors.md is checked against this list.
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
  batch_too_large: { status: 413, retryable: false, message: 'A batch holds at most {limit} events' },
  text_limit_exceeded: { status: 413, retryable: false, message: 'Job {jobId} text would exceed {limit} characters' },
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
  internal: { status: 500, retryable: true, message: 'Internal error (request {requestId})' },
} as const satisfies Record<string, { status: number; retryable: boolean; message: string }>

export type ErrorCode = keyof typeof errorRegistry
export const errorCodes = Object.keys(errorRegistry) as ErrorCode[]

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
