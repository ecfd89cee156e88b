import type { FastifyInstance, FastifyRequest } from 'fastify'
import { JobwireError, type AppendResponse, type BulkWriteResponse, type BulkWriteResult } from '@jobwire/protocol'
import { authorizedFacts } from '../../core/access.js'
import type { Principal } from '../../core/scopes.js'
import { principalOf, type RouteContext } from '../context.js'
import { parseBulkWrites, parseProducerEvents, type ProducerWrite } from '../schemas.js'

/**
 * Appending events: to one job (`POST /v1/jobs/:id/events`), or to many in one request
 * (`POST /v1/events`), for producers that report on many jobs at once — a worker process running
 * fifty jobs, a backend relaying an upstream's progress. Each job's write is atomic on its own and
 * answered on its own, like a bulk API: one refused write (a lost lease, a finished job) leaves
 * the others standing, in order per job.
 */
export function registerEventRoutes(v1: FastifyInstance, context: RouteContext): void {
  const { service, settings } = context

  /** Checks the principal may write this job, then appends; throws a registry error if not. */
  async function write(principal: Principal, jobId: string, write: ProducerWrite): Promise<{ jobId: string } & AppendResponse> {
    // Workers write the jobs they hold (the lease is checked in the append); backends write the rest.
    const job = await authorizedFacts(service, principal, write.lease !== undefined ? 'write-leased' : 'write', jobId)
    const { job: after, events, duplicate } = await service.appendEvents(job.id, write.events, { ...write, storeLargeValues: true })
    const answer: { jobId: string } & AppendResponse = { jobId: job.id, events: events.map((e) => ({ seq: e.seq, type: e.type })), seq: after.seq, status: after.status }
    return duplicate ? { ...answer, duplicate: true } : answer
  }

  // The one route that carries a large result or checkpoint: its body may hold one whole.
  const bodyLimit = Math.max(settings.maxBodyBytes, settings.maxValueBytes + 64 * 1024)
  v1.post<{ Params: { id: string } }>('/jobs/:id/events', { bodyLimit }, async (request): Promise<AppendResponse> => {
    const { jobId: _, ...answer } = await write(principalOf(request), request.params.id, parseProducerEvents(request.body, settings))
    return answer
  })

  v1.post('/events', async (request): Promise<BulkWriteResponse> => {
    const principal = principalOf(request)
    const writes = parseBulkWrites(request.body, settings)
    // Writes to different jobs go out together (one group commit on SQLite); to one job, in order.
    const chains = new Map<string, Promise<unknown>>()
    const answers = writes.map(({ jobId, ...one }) => {
      const previous = chains.get(jobId) ?? Promise.resolve()
      const answer = previous.then(() => write(principal, jobId, one)).catch((error: unknown) => refused(request, jobId, error))
      chains.set(jobId, answer)
      return answer
    })
    return { results: await Promise.all(answers) }
  })
}

function refused(request: FastifyRequest, jobId: string, error: unknown): BulkWriteResult {
  const known = error instanceof JobwireError ? error : new JobwireError('internal', { requestId: request.id })
  if (known.code === 'internal') request.log.error({ err: error, jobId }, 'bulk write failed')
  return { jobId, error: known.toBody() }
}
