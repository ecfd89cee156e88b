import type { FastifyReply, FastifyRequest } from 'fastify'
import { JobwireError } from '@jobwire/protocol'
import type { JobService } from '../core/jobs.js'
import { endsAt } from '../core/subscription.js'
import { authorizedJob, requireUnexpired, watchExpiry } from '../core/access.js'
import { clientAddress, type Principal } from '../core/scopes.js'
import type { SseTransport } from '../transports/sse.js'
import type { Limits } from './limits.js'
import { parsePosition } from './schemas.js'

export interface StreamContext {
  sse: SseTransport
  service: JobService
  limits: Limits
  /** Registers a stream opened with an API key so that revoking the key closes it. */
  trackKey: (principal: Principal, fail: (error: JobwireError) => void) => () => void
}

/**
 * Answers `GET …/:id/stream`: scope check, stream limits, position from `Last-Event-ID` (what
 * EventSource sends on reconnect) or `?after=`, then the SSE transport. Errors before the stream
 * opens are plain JSON errors (so is `position_ahead`); afterwards (token expiry, key revoked) they
 * are in-band `error` events that end the stream. A finished job asked for from its last seq gets
 * 204 No Content. A standard EventSource stops on a 204 or any non-200 answer, so it reconnects
 * at most once after a job ends.
 */
export async function serveJobStream(
  request: FastifyRequest<{ Params: { id: string }; Querystring: { after?: string } }>,
  reply: FastifyReply,
  principal: Principal,
  context: StreamContext,
): Promise<void> {
  const { service, sse, limits } = context
  const jobId = request.params.id
  const lastEventId = request.headers['last-event-id']
  const after = parsePosition(typeof lastEventId === 'string' && lastEventId !== '' ? lastEventId : request.query.after)
  requireUnexpired(principal)
  const job = await authorizedJob(service.store, principal, 'read', jobId)
  if (endsAt(job, after)) {
    // Nothing more will ever come: 204 is what makes an EventSource stop reconnecting (HTML spec).
    await reply.code(204).header('cache-control', 'no-store').send()
    return
  }
  // Gone while its credential and job were read: nothing to stream to, and no slot to take.
  const address = clientAddress(request.raw.socket)
  if (address === null) {
    reply.hijack()
    reply.raw.destroy()
    return
  }
  const slot = await limits.openStream(principal, address, job.type)
  const release = slot.release
  reply.hijack()
  try {
    const stream = await sse.serve(request.raw, reply.raw, (sink) => service.subscribe(jobId, after, sink, 'sse'))
    const cancelExpiry = watchExpiry(principal, (error) => stream.fail(error))
    const untrack = context.trackKey(principal, (error) => stream.fail(error))
    void stream.closed.then(() => {
      cancelExpiry()
      untrack()
      release()
    })
  } catch (error) {
    release()
    const known = error instanceof JobwireError ? error : new JobwireError('internal', { requestId: request.id })
    if (known.code === 'internal') request.log.error({ err: error }, 'stream failed to open')
    if (!reply.raw.headersSent) {
      reply.raw.writeHead(known.status, { 'content-type': 'application/json; charset=utf-8', 'x-request-id': request.id })
    }
    reply.raw.end(JSON.stringify({ error: known.toBody() }))
  }
}
