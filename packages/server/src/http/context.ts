import type { FastifyReply, FastifyRequest } from 'fastify'
import { isTerminal, JobwireError, type JobSummary } from '@jobwire/protocol'
import type { Dispatcher } from '../core/dispatch.js'
import type { JobService } from '../core/jobs.js'
import type { Principal } from '../core/scopes.js'
import type { Authenticator } from '../auth/authenticator.js'
import type { SseTransport } from '../transports/sse.js'
import type { RouteSettings } from '../options.js'
import type { Limits } from './limits.js'
import type { StreamContext } from './stream-route.js'
import type { ListedJob } from '../core/store.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the /v1 auth hook. */
    principal: Principal | null
    /** Gives the body's bytes back to `--max-body-bytes-in-flight` once it is parsed (app.ts: admitBody). */
    releaseBody: (() => void) | null
  }
}

/** What route modules share. */
export interface RouteContext extends StreamContext {
  service: JobService
  dispatcher: Dispatcher
  auth: Authenticator
  limits: Limits
  sse: SseTransport
  /** Aborted when the node shuts down: long-polls answer at once. */
  shuttingDown: AbortSignal
  /** Hears the publish→deliver latency of a long-poll answer woken by a live event (metrics). */
  pollDelivered: (seconds: number) => void
  /** What the routes read (options.ts maps it from the config). */
  settings: RouteSettings
}

export function principalOf(request: FastifyRequest): Principal {
  if (request.principal === null) throw new JobwireError('unauthorized')
  return request.principal
}

/** Per shutdown signal, what its open long-polls do when it aborts: one listener on it, however many wait. */
const waitingOn = new WeakMap<AbortSignal, Set<() => void>>()

function waitersOf(shuttingDown: AbortSignal): Set<() => void> {
  let waiting = waitingOn.get(shuttingDown)
  if (waiting === undefined) {
    const all = new Set<() => void>()
    waitingOn.set(shuttingDown, all)
    shuttingDown.addEventListener('abort', () => {
      for (const abort of [...all]) abort()
      all.clear()
    }, { once: true })
    waiting = all
  }
  return waiting
}

/**
 * Aborts when the client goes away, so a long-poll stops waiting for no one, or when the node
 * shuts down. It watches the response: a request's own 'close' fires as soon as its body has been
 * read. When the response closes the long-poll leaves the shutdown's list: every answered
 * long-poll used to leave a listener on the node's shutdown signal for good (a leak that also made
 * each new long-poll's `addEventListener` walk all of them).
 */
export function abortOnClose(reply: FastifyReply, shuttingDown: AbortSignal): AbortSignal {
  const controller = new AbortController()
  // A node shutting down answers its long-polls at once (empty), so in-flight requests can finish.
  // A client already gone (its response closed before the wait began) is waited for by no one either.
  if (shuttingDown.aborted || reply.raw.destroyed) {
    controller.abort()
    return controller.signal
  }
  const waiting = waitersOf(shuttingDown)
  const abort = (): void => controller.abort()
  waiting.add(abort)
  reply.raw.on('close', () => {
    waiting.delete(abort)
    if (!reply.raw.writableFinished) controller.abort()
  })
  return controller.signal
}

/** What a list shows of a job: everything but the heavy parts (text, input, result, checkpoint). */
export function summarize(job: ListedJob): JobSummary {
  const { result: _result, checkpoint: _checkpoint, ...rest } = job
  return { ...rest, finished: isTerminal(job.status) }
}
