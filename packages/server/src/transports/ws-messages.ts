import { JobwireError, wsClientMessageTypes, type Owner, type WsClientMessage, type WsClientMessageType } from '@jobwire/protocol'
import { checkJsonShape, type JsonShapeLimits } from '../core/json-shape.js'

/** Where an answer to a refused message goes: the request's `ref`, or the job it named. */
export interface MessageTarget {
  ref?: string
  jobId?: string
}

/** A refused client message, with whatever could be read of where its answer belongs. */
export class RefusedMessage extends Error {
  constructor(
    readonly error: JobwireError,
    readonly target: MessageTarget,
  ) {
    super(error.message)
  }
}

const allowedFields: Record<WsClientMessageType, readonly string[]> = {
  subscribe: ['type', 'jobId', 'after', 'token'],
  unsubscribe: ['type', 'jobId'],
  subscribe_user: ['type', 'owner', 'positions', 'since'],
  unsubscribe_user: ['type'],
  cancel: ['type', 'jobId', 'reason', 'ref'],
  refresh_token: ['type', 'token', 'jobId', 'ref'],
  ping: ['type', 'ref'],
}

/**
 * Reads one line of a client frame into a typed message, or throws a RefusedMessage:
 * `malformed_message` (not a JSON object with a string `type`), `unknown_message_type`,
 * `invalid_position` (a bad `after`), `invalid_request` (any other field; `details.field` names it).
 */
export function parseClientMessage(line: string, limits: { maxPositions: number; jsonShape: JsonShapeLimits }): WsClientMessage {
  let value: unknown
  try {
    // A message is small and flat: the body limits, widened for a `positions` map of every subscription.
    const shape = limits.jsonShape
    checkJsonShape(line, { maxDepth: shape.maxDepth, maxWidth: Math.max(shape.maxWidth, limits.maxPositions + 1) })
  } catch (error) {
    throw new RefusedMessage(error as JobwireError, {})
  }
  try {
    value = JSON.parse(line)
  } catch {
    throw new RefusedMessage(new JobwireError('malformed_message', { reason: 'it is not valid JSON' }), {})
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new RefusedMessage(new JobwireError('malformed_message', { reason: 'it is not a JSON object' }), {})
  }
  const raw = value as Record<string, unknown>
  const target: MessageTarget = {}
  if (typeof raw.ref === 'string' && raw.ref.length <= 100) target.ref = raw.ref
  if (typeof raw.jobId === 'string' && raw.jobId.length > 0 && raw.jobId.length <= 100) target.jobId = raw.jobId
  const refuse = (field: string, reason: string): never => {
    throw new RefusedMessage(new JobwireError('invalid_request', { field, reason: `${field}: ${reason}` }), target)
  }
  if (typeof raw.type !== 'string') {
    throw new RefusedMessage(new JobwireError('malformed_message', { reason: 'it has no string "type"' }), target)
  }
  if (!(wsClientMessageTypes as readonly string[]).includes(raw.type)) {
    throw new RefusedMessage(
      new JobwireError('unknown_message_type', { type: raw.type.slice(0, 100), allowed: wsClientMessageTypes }),
      target,
    )
  }
  const type = raw.type as WsClientMessageType
  for (const key of Object.keys(raw)) {
    if (!allowedFields[type].includes(key)) refuse(key, `unknown field for a "${type}" message`)
  }
  const text = (field: string, max: number, optional: boolean): string | undefined => {
    const v = raw[field]
    if (v === undefined && optional) return undefined
    if (typeof v !== 'string' || v.length === 0 || v.length > max) return refuse(field, `expected a string of 1 to ${max} characters`)
    return v
  }
  const ref = text('ref', 100, true)
  const withRef = <T extends object>(message: T): T & { ref?: string } => (ref === undefined ? message : { ...message, ref })

  switch (type) {
    case 'subscribe': {
      const jobId = text('jobId', 100, false) as string
      const token = text('token', 16_384, true)
      const message: Extract<WsClientMessage, { type: 'subscribe' }> = token === undefined ? { type, jobId } : { type, jobId, token }
      if (raw.after === undefined) return message
      if (typeof raw.after !== 'number' || !Number.isSafeInteger(raw.after) || raw.after < 0) {
        throw new RefusedMessage(new JobwireError('invalid_position', { position: String(raw.after) }), target)
      }
      return { ...message, after: raw.after }
    }
    case 'unsubscribe':
      return { type, jobId: text('jobId', 100, false) as string }
    case 'subscribe_user': {
      const message: Extract<WsClientMessage, { type: 'subscribe_user' }> = { type }
      if (raw.owner !== undefined) message.owner = parseOwner(raw.owner, refuse)
      if (raw.positions !== undefined) message.positions = parsePositions(raw.positions, limits.maxPositions, refuse)
      if (raw.since !== undefined) {
        if (typeof raw.since !== 'string' || raw.since.length > 40 || Number.isNaN(Date.parse(raw.since))) refuse('since', 'expected an ISO date')
        message.since = raw.since as string
      }
      return message
    }
    case 'unsubscribe_user':
      return { type }
    case 'cancel': {
      const jobId = text('jobId', 100, false) as string
      const reason = text('reason', 2000, true)
      return withRef(reason === undefined ? { type, jobId } : { type, jobId, reason })
    }
    case 'refresh_token': {
      const token = text('token', 16_384, false) as string
      const jobId = text('jobId', 100, true)
      return withRef(jobId === undefined ? { type, token } : { type, token, jobId })
    }
    case 'ping':
      return withRef({ type })
    default:
      return assertNever(type)
  }
}

function parseOwner(value: unknown, refuse: (field: string, reason: string) => never): Owner {
  if (typeof value !== 'object' || value === null) return refuse('owner', 'expected {tenant, user}')
  const { tenant, user, ...rest } = value as Record<string, unknown>
  if (Object.keys(rest).length > 0) refuse('owner', 'expected only tenant and user')
  if (typeof tenant !== 'string' || tenant === '' || tenant.length > 200) refuse('owner', 'tenant: expected 1 to 200 characters')
  if (typeof user !== 'string' || user === '' || user.length > 200) refuse('owner', 'user: expected 1 to 200 characters')
  return { tenant: tenant as string, user: user as string }
}

function parsePositions(value: unknown, max: number, refuse: (field: string, reason: string) => never): Record<string, number> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return refuse('positions', 'expected {jobId: seq}')
  const entries = Object.entries(value as Record<string, unknown>)
  if (entries.length > max) refuse('positions', `at most ${max} jobs`)
  const out: Record<string, number> = {}
  for (const [jobId, seq] of entries) {
    if (jobId === '' || jobId.length > 100) refuse('positions', 'job ids are 1 to 100 characters')
    if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 0) refuse('positions', `${jobId.slice(0, 100)}: expected a seq >= 0`)
    out[jobId] = seq as number
  }
  return out
}

function assertNever(value: never): never {
  throw new Error(`unhandled message type ${String(value)}`)
}
