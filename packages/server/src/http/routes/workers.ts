import type { FastifyInstance } from 'fastify'
import { JobwireError } from '@jobwire/protocol'
import { canWork, requireKeyRole } from '../../core/scopes.js'
import { abortOnClose, principalOf, type RouteContext } from '../context.js'
import { claimBody, heartbeatBody, parseWith, releaseBody, signalsBody } from '../schemas.js'

/** Workers: claim, heartbeat, release, signals. Only `worker` (and `admin`) keys. */
export function registerWorkerRoutes(v1: FastifyInstance, context: RouteContext): void {
  const { service, dispatcher, settings } = context

  v1.post('/workers/claim', async (request, reply) => {
    const principal = principalOf(request)
    requireKeyRole(principal, ['admin', 'worker'], 'claim jobs')
    const body = parseWith(claimBody, request.body ?? {})
    const refused = body.types.find((type) => !canWork(principal, type))
    if (refused !== undefined) throw new JobwireError('forbidden', { action: `claim jobs of type "${refused}"` })
    const claimed = await dispatcher.claim({
      types: body.types,
      worker: body.worker ?? 'worker',
      leaseMs: body.leaseMs ?? settings.defaultLeaseMs,
      waitMs: Math.min((body.wait ?? 0) * 1000, settings.pollMaxWaitMs),
      signal: abortOnClose(reply, context.shuttingDown),
    })
    if (claimed === null) return reply.code(204).send()
    return claimed
  })

  v1.post<{ Params: { id: string } }>('/jobs/:id/heartbeat', async (request) => {
    requireKeyRole(principalOf(request), ['admin', 'worker'], 'heartbeat jobs')
    const body = parseWith(heartbeatBody, request.body ?? {})
    return dispatcher.heartbeat(request.params.id, body.lease, body.leaseMs ?? settings.defaultLeaseMs)
  })

  v1.post<{ Params: { id: string } }>('/jobs/:id/release', async (request) => {
    requireKeyRole(principalOf(request), ['admin', 'worker'], 'release jobs')
    const body = parseWith(releaseBody, request.body ?? {})
    const { job } = await dispatcher.release(request.params.id, body.lease, body.reason ?? null)
    return service.withQueuePosition(job)
  })

  v1.post('/workers/signals', async (request, reply) => {
    requireKeyRole(principalOf(request), ['admin', 'worker'], 'watch job signals')
    const body = parseWith(signalsBody, request.body ?? {})
    const waitMs = Math.min((body.wait ?? 0) * 1000, settings.pollMaxWaitMs)
    return { signals: await dispatcher.signals(body.jobs, waitMs, abortOnClose(reply, context.shuttingDown)) }
  })
}
