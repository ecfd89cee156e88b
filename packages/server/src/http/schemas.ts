import {
  jobStatuses,
  JobwireError,
  metadataProblem,
  producerEventTypes,
  stagePlanLimits,
  type AppendEventsRequest,
  type BulkWriteRequest,
  type CancelRequest,
  type ClaimRequest,
  type CreateJobRequest,
  type EventDraft,
  type HeartbeatRequest,
  type JobWrite,
  type ItemStatus,
  type ListJobsQuery,
  type Metadata,
  type Owner,
  type ProducerEvent,
  type ReleaseRequest,
  type SignalsRequest,
  type StageSpec,
  type WriteMeta,
} from '@jobwire/protocol'
import { z } from 'zod'
import { duration } from '../config.js'
import { ownerNamePatterns, ownerNameRules } from '../core/scopes.js'
import { isWellFormed, notWellFormed, wellFormed } from '../core/well-formed.js'
import { agrees, wire, type Same } from './wire-check.js'

/** A name or text field: at most `max` characters of well-formed Unicode (see core/well-formed.ts). */
const text = (max: number) => z.string().max(max).refine(isWellFormed, notWellFormed)
/** Free text: at most `max` characters, each lone surrogate replaced by U+FFFD (see core/well-formed.ts). */
const prose = (max: number) => z.string().max(max).transform(wellFormed)
const percent = z.number().min(0).max(100)
const present = z.unknown().refine((value) => value !== undefined, 'is required')
/** App metadata: a JSON object within `metadataLimits` (checked again once merged into the job). */
const metadata = z.record(z.string(), z.unknown()).superRefine((value, ctx) => {
  const problem = metadataProblem(value as Metadata)
  if (problem !== null) ctx.addIssue({ code: 'custom', message: problem })
}) as unknown as z.ZodType<Metadata, Metadata>

/** A stage plan as a create request (or the config) declares it; `normalizeStagePlan` checks the rest. */
const stageSpecs = wire<StageSpec[]>()(
  z
    .array(
      z.union([
        text(stagePlanLimits.maxNameLength).min(1),
        z
          .object({
            name: text(stagePlanLimits.maxNameLength).min(1),
            weight: z.number().positive().finite().optional(),
            from: percent.optional(),
            to: percent.optional(),
          })
          .strict(),
      ]),
    )
    .min(1)
    .max(stagePlanLimits.maxStages),
)

const itemStatusList = ['pending', 'running', 'completed', 'failed', 'skipped'] as const satisfies readonly ItemStatus[]

const producerEvent = wire<ProducerEvent>()(
  z.discriminatedUnion('type', [
    z.object({ type: z.literal('started'), worker: text(200).optional() }).strict(),
    z
      .object({
        type: z.literal('progress'),
        stage: text(200).min(1).optional(),
        percent: percent.optional(),
        message: prose(2000).optional(),
        fraction: z.number().min(0).max(1).optional(),
        metadata: metadata.optional(),
      })
      .strict(),
    z
      .object({
        type: z.literal('item'),
        id: text(200).min(1),
        label: prose(500).optional(),
        status: z.enum(itemStatusList).optional(),
        percent: percent.optional(),
        message: prose(2000).optional(),
        metadata: metadata.optional(),
      })
      .strict(),
    z.object({ type: z.literal('chunk'), text: z.string().min(1).transform(wellFormed) }).strict(),
    z.object({ type: z.literal('checkpoint'), data: present }).strict(),
    z.object({ type: z.literal('completed'), result: z.unknown().optional() }).strict(),
    z
      .object({ type: z.literal('failed'), code: text(100).min(1), message: prose(2000), retryable: z.boolean().optional() })
      .strict(),
  ]),
)

/**
 * A tenant or user name: no control characters; a tenant has no `:` either, so that `owner=tenant:user`
 * (split at the first colon) addresses every owner, users with a colon in their name included.
 */
export const tenantName = text(200).min(1).regex(ownerNamePatterns.tenant, ownerNameRules.tenant)
export const userName = text(200).min(1).regex(ownerNamePatterns.user, ownerNameRules.user)

const owner = wire<Owner>()(z.object({ tenant: tenantName, user: userName }).strict())

const maxDeadlineMs = 366 * 86_400_000
/** A job's deadline: milliseconds or a duration string (`500ms`, `10s`, `2m`, `24h`, `7d`), at most 366 days. */
const deadline = z
  .union([z.number().int().min(0).max(maxDeadlineMs), z.string().regex(/^\s*\d+(?:\.\d+)?\s*(?:ms|s|m|h|d)?\s*$/, 'expected milliseconds or a duration such as 500ms, 10s, 2m, 24h')])
  .pipe(duration)
  .pipe(z.number().int().min(0).max(maxDeadlineMs))

export const createJobBody = wire<CreateJobRequest>()(
  z
    .object({
      type: z.string().min(1).max(100).regex(/^[\w.:-]+$/, 'letters, digits, _ . : - only'),
      input: z.unknown().optional(),
      owner: owner.optional(),
      idempotencyKey: text(200).min(1).optional(),
      dispatch: z.boolean().optional(),
      maxAttempts: z.number().int().min(1).max(100).optional(),
      // Deadlines and retention (ms, or a duration such as "2m"); 0 turns off the type's or the default.
      timeout: deadline.optional(),
      timeoutPer: z.enum(['job', 'attempt']).optional(),
      timeoutRetryable: z.boolean().optional(),
      queueTimeout: deadline.optional(),
      heartbeatTimeout: deadline.optional(),
      cancelWhenUnwatched: deadline.optional(),
      retention: deadline.optional(),
      /** The job's stage plan; overrides its type's plan from the config. */
      stages: stageSpecs.optional(),
    })
    .strict(),
)

const jobType = z.string().min(1).max(100)
const leaseToken = z.string().min(1).max(200)

/** Without `lease`: a self-run job's runner heartbeat. */
export const heartbeatBody = wire<HeartbeatRequest>()(
  z.object({ lease: leaseToken.optional(), leaseMs: z.number().int().min(1000).max(600_000).optional() }).strict(),
)
export const releaseBody = wire<ReleaseRequest>()(z.object({ lease: leaseToken, reason: prose(200).optional(), ran: z.boolean().optional() }).strict())
export const signalsBody = wire<SignalsRequest>()(
  z
    .object({
      // An empty list would hold the connection for the whole wait with nothing to report.
      jobs: z
        .array(z.object({ id: z.string().min(1).max(100), lease: leaseToken }).strict())
        .min(1, 'list at least one job you hold: a signals poll over no jobs has nothing to wait for')
        .max(1000),
      wait: z.number().min(0).max(3600).optional(),
    })
    .strict(),
)

export const cancelBody = wire<CancelRequest>()(z.object({ reason: prose(500).optional() }).strict())

export const listQuery = z
  .object({
    status: z.enum(jobStatuses).optional(),
    type: z.string().optional(),
    owner: z.string().optional(),
    tenant: z.string().optional(),
    user: z.string().optional(),
    limit: z.coerce.number().int().min(1).max(200).default(50),
    cursor: z.string().optional(),
    /** The credential, already checked by the auth hook. */
    access_token: z.string().optional(),
  })
  .strict()
// A query arrives as text (`limit` is coerced), so its parsed form is what matches the wire type.
agrees<Same<Omit<z.output<typeof listQuery>, 'access_token'>, ListJobsQuery & { limit: number }>>()

/** Parses a body with a schema; the first issue becomes an `invalid_request` naming the field. */
export function parseWith<T>(schema: z.ZodType<T>, value: unknown, prefix = ''): T {
  const result = schema.safeParse(value)
  if (result.success) return result.data
  const issue = result.error.issues[0]
  // Zod reports an unknown key on the object holding it; name the key, as the events route does.
  const unknownKey = issue?.code === 'unrecognized_keys' ? issue.keys[0] : undefined
  const field = [prefix, ...(issue?.path ?? []).map(String), unknownKey ?? ''].filter((p) => p !== '').join('.')
  const message = unknownKey === undefined ? (issue?.message ?? 'invalid') : 'unknown field'
  const reason = field === '' ? message : `${field}: ${message}`
  throw new JobwireError('invalid_request', { field: field === '' ? undefined : field, reason })
}

export interface EventLimits {
  maxEventBytes: number
  maxBatchEvents: number
  /** Largest result or checkpoint (its JSON); beyond `maxEventBytes` they are stored apart. Default `maxEventBytes`. */
  maxValueBytes?: number
}

export interface ProducerWrite {
  events: EventDraft[]
  /** A worker's lease token, required for jobs a worker holds. */
  lease?: string
  /** A worker's write batch number under its lease; a repeated number is a retry and appends nothing. */
  batch?: number
}

const writeMeta = wire<WriteMeta>()(
  z.object({ lease: leaseToken.optional(), batch: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).optional() }),
)

/*
 * The event-writing bodies as the OpenAPI document describes them. The routes read them step by
 * step instead (parseProducerEvents, parseBulkWrites), to name the field of the first problem and
 * check sizes before shapes; these say the same thing in one schema.
 */
const withWriteMeta = producerEvent.options.map((event) => event.extend(writeMeta.shape))
export const producerEventsBodyDoc = wire<AppendEventsRequest>()(
  z.union([
    z.discriminatedUnion('type', withWriteMeta as unknown as [(typeof withWriteMeta)[number], ...(typeof withWriteMeta)[number][]]),
    z.object({ events: z.array(producerEvent).min(1), ...writeMeta.shape }).strict(),
  ]),
)
const jobWriteDoc = wire<JobWrite>()(z.object({ jobId: z.string().min(1).max(100), events: z.array(producerEvent).min(1), ...writeMeta.shape }).strict())
export const bulkBodyDoc = wire<BulkWriteRequest>()(z.object({ writes: z.array(jobWriteDoc).min(1) }).strict())

/**
 * Reads `POST /v1/jobs/:id/events`: one event (`{type, ...}`) or a batch (`{events: [...]}`), each
 * optionally with a worker's `lease` and `batch`. Checks count, size and shape of every event
 * before any is appended.
 */
export function parseProducerEvents(input: unknown, limits: EventLimits): ProducerWrite {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new JobwireError('invalid_request', { reason: 'body must be an event object or {events: [...]}' })
  }
  const body = input as Record<string, unknown>
  const { lease, batch: batchNumber } = body
  // Most writes carry neither (a backend's, a browser's): no schema run for them. No spread or rest
  // here: a copy with a key added is V8's slow path (docs/architecture.md, "Cross-cutting").
  if (lease === undefined && batchNumber === undefined) return { events: parseEventList(body, limits) }
  const meta = quickWriteMeta(lease, batchNumber) ?? writeMetaBySchema(lease, batchNumber)
  let events: EventDraft[]
  if ('events' in body) {
    for (const key in body) if (key !== 'events' && key !== 'lease' && key !== 'batch') throw unknownField(key)
    events = readEvents(body.events, true, limits)
  } else {
    // One event with the write's lease and batch beside its own fields.
    const { lease: _lease, batch: _batch, ...event } = body
    events = readEvents([event], false, limits)
  }
  return { lease: meta.lease, batch: meta.batch, events }
}

/**
 * A worker's usual `lease` and `batch`, read by hand as the schema would (both keys, as given), or
 * undefined when the schema must decide (test/event-drafts.test.ts compares the two).
 */
export function quickWriteMeta(lease: unknown, batch: unknown): WriteMeta | undefined {
  return isWriteMeta(lease, batch) ? { lease: lease as string | undefined, batch: batch as number | undefined } : undefined
}

/** Whether `writeMeta` surely accepts this `lease` and `batch` as they are. */
function isWriteMeta(lease: unknown, batch: unknown): boolean {
  const leaseOk = lease === undefined || (typeof lease === 'string' && lease.length >= 1 && lease.length <= 200)
  return leaseOk && (batch === undefined || (Number.isSafeInteger(batch) && (batch as number) >= 1))
}

/** `lease` and `batch` read by the schema. */
export function writeMetaBySchema(lease: unknown, batch: unknown): WriteMeta {
  return parseWith(writeMeta, { lease, batch })
}

/** One job's part of `POST /v1/events`. */
export interface BulkWrite extends ProducerWrite {
  jobId: string
}

const bulkWrite = z
  .object({
    jobId: z.string().min(1).max(100),
    events: z.array(z.unknown()).min(1),
    lease: leaseToken.optional(),
    batch: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).optional(),
  })
  .strict()
const bulkBody = z.object({ writes: z.array(z.unknown()).min(1) }).strict()

/**
 * Reads `POST /v1/events`: `{writes: [{jobId, events: [...], lease?, batch?}, ...]}`. The whole
 * request is one batch — at most `maxBatchEvents` events over all its writes — and every write is
 * checked before any is appended, so a malformed request appends nothing.
 */
export function parseBulkWrites(input: unknown, limits: EventLimits): BulkWrite[] {
  const { writes } = parseWith(bulkBody, input)
  return parseWrites(writes, limits, 'writes')
}

/** The writes of a bulk request (under `field`): each checked, and all their events within one batch's limit. */
function parseWrites(writes: readonly unknown[], limits: EventLimits, field: string): BulkWrite[] {
  let total = 0
  return writes.map((raw, index) => {
    const { jobId, events, lease, batch } = quickBulkWrite(raw) ?? parseWith(bulkWrite, raw, `${field}.${index}`)
    total += events.length
    if (total > limits.maxBatchEvents) throw new JobwireError('batch_too_large', { limit: limits.maxBatchEvents })
    try {
      const write: BulkWrite = { jobId, events: readEvents(events, true, limits) }
      if (lease !== undefined) write.lease = lease
      if (batch !== undefined) write.batch = batch
      return write
    } catch (error) {
      const prefix = `${field}.${index}`
      // Name the field from the top of the request: writes.3.events.0.percent.
      if (error instanceof JobwireError && typeof error.details?.field === 'string') {
        throw new JobwireError(error.code, { ...error.details, field: `${prefix}.${error.details.field}`, reason: `${prefix}: ${String(error.details.reason)}` })
      }
      if (error instanceof JobwireError && error.details !== undefined) throw new JobwireError(error.code, { ...error.details, write: index })
      throw error
    }
  })
}

/** One write of a bulk request as `bulkWrite` reads it, read by hand; undefined when the schema must decide (test/event-drafts.test.ts). */
export function quickBulkWrite(raw: unknown): { jobId: string; events: unknown[]; lease?: string; batch?: number } | undefined {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return undefined
  const { jobId, events, lease, batch } = raw as Record<string, unknown>
  if (typeof jobId !== 'string' || jobId.length < 1 || jobId.length > 100 || !Array.isArray(events) || events.length < 1) return undefined
  if (!isWriteMeta(lease, batch)) return undefined
  let keys = 2
  const write: { jobId: string; events: unknown[]; lease?: string; batch?: number } = { jobId, events }
  if (lease !== undefined) {
    write.lease = lease as string
    keys++
  }
  if (batch !== undefined) {
    write.batch = batch as number
    keys++
  }
  // No other key (the schema is strict), and none holding undefined.
  for (const key in raw) if (--keys < 0 || (key !== 'jobId' && key !== 'events' && key !== 'lease' && key !== 'batch')) return undefined
  return keys === 0 ? write : undefined
}

/** `bulkWrite` read by the schema. */
export function bulkWriteBySchema(raw: unknown): z.output<typeof bulkWrite> {
  return parseWith(bulkWrite, raw)
}

/** Most jobs one claim request may take (`max`), and most finished jobs' writes it may carry (`done`). */
const maxClaimJobs = 1000

const claimFields = {
  types: z.array(jobType).min(1).max(50),
  worker: text(200).min(1).optional(),
  leaseMs: z.number().int().min(1000).max(600_000).optional(),
  wait: z.number().min(0).max(3600).optional(),
  /** Several jobs in one claim: answered `{claims: [...]}` instead of one job or 204. */
  max: z.number().int().min(1).max(maxClaimJobs).optional(),
}

/** `POST /v1/workers/claim` as the OpenAPI document describes it; the route reads it with `parseClaimBody`. */
export const claimBody = wire<ClaimRequest>()(z.object({ ...claimFields, done: z.array(jobWriteDoc).max(maxClaimJobs).optional() }).strict())
const claimEnvelope = z.object({ ...claimFields, done: z.array(z.unknown()).max(maxClaimJobs).optional() }).strict()

/** A claim as the route reads it: its `done` writes checked like a bulk request's, each under a lease and ending its job. */
export interface ClaimBody extends Omit<ClaimRequest, 'done'> {
  done?: (BulkWrite & { lease: string })[]
}

/**
 * Reads `POST /v1/workers/claim`. Its `done` writes are checked like `POST /v1/events`' (one
 * batch's limits over all of them, every one before any is applied), and each must be a held
 * job's last write: under its `lease`, its events ending with `completed` or `failed`.
 */
export function parseClaimBody(input: unknown, limits: EventLimits): ClaimBody {
  const { done, ...claim } = parseWith(claimEnvelope, input)
  if (done === undefined) return claim
  return {
    ...claim,
    done: parseWrites(done, limits, 'done').map((write, index) => {
      const last = write.events.at(-1)?.type
      if (last !== 'completed' && last !== 'failed') {
        throw new JobwireError('invalid_request', { field: `done.${index}.events`, reason: `done.${index}.events: must end with a completed or failed event (a finished job's last write)` })
      }
      if (write.lease === undefined) throw new JobwireError('invalid_request', { field: `done.${index}.lease`, reason: `done.${index}.lease: is required (the write of a held job)` })
      return { ...write, lease: write.lease }
    }),
  }
}

/** The events of a body: `{events: [...]}`, or the body itself as one event. */
function parseEventList(body: Record<string, unknown>, limits: EventLimits): EventDraft[] {
  if (!('events' in body)) return readEvents([body], false, limits)
  for (const key in body) if (key !== 'events') throw unknownField(key)
  return readEvents(body.events, true, limits)
}

function unknownField(key: string): JobwireError {
  return new JobwireError('invalid_request', { field: key, reason: `${key}: unknown field` })
}

/** Each event of a batch checked (type, size, shape) and read as a draft; `listed`: they came as `events` (so errors name `events.N`). */
function readEvents(batch: unknown, listed: boolean, limits: EventLimits): EventDraft[] {
  if (!Array.isArray(batch) || batch.length === 0) {
    throw new JobwireError('invalid_request', { field: 'events', reason: 'events must be a non-empty array' })
  }
  if (batch.length > limits.maxBatchEvents) throw new JobwireError('batch_too_large', { limit: limits.maxBatchEvents })
  const drafts: EventDraft[] = new Array(batch.length)
  for (let index = 0; index < batch.length; index++) {
    const raw: unknown = batch[index]
    const type = typeof raw === 'object' && raw !== null ? (raw as { type?: unknown }).type : undefined
    if (typeof type !== 'string' || !(producerEventTypes as readonly string[]).includes(type)) {
      if (type === undefined) throw new JobwireError('invalid_request', { field: listed ? `events.${index}.type` : 'type', reason: 'type is required' })
      throw new JobwireError('unknown_event_type', { type: String(type), index, allowed: producerEventTypes })
    }
    const size = Buffer.byteLength(JSON.stringify(raw))
    // A result or a checkpoint may exceed an event (it is stored apart); the rest of its event may not.
    const field = type === 'completed' ? 'result' : type === 'checkpoint' ? 'data' : null
    const maxValueBytes = limits.maxValueBytes ?? limits.maxEventBytes
    // The value is part of the event: an event within both limits holds no value past either, and
    // its value is not encoded a second time (every worker's completion carries one).
    const valueSize =
      field === null || (size <= maxValueBytes && size <= limits.maxEventBytes) ? 0 : Buffer.byteLength(JSON.stringify((raw as Record<string, unknown>)[field] ?? null))
    if (valueSize > maxValueBytes) {
      throw new JobwireError('value_too_large', { value: field === 'result' ? 'result' : 'checkpoint', index, size: valueSize, limit: maxValueBytes })
    }
    if (size - valueSize > limits.maxEventBytes) throw new JobwireError('event_too_large', { index, size, limit: limits.maxEventBytes })
    drafts[index] = quickDraft(raw as Record<string, unknown>, type) ?? eventDraftBySchema(raw, listed ? `events.${index}` : '')
  }
  return drafts
}

/*
 * Producer events of the usual types are read by hand (`quickDraft`): the schema (`producerEvent`,
 * zod) costs ~2 µs an event, a tenth of a small write's own work on the node. The hand-written
 * reading accepts only what the schema accepts, and gives what it gives, key order included
 * (test/event-drafts.test.ts compares both over generated events); anything it is not sure of — a
 * field out of range, an unknown key, metadata — goes to the schema, which decides and names the
 * problem.
 */

/** The same draft, read by the schema alone. */
export function eventDraftBySchema(raw: unknown, prefix: string): EventDraft {
  return toDraft(parseWith(producerEvent, raw, prefix))
}

/** Text the schema's `text(max)` accepts (at least `min` characters). */
const isText = (value: unknown, min: number, max: number): value is string =>
  typeof value === 'string' && value.length >= min && value.length <= max && isWellFormed(value)
/** Free text the schema's `prose(max)` accepts and leaves as it is (well-formed). */
const isProse = (value: unknown, max: number): value is string => typeof value === 'string' && value.length <= max && isWellFormed(value)
const isPercent = (value: unknown): value is number => typeof value === 'number' && value >= 0 && value <= 100
const itemStatuses: ReadonlySet<unknown> = new Set(itemStatusList)

/** The draft of an event every field of which this reads with certainty, or undefined (the schema decides). */
export function quickDraft(raw: Record<string, unknown>, type: string): EventDraft | undefined {
  let keys = 0
  switch (type) {
    case 'chunk': {
      for (const key in raw) if (key !== 'type' && key !== 'text') return undefined
      const text = raw.text
      // Free text, kept as sent when well-formed (the schema's transform replaces lone surrogates).
      return typeof text === 'string' && text.length >= 1 && isWellFormed(text) ? { type: 'chunk', data: { text } } : undefined
    }
    case 'progress': {
      const { stage, percent, message, fraction } = raw
      if (stage !== undefined && !isText(stage, 1, 200)) return undefined
      if (percent !== undefined && !isPercent(percent)) return undefined
      if (message !== undefined && !isProse(message, 2000)) return undefined
      if (fraction !== undefined && !(typeof fraction === 'number' && fraction >= 0 && fraction <= 1)) return undefined
      for (const key in raw) {
        if (key !== 'type' && key !== 'stage' && key !== 'percent' && key !== 'message' && key !== 'fraction') return undefined
        keys++
      }
      // The schema's keys, in its order, those present only.
      const data: Extract<EventDraft, { type: 'progress' }>['data'] = {}
      if (stage !== undefined) data.stage = stage
      if (percent !== undefined) data.percent = percent
      if (message !== undefined) data.message = message
      if (fraction !== undefined) data.fraction = fraction
      return keys === 1 + Object.keys(data).length ? { type: 'progress', data } : undefined
    }
    case 'item': {
      const { id, label, status, percent, message } = raw
      if (!isText(id, 1, 200)) return undefined
      if (label !== undefined && !isProse(label, 500)) return undefined
      if (status !== undefined && !itemStatuses.has(status)) return undefined
      if (percent !== undefined && !isPercent(percent)) return undefined
      if (message !== undefined && !isProse(message, 2000)) return undefined
      for (const key in raw) {
        if (key !== 'type' && key !== 'id' && key !== 'label' && key !== 'status' && key !== 'percent' && key !== 'message') return undefined
        keys++
      }
      const data: Extract<EventDraft, { type: 'item' }>['data'] = { id }
      if (label !== undefined) data.label = label
      if (status !== undefined) data.status = status as ItemStatus
      if (percent !== undefined) data.percent = percent
      if (message !== undefined) data.message = message
      return keys === 1 + Object.keys(data).length ? { type: 'item', data } : undefined
    }
    case 'completed': {
      for (const key in raw) if (key !== 'type' && key !== 'result') return undefined
      // Any JSON value, or none.
      return { type: 'completed', data: { result: raw.result ?? null } }
    }
    case 'started': {
      for (const key in raw) if (key !== 'type' && key !== 'worker') return undefined
      const worker = raw.worker
      if (worker !== undefined && !isText(worker, 0, 200)) return undefined
      return { type: 'started', data: { attempt: 0, worker: worker ?? null } }
    }
    default:
      // checkpoint and failed: rare, and the schema's.
      return undefined
  }
}

function toDraft(event: ProducerEvent): EventDraft {
  switch (event.type) {
    case 'started':
      return { type: 'started', data: { attempt: 0, worker: event.worker ?? null } }
    case 'progress': {
      const { type: _, ...data } = event
      return { type: 'progress', data }
    }
    case 'item': {
      const { type: _, ...data } = event
      return { type: 'item', data }
    }
    case 'chunk':
      return { type: 'chunk', data: { text: event.text } }
    case 'checkpoint':
      return { type: 'checkpoint', data: { data: event.data } }
    case 'completed':
      return { type: 'completed', data: { result: event.result ?? null } }
    case 'failed':
      return { type: 'failed', data: { code: event.code, message: event.message, retryable: event.retryable ?? false } }
  }
}

/** `owner=tenant:user` (or `owner=tenant`) as a list filter. */
export function parseOwnerFilter(value: string | undefined): Partial<Owner> {
  if (value === undefined || value === '') return {}
  const colon = value.indexOf(':')
  return colon === -1 ? { tenant: value } : { tenant: value.slice(0, colon), user: value.slice(colon + 1) }
}

/** A stream position from `Last-Event-ID` or `?after=`. */
export function parsePosition(value: string | undefined): number | undefined {
  if (value === undefined || value === '') return undefined
  if (!/^\d{1,15}$/.test(value.trim())) throw new JobwireError('invalid_position', { position: value.slice(0, 40) })
  return Number(value.trim())
}
