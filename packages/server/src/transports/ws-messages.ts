import { z } from 'zod'
import { JobwireError, wsClientMessageTypes, type WsClientMessage, type WsClientMessageType } from '@jobwire/protocol'
import { checkJsonShape, type JsonShapeLimits } from '../core/json-shape.js'
import { ownerNamePatterns, ownerNameRules } from '../core/scopes.js'
import { isWellFormed, notWellFormed, wellFormed } from '../core/well-formed.js'

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

/** A string of 1 to `max` characters; every failure says so. */
const text = (max: number) => {
  const error = `expected a string of 1 to ${max} characters`
  return z.string({ error }).min(1, { error }).max(max, { error })
}
const jobId = text(100)
const ref = text(100).optional()
/** A stream position (`after`, a `positions` seq). */
const seq = z.number().int().min(0)
/** An owner's tenant or user, as HTTP takes them (core/scopes.ts). */
const ownerPart = (name: 'tenant' | 'user') => {
  const error = `${name}: expected 1 to 200 characters`
  return z
    .string({ error })
    .min(1, { error })
    .max(200, { error })
    .refine(isWellFormed, `${name}: ${notWellFormed}`)
    .regex(ownerNamePatterns[name], `${name}: ${ownerNameRules[name]}`)
}

/**
 * One schema per message type, `ref` first and then the fields in the order they are checked: a
 * message with several problems is refused for the first. Unknown fields are refused (strict).
 */
function messageSchemas(maxPositions: number) {
  const positions = z
    .record(jobId, seq, { error: (issue) => (issue.code === 'invalid_key' ? 'job ids are 1 to 100 characters' : 'expected {jobId: seq}') })
    .refine((map) => Object.keys(map).length <= maxPositions, { error: `at most ${maxPositions} jobs` })
  return {
    subscribe: z.strictObject({ type: z.literal('subscribe'), jobId, token: text(16_384).optional(), after: seq.optional() }),
    unsubscribe: z.strictObject({ type: z.literal('unsubscribe'), jobId }),
    subscribe_user: z.strictObject({
      type: z.literal('subscribe_user'),
      owner: z
        .strictObject({ tenant: ownerPart('tenant'), user: ownerPart('user') }, { error: (issue) => (issue.code === 'unrecognized_keys' ? 'expected only tenant and user' : 'expected {tenant, user}') })
        .optional(),
      positions: positions.optional(),
      since: z
        .string({ error: 'expected an ISO date' })
        .max(40, { error: 'expected an ISO date' })
        .refine((value) => !Number.isNaN(Date.parse(value)), { error: 'expected an ISO date' })
        .optional(),
    }),
    unsubscribe_user: z.strictObject({ type: z.literal('unsubscribe_user') }),
    cancel: z.strictObject({ type: z.literal('cancel'), ref, jobId, reason: text(2000).transform(wellFormed).optional() }),
    refresh_token: z.strictObject({ type: z.literal('refresh_token'), ref, token: text(16_384), jobId: jobId.optional() }),
    ping: z.strictObject({ type: z.literal('ping'), ref }),
  } satisfies Record<WsClientMessageType, z.ZodType>
}

type Schemas = ReturnType<typeof messageSchemas>
// Each schema reads exactly its message of the protocol: this fails to compile when they part.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false
const agrees = <T extends true>(): T | undefined => undefined
agrees<Same<{ [K in WsClientMessageType]: z.infer<Schemas[K]> }[WsClientMessageType], WsClientMessage>>()

/** The schemas for the last `maxPositions` asked for (one per server: it is a setting). */
let cached: { maxPositions: number; schemas: Schemas } | null = null
function schemasFor(maxPositions: number): Schemas {
  if (cached?.maxPositions !== maxPositions) cached = { maxPositions, schemas: messageSchemas(maxPositions) }
  return cached.schemas
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
  if (typeof raw.type !== 'string') {
    throw new RefusedMessage(new JobwireError('malformed_message', { reason: 'it has no string "type"' }), target)
  }
  const type = raw.type
  if (!(wsClientMessageTypes as readonly string[]).includes(type)) {
    throw new RefusedMessage(new JobwireError('unknown_message_type', { type: type.slice(0, 100), allowed: wsClientMessageTypes }), target)
  }
  const parsed = schemasFor(limits.maxPositions)[type as WsClientMessageType].safeParse(raw)
  if (parsed.success) return parsed.data
  throw new RefusedMessage(refusal(parsed.error.issues, type, raw), target)
}

/**
 * The first problem as a registry error: an unknown field before any other (in the message, then
 * in the field), a bad `after` as invalid_position, a bad seq in `positions` naming its job.
 */
function refusal(issues: readonly z.core.$ZodIssue[], type: string, raw: Record<string, unknown>): JobwireError {
  const unknown = issues.find((issue) => issue.code === 'unrecognized_keys' && issue.path.length === 0)
  if (unknown?.code === 'unrecognized_keys') {
    const field = (unknown.keys[0] ?? '').slice(0, 100)
    return new JobwireError('invalid_request', { field, reason: `${field}: unknown field for a "${type}" message` })
  }
  const field = String(issues[0]?.path[0] ?? 'type')
  if (field === 'after') return new JobwireError('invalid_position', { position: String(raw.after) })
  const ofField = issues.filter((issue) => issue.path[0] === field)
  const issue = ofField.find((candidate) => candidate.code === 'unrecognized_keys') ?? ofField[0]
  const job = field === 'positions' && issue?.code !== 'invalid_key' ? issue?.path[1] : undefined
  const reason = job === undefined ? (issue?.message ?? 'invalid') : `${String(job).slice(0, 100)}: expected a seq >= 0`
  return new JobwireError('invalid_request', { field, reason: `${field}: ${reason}` })
}
