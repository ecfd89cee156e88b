import { randomUUID } from 'node:crypto'
import Fastify, {
  LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import { isTerminal, JobwireError, type JobState } from '@jobwire/protocol'
import type { Logger } from 'pino'
import type { Dispatcher } from '../core/dispatch.js'
import type { JobService } from '../core/jobs.js'
import { SseTransport } from '../transports/sse.js'
import { credentialOf, keyMatches } from './auth.js'
import { serveJobStream } from './stream-route.js'
import {
  cancelBody,
  claimBody,
  heartbeatBody,
  releaseBody,
  signalsBody,
  createJobBody,
  listQuery,
  parseOwnerFilter,
  parsePosition,
  parseProducerEvents,
  parseWith,
} from './schemas.js'

export interface AppOptions {
  service: JobService
  adminKey: string
  logger: Logger | false
  heartbeatMs: number
  sseRetryMs: number
  sseMaxBufferBytes: number
  pollMaxWaitMs: number
  maxBodyBytes: number
  maxEventBytes: number
  maxBatchEvents: number
  /** Lease length when a worker does not ask for one. */
  defaultLeaseMs: number
  dispatcher: Dispatcher
  /** Extra routes mounted before start (the demo). */
  plugins?: ((app: FastifyInstance, context: { sse: SseTransport; service: JobService }) => void | Promise<void>)[]
}

/** Fastify's own error codes that mean "the client sent something wrong". */
const clientErrors: Record<string, JobwireError['code']> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'payload_too_large',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported_media_type',
  FST_ERR_CTP_INVALID_JSON_BODY: 'malformed_json',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'malformed_json',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'invalid_request',
}

/** The HTTP API. Routes validate and translate; the rules live in JobService. */
export async function buildApp(options: AppOptions): Promise<{ app: FastifyInstance; sse: SseTransport }> {
  const { service, dispatcher } = options
  const common = {
    bodyLimit: options.maxBodyBytes,
    genReqId: () => randomUUID(),
    requestIdHeader: false as const,
    // Per-request lines would log every event a producer posts; errors are logged where they happen.
    logController: new LogController({ disableRequestLogging: true }),
    forceCloseConnections: true,
  }
  const app: FastifyInstance =
    options.logger === false ? Fastify({ ...common, logger: false }) : Fastify({ ...common, loggerInstance: options.logger as FastifyBaseLogger })
  const sse = new SseTransport({
    heartbeatMs: options.heartbeatMs,
    retryMs: options.sseRetryMs,
    maxBufferBytes: options.sseMaxBufferBytes,
  })
  app.addHook('onClose', async () => sse.close())
  // Fastify parses text/plain by default; the API takes JSON only, so it gets unsupported_media_type.
  app.removeContentTypeParser('text/plain')

  app.setErrorHandler((error: FastifyError | JobwireError, request, reply) => {
    const known = toJobwireError(error, request.id, options.maxBodyBytes)
    if (known.code === 'internal') request.log.error({ err: error, reqId: request.id }, 'unhandled error')
    void reply.code(known.status).send({ error: known.toBody() })
  })
  app.setNotFoundHandler((request, reply) => {
    const error = new JobwireError('route_not_found', { method: request.method, url: request.url.split('?')[0] })
    void reply.code(404).send({ error: error.toBody() })
  })
  app.addHook('onSend', async (request, reply) => {
    void reply.header('x-request-id', request.id)
  })

  app.get('/healthz', async () => ({ ok: true }))
  app.get('/readyz', async (_request, reply) => {
    try {
      await service.store.ping()
      return { ok: true, store: service.store.kind }
    } catch (error) {
      return reply.code(503).send({ ok: false, store: service.store.kind, reason: (error as Error).message })
    }
  })

  await app.register(async (v1) => {
    v1.addHook('onRequest', async (request) => {
      const query = request.query as { access_token?: string }
      const credential = credentialOf(request.headers.authorization, query.access_token)
      if (credential === null || !keyMatches(credential, options.adminKey)) throw new JobwireError('unauthorized')
    })

    v1.post('/jobs', async (request, reply) => {
      const body = parseWith(createJobBody, request.body ?? {})
      const { job, created } = await service.createJob(body)
      void reply.code(created ? 201 : 200).header('location', `/v1/jobs/${job.id}`)
      return service.withQueuePosition(job)
    })

    v1.get('/jobs', async (request) => {
      const query = parseWith(listQuery, request.query)
      const owner = parseOwnerFilter(query.owner)
      const page = await service.listJobs({
        status: query.status,
        type: query.type,
        tenant: query.tenant ?? owner.tenant,
        user: query.user ?? owner.user,
        cursor: query.cursor,
        limit: query.limit,
      })
      const jobs = await Promise.all(page.jobs.map((job) => service.withQueuePosition(job)))
      return { jobs: jobs.map(summarize), nextCursor: page.nextCursor }
    })

    v1.get<{ Params: { id: string } }>('/jobs/:id', async (request) => service.getJob(request.params.id))

    v1.post<{ Params: { id: string } }>('/jobs/:id/events', async (request) => {
      const write = parseProducerEvents(request.body, options)
      const { job, events, duplicate } = await service.appendEvents(request.params.id, write.events, write)
      const answer = { events: events.map((e) => ({ seq: e.seq, type: e.type })), seq: job.seq, status: job.status }
      return duplicate ? { ...answer, duplicate: true } : answer
    })

    v1.post<{ Params: { id: string } }>('/jobs/:id/cancel', async (request) => {
      const body = parseWith(cancelBody, request.body ?? {})
      const { job } = await service.cancelJob(request.params.id, body.reason ?? null)
      return job
    })

    v1.post<{ Params: { id: string } }>('/jobs/:id/resume', async (request) => {
      const { job } = await service.resumeJob(request.params.id)
      return service.withQueuePosition(job)
    })

    v1.post('/workers/claim', async (request, reply) => {
      const body = parseWith(claimBody, request.body ?? {})
      const aborted = abortOnClose(reply)
      const claimed = await dispatcher.claim({
        types: body.types,
        worker: body.worker ?? 'worker',
        leaseMs: body.leaseMs ?? options.defaultLeaseMs,
        waitMs: Math.min((body.wait ?? 0) * 1000, options.pollMaxWaitMs),
        signal: aborted,
      })
      if (claimed === null) return reply.code(204).send()
      return claimed
    })

    v1.post<{ Params: { id: string } }>('/jobs/:id/heartbeat', async (request) => {
      const body = parseWith(heartbeatBody, request.body ?? {})
      return dispatcher.heartbeat(request.params.id, body.lease, body.leaseMs ?? options.defaultLeaseMs)
    })

    v1.post<{ Params: { id: string } }>('/jobs/:id/release', async (request) => {
      const body = parseWith(releaseBody, request.body ?? {})
      const { job } = await dispatcher.release(request.params.id, body.lease, body.reason ?? null)
      return service.withQueuePosition(job)
    })

    v1.post('/workers/signals', async (request, reply) => {
      const body = parseWith(signalsBody, request.body ?? {})
      const waitMs = Math.min((body.wait ?? 0) * 1000, options.pollMaxWaitMs)
      return { signals: await dispatcher.signals(body.jobs, waitMs, abortOnClose(reply)) }
    })

    v1.get<{ Params: { id: string }; Querystring: { after?: string } }>('/jobs/:id/stream', (request, reply) =>
      serveJobStream(request, reply, sse, service),
    )

    v1.get<{ Params: { id: string }; Querystring: { after?: string; wait?: string } }>(
      '/jobs/:id/events',
      async (request, reply) => {
        const after = parsePosition(request.query.after)
        const waitSeconds = request.query.wait === undefined ? 0 : Number(request.query.wait)
        if (!Number.isFinite(waitSeconds) || waitSeconds < 0) {
          throw new JobwireError('invalid_request', { field: 'wait', reason: 'wait: expected seconds >= 0' })
        }
        const waitMs = Math.min(waitSeconds * 1000, options.pollMaxWaitMs)
        return service.poll(request.params.id, after, waitMs, abortOnClose(reply))
      },
    )
  }, { prefix: '/v1' })

  for (const plugin of options.plugins ?? []) await plugin(app, { sse, service })
  return { app, sse }
}

/**
 * Aborts when the client goes away, so a long-poll stops waiting for no one. It watches the
 * response: a request's own 'close' fires as soon as its body has been read.
 */
function abortOnClose(reply: FastifyReply): AbortSignal {
  const controller = new AbortController()
  reply.raw.on('close', () => {
    if (!reply.raw.writableFinished) controller.abort()
  })
  return controller.signal
}

/** What a list shows of a job: everything but the heavy parts (text, input, result, checkpoint). */
export function summarize(job: JobState): Omit<JobState, 'text' | 'input' | 'result' | 'checkpoint'> & {
  textLength: number
  finished: boolean
} {
  const { text, input: _input, result: _result, checkpoint: _checkpoint, ...rest } = job
  return { ...rest, textLength: text.length, finished: isTerminal(job.status) }
}

/** The boundary: whatever was thrown becomes a registry error; unknown ones become `internal`. */
export function toJobwireError(error: unknown, requestId: string, bodyLimit?: number): JobwireError {
  if (error instanceof JobwireError) return error
  const fastifyError = error as Partial<FastifyError>
  const code = fastifyError.code === undefined ? undefined : clientErrors[fastifyError.code]
  if (code !== undefined) return new JobwireError(code, code === 'payload_too_large' ? { limit: bodyLimit } : undefined)
  if (fastifyError.statusCode === 400 && error instanceof SyntaxError) return new JobwireError('malformed_json')
  return new JobwireError('internal', { requestId })
}

export type { FastifyReply, FastifyRequest }
