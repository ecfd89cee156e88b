import type { IncomingMessage, Server } from 'node:http'
import type { Socket } from 'node:net'
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
  watchNextRequests(v1.server)

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
 * by default, an attempt spent: `worker_lost`).
 *
 * An answer written whole may still never be read: it reached a connection the worker had just
 * closed, or sat unread in the worker's socket when it closed it. Its system then resets the
 * connection (TCP answers data for a closed socket, or a close with unread data, with a reset), and
 * the node sees `ECONNRESET` (or `EPIPE`) after the answer went out. Until the worker sends its next
 * request on that connection (it has read the answer by then) or `unreadWindowMs` passes, such a
 * reset gives the jobs back too: a worker cannot be running jobs from an answer it never read. A
 * close without a reset gives nothing back (the worker may have read it and left). Behind a proxy
 * that reads the answer for the worker, the node sees no reset: those jobs wait for their leases.
 */
function giveBackIfUndelivered(reply: FastifyReply, claimed: readonly Claimed[], dispatcher: Dispatcher): void {
  const response = reply.raw
  if (response.destroyed) {
    void dispatcher.giveBack(claimed)
    return
  }
  // Taken now: a finished answer lets go of its connection.
  const socket = reply.request.raw.socket
  response.once('close', () => {
    if (!response.writableFinished) void dispatcher.giveBack(claimed)
    else giveBackIfUnread(socket, claimed, dispatcher)
  })
}

/** How long after a claim's answer a reset of its connection still gives its jobs back (ms). */
const unreadWindowMs = 10_000

/** A connection's end that says its last answer was never read: a reset (see giveBackIfUndelivered). */
function unread(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | null | undefined)?.code
  return code === 'ECONNRESET' || code === 'EPIPE'
}

const unreadReason = 'the claiming worker never read the answer'

function giveBackIfUnread(socket: Socket, claimed: readonly Claimed[], dispatcher: Dispatcher): void {
  if (socket.destroyed) {
    if (unread(socket.errored)) void dispatcher.giveBack(claimed, unreadReason)
    return
  }
  const done = (): void => {
    clearTimeout(timer)
    unreadWatches.delete(socket)
    socket.off('error', onError)
    socket.off('close', done)
  }
  const onError = (error: Error): void => {
    done()
    if (unread(error)) void dispatcher.giveBack(claimed, unreadReason)
  }
  const timer = setTimeout(done, unreadWindowMs)
  timer.unref()
  // Ended by the worker's next request on this connection (it read the answer: see watchNextRequests).
  unreadWatches.get(socket)?.()
  unreadWatches.set(socket, done)
  socket.once('error', onError)
  socket.once('close', done)
}

/** Per connection, the end of its watch for a reset after a claim's answer (giveBackIfUnread). */
const unreadWatches = new WeakMap<Socket, () => void>()

/**
 * Ends a connection's watch when its next request arrives: HTTP/1.1 clients send it only once they
 * have read the answer before it. Listened for on the server itself (not a socket's `data`, which
 * would take the connection's reads off the HTTP parser's fast path).
 */
function watchNextRequests(server: Server): void {
  server.on('request', (request: IncomingMessage) => unreadWatches.get(request.socket)?.())
}
