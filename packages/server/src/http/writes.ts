import type { FastifyRequest } from 'fastify'
import { JobwireError, type AppendResponse, type BulkWriteResult } from '@jobwire/protocol'
import { authorizedFacts } from '../core/access.js'
import type { JobService, WriteContext } from '../core/jobs.js'
import type { Principal } from '../core/scopes.js'
import type { BulkWrite, ProducerWrite } from './schemas.js'

/**
 * A producer's write to one job: authorized from the job's facts (no read of the job first),
 * appended atomically, answered with what it appended. Throws a registry error when refused.
 */
export async function writeJob(service: JobService, principal: Principal, jobId: string, write: ProducerWrite): Promise<AppendResponse> {
  return append(service, principal, jobId, write, false)
}

/**
 * The write, answered with its job's id (a bulk result, `withJobId`) or without. Built field by
 * field: a rest or spread copy of the answer is V8's slow path (docs/architecture.md, "Cross-cutting").
 */
async function append(service: JobService, principal: Principal, jobId: string, write: ProducerWrite, withJobId: boolean): Promise<AppendResponse & { jobId?: string }> {
  // Workers write the jobs they hold (the lease is checked in the append); backends write the rest.
  const job = await authorizedFacts(service, principal, write.lease !== undefined ? 'write-leased' : 'write', jobId)
  const { job: after, events, duplicate } = await service.appendEvents(job.id, write.events, writeContext(write))
  const appended = events.map((e) => ({ seq: e.seq, type: e.type }))
  const answer: AppendResponse & { jobId?: string } = withJobId
    ? { jobId: job.id, events: appended, seq: after.seq, status: after.status }
    : { events: appended, seq: after.seq, status: after.status }
  if (duplicate) answer.duplicate = true
  return answer
}

/**
 * Writes to many jobs (`POST /v1/events`, a claim's `done`), each atomic and answered on its own,
 * like a bulk API: one refused write (a lost lease, a finished job) leaves the others standing.
 * Writes to different jobs go out together (one group commit on SQLite, one pipeline on Redis);
 * to one job, in order.
 */
export function writeEach(request: FastifyRequest, service: JobService, principal: Principal, writes: readonly BulkWrite[]): Promise<BulkWriteResult[]> {
  const chains = new Map<string, Promise<unknown>>()
  return Promise.all(
    writes.map((write) => {
      const jobId = write.jobId
      const previous = chains.get(jobId) ?? Promise.resolve()
      const answer = previous
        .then(() => append(service, principal, jobId, write, true) as Promise<BulkWriteResult>)
        .catch((error: unknown) => refused(request, jobId, error))
      chains.set(jobId, answer)
      return answer
    }),
  )
}

/**
 * What a write over HTTP appends with. Built field by field: `{ ...write, storeLargeValues: true }`
 * (a spread, then a property the source lacks) took V8's slow path, ~1.5 µs a write here.
 */
function writeContext(write: ProducerWrite): WriteContext {
  return { lease: write.lease, batch: write.batch, storeLargeValues: true }
}

/** A refused write's answer: its registry error; an unknown throw becomes `internal`, logged with the request id. */
function refused(request: FastifyRequest, jobId: string, error: unknown): BulkWriteResult {
  const known = error instanceof JobwireError ? error : new JobwireError('internal', { requestId: request.id })
  if (known.code === 'internal') request.log.error({ err: error, jobId }, 'bulk write failed')
  return { jobId, error: known.toBody() }
}
