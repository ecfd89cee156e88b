import type { FastifyReply, FastifyRequest } from 'fastify'
import { isTerminal, JobwireError, type JobState, type JobSummary } from '@jobwire/protocol'
import type { Dispatcher } from '../core/dispatch.js'
import type { JobService } from '../core/jobs.js'
import type { Principal } from '../core/scopes.js'
import type { Authenticator } from '../auth/authenticator.js'
import type { SseTransport } from '../transports/sse.js'
import type { RouteSettings } from '../options.js'
import type { Limits } from './limits.js'
import type { StreamContext } from './stream-route.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the /v1 auth hook. */
    principal: Principal | null
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

/**
 * Aborts when the client goes away, so a long-poll stops waiting for no one. It watches the
 * response: a request's own 'close' fires as soon as its body has been read.
 */
export function abortOnClose(reply: FastifyReply, shuttingDown: AbortSignal): AbortSignal {
  const controller = new AbortController()
  // A node shutting down answers its long-polls at once (empty), so in-flight requests can finish.
  if (shuttingDown.aborted) controller.abort()
  else shuttingDown.addEventListener('abort', () => controller.abort(), { once: true, signal: controller.signal })
  reply.raw.on('close', () => {
    if (!reply.raw.writableFinished) controller.abort()
  })
  return controller.signal
}

/** What a list shows of a job: everything but the heavy parts (text, input, result, checkpoint). */
export function summarize(job: JobState): JobSummary {
  const { text, input: _input, result: _result, checkpoint: _checkpoint, ...rest } = job
  return { ...rest, textLength: text.length, finished: isTerminal(job.status) }
}
