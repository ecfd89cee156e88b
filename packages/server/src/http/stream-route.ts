import type { FastifyReply, FastifyRequest } from 'fastify'
import { JobwireError } from '@jobwire/protocol'
import type { JobService } from '../core/jobs.js'
import type { SseTransport } from '../transports/sse.js'
import { parsePosition } from './schemas.js'

/**
 * Answers `GET …/:id/stream`: position from `Last-Event-ID` (what EventSource sends on reconnect)
 * or `?after=`, then the SSE transport. Errors before the stream opens are plain JSON errors.
 */
export async function serveJobStream(
  request: FastifyRequest<{ Params: { id: string }; Querystring: { after?: string } }>,
  reply: FastifyReply,
  sse: SseTransport,
  service: JobService,
): Promise<void> {
  const lastEventId = request.headers['last-event-id']
  const after = parsePosition(typeof lastEventId === 'string' && lastEventId !== '' ? lastEventId : request.query.after)
  reply.hijack()
  try {
    await sse.serve(request.raw, reply.raw, (sink) => service.subscribe(request.params.id, after, sink))
  } catch (error) {
    const known = error instanceof JobwireError ? error : new JobwireError('internal', { requestId: request.id })
    if (known.code === 'internal') request.log.error({ err: error }, 'stream failed to open')
    if (!reply.raw.headersSent) {
      reply.raw.writeHead(known.status, { 'content-type': 'application/json; charset=utf-8', 'x-request-id': request.id })
    }
    reply.raw.end(JSON.stringify({ error: known.toBody() }))
  }
}
