import type { FastifyInstance, FastifyReply } from 'fastify'
import { JobwireError } from '@jobwire/protocol'
import { authorize, canWork, requireKeyRole } from '../../core/access.js'
import type { Claimed, Dispatcher } from '../../core/dispatch.js'
import { abortOnClose, principalOf, type RouteContext } from '../context.js'
import { heartbeatBody, parseClaimBody, parseWith, releaseBody, signalsBody } from '../schemas.js'
import { writeEach } from '../writes.js'

/** Workers: claim, heartbeat, release, signals. Only `worker` (and `admin`) keys; a self-run job's heartbeat takes a `backend` key. */
export function registerWorkerRoutes(v1: FastifyInstance, context: RouteContext): void {
  const { service, dispatcher, settings } = context

  v1.post('/workers/claim', async (request, reply) => {
    const principal = principalOf(request)
    requireKeyRole(principal, ['admin', 'worker'], 'claim jobs')
    const body = parseClaimBody(request.body ?? {}, settings)
    const refused = body.types.find((type) => !canWork(principal, type))
    if (refused !== undefined) throw new JobwireError('forbidden', { action: `claim jobs of type "${refused}"` })
    const carries = body.done !== undefined && body.done.length > 0
    // The completions and the claim start in the same turn: one group commit on SQLite, one
    // pipeline of round trips on Redis. A claim that carries completions waits for no job, so
    // the worker hears about them at once.
    const done = body.done === undefined ? undefined : writeEach(request, service, principal, body.done)
    const claiming = dispatcher.claimMany({
      types: body.types,
      worker: body.worker ?? 'worker',
      leaseMs: body.leaseMs ?? settings.defaultLeaseMs,
      waitMs: carries ? 0 : Math.min((body.wait ?? 0) * 1000, settings.pollMaxWaitMs),
      // A claim that does not wait is made in this turn: a client gone meanwhile could not be heard of before it.
      signal: carries ? context.shuttingDown : abortOnClose(reply, context.shuttingDown),
      ...(body.max === undefined ? {} : { max: body.max }),
    })
    // The writes never throw (each is answered); a claim that fails must not leave them unanswered.
    const [claimed, results] = await Promise.all([claiming, done])
    if (claimed.length > 0) giveBackIfUndelivered(reply, claimed, dispatcher)
    // A request with `max` or `done` is answered with a list (empty when none came); one without, as it always was.
    if (results !== undefined) return { claims: claimed, done: results }
    if (body.max !== undefined) return { claims: claimed }
    const [first] = claimed
    if (first === undefined) return reply.code(204).send()
    return first
  })

  v1.post<{ Params: { id: string } }>('/jobs/:id/heartbeat', async (request) => {
    const body = parseWith(heartbeatBody, request.body ?? {})
    if (body.lease === undefined) {
      // A self-run job's runner, allowed what may write its events: its heartbeatTimeout starts over.
      const principal = principalOf(request)
      const job = await service.store.getJob(request.params.id)
      if (job?.dispatch === true) throw new JobwireError('invalid_request', { field: 'lease', reason: 'lease: required (a job dispatched to workers is heartbeated under its lease)' })
      const refused = authorize(principal, 'heartbeat', job, request.params.id)
      if (refused !== null) throw refused
      return service.runnerHeartbeat(request.params.id)
    }
    requireKeyRole(principalOf(request), ['admin', 'worker'], 'heartbeat jobs')
    return dispatcher.heartbeat(request.params.id, body.lease, body.leaseMs ?? settings.defaultLeaseMs)
  })

  v1.post<{ Params: { id: string } }>('/jobs/:id/release', async (request) => {
    requireKeyRole(principalOf(request), ['admin', 'worker'], 'release jobs')
    const body = parseWith(releaseBody, request.body ?? {})
    const { job } = await dispatcher.release(request.params.id, body.lease, body.reason ?? null, body.ran ?? true)
    return service.withQueuePosition(job)
  })

  v1.post('/workers/signals', async (request, reply) => {
    requireKeyRole(principalOf(request), ['admin', 'worker'], 'watch job signals')
    const body = parseWith(signalsBody, request.body ?? {})
    const waitMs = Math.min((body.wait ?? 0) * 1000, settings.pollMaxWaitMs)
    return { signals: await dispatcher.signals(body.jobs, waitMs, abortOnClose(reply, context.shuttingDown)) }
  })
}

/**
 * A claim's jobs go back to the queue at once when its answer cannot reach the worker: a worker
 * that stops aborts its waiting claim, and a job created just then can be claimed for it before
 * this node has read the connection's end (the claim's own abort check then finds it open). The
 * answer then fails to go out, and the jobs sat under a lease no one held until it lapsed (30 s
 * by default, an attempt spent: `worker_lost`). An answer written whole to a connection the worker
 * has dropped is not seen here; those jobs still wait for their leases.
 */
function giveBackIfUndelivered(reply: FastifyReply, claimed: readonly Claimed[], dispatcher: Dispatcher): void {
  const response = reply.raw
  if (response.destroyed) {
    void dispatcher.giveBack(claimed)
    return
  }
  response.once('close', () => {
    if (!response.writableFinished) void dispatcher.giveBack(claimed)
  })
}
