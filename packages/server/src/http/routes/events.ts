import type { FastifyInstance } from 'fastify'
import type { AppendResponse, BulkWriteResponse } from '@jobwire/protocol'
import { principalOf, type RouteContext } from '../context.js'
import { parseBulkWrites, parseProducerEvents } from '../schemas.js'
import { writeEach, writeJob } from '../writes.js'

/**
 * Appending events: to one job (`POST /v1/jobs/:id/events`), or to many in one request
 * (`POST /v1/events`), for producers that report on many jobs at once — a worker process running
 * fifty jobs, a backend relaying an upstream's progress. Each job's write is atomic on its own and
 * answered on its own (writes.ts).
 */
export function registerEventRoutes(v1: FastifyInstance, context: RouteContext): void {
  const { service, settings } = context

  // The one route that carries a large result or checkpoint: its body may hold one whole.
  const bodyLimit = Math.max(settings.maxBodyBytes, settings.maxValueBytes + 64 * 1024)
  v1.post<{ Params: { id: string } }>('/jobs/:id/events', { bodyLimit }, (request): Promise<AppendResponse> =>
    writeJob(service, principalOf(request), request.params.id, parseProducerEvents(request.body, settings)),
  )

  v1.post('/events', async (request): Promise<BulkWriteResponse> => ({
    results: await writeEach(request, service, principalOf(request), parseBulkWrites(request.body, settings)),
  }))
}
