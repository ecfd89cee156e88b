import { randomUUID } from 'node:crypto'
import { setMaxListeners } from 'node:events'
import type { IncomingHttpHeaders } from 'node:http'
import type { Duplex } from 'node:stream'
import fastifyCors, { type FastifyCorsOptions } from '@fastify/cors'
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify'
import { JobwireError } from '@jobwire/protocol'
import type { Logger } from 'pino'
import type { Authenticator } from '../auth/authenticator.js'
import { credentialOf } from '../auth/secrets.js'
import type { Dispatcher } from '../core/dispatch.js'
import { checkJsonShape } from '../core/json-shape.js'
import type { JobService } from '../core/jobs.js'
import { requireKeyRole } from '../core/access.js'
import type { Principal } from '../core/scopes.js'
import type { Metrics } from '../metrics.js'
import { SseTransport } from '../transports/sse.js'
import { WsEndpoint } from '../transports/ws.js'
import type { HttpSettings, SseSettings, WsSettings } from '../options.js'
import { principalOf, type RouteContext } from './context.js'
import { LazyLogger } from './lazy-logger.js'
import type { Limits } from './limits.js'
import { registerDashboard } from './dashboard.js'
import { openApiDocument } from './openapi.js'
import { registerAccessRoutes } from './routes/access.js'
import { registerJobRoutes } from './routes/jobs.js'
import { registerEventRoutes } from './routes/events.js'
import { registerWorkerRoutes } from './routes/workers.js'

export interface AppOptions {
  service: JobService
  dispatcher: Dispatcher
  auth: Authenticator
  limits: Limits
  metrics: Metrics
  logger: Logger | false
  /** Sizes, waits, leases, token lifetimes, CORS and cookie (options.ts maps them from the config). */
  http: HttpSettings
  sse: SseSettings
  /** The WebSocket transport at `/v1/ws`; null or absent: not served. */
  websocket?: WsSettings | null
  /** Why the node's background sweeps are not keeping up (null when they are): /readyz is red while they are not. */
  sweepProblem?: () => string | null
  /** Extra routes mounted before start (the demo). */
  plugins?: ((app: FastifyInstance, context: RouteContext) => void | Promise<void>)[]
}

/** Longest path parameter (a job or key id) the router accepts; longer ones are refused with `invalid_request`. */
const maxParamLength = 100

/** Fastify's own error codes that mean "the client sent something wrong". */
const clientErrors: Record<string, JobwireError['code']> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'payload_too_large',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported_media_type',
  FST_ERR_CTP_INVALID_JSON_BODY: 'malformed_json',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'malformed_json',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'invalid_request',
}

/** What a Fastify error about the request says, in a client's words (the rest say what Fastify says). */
const clientReasons: Record<string, string> = {
  FST_ERR_BAD_URL: 'the URL holds a malformed percent-escape',
  FST_ERR_MAX_PARAM_LENGTH: `a path parameter is longer than ${maxParamLength} characters`,
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'the body does not match its Content-Length',
  FST_ERR_ASYNC_CONSTRAINT: 'the request matches no route constraint',
}

/** The HTTP API: the auth hook, CORS, the error boundary, and the route modules. Rules live in core. */
export async function buildApp(options: AppOptions): Promise<{ app: FastifyInstance; sse: SseTransport; endLongPolls: () => void }> {
  const settings = options.http
  const common = {
    bodyLimit: settings.maxBodyBytes,
    genReqId: () => randomUUID(),
    requestIdHeader: false as const,
    // Per-request lines would log every event a producer posts; errors are logged where they happen.
    logController: new LogController({ disableRequestLogging: true }),
    // close() destroys what is left open; server.ts first ends long-polls and lets in-flight writes finish.
    forceCloseConnections: true,
    requestTimeout: settings.requestTimeoutMs,
    trustProxy: false,
    routerOptions: { maxParamLength },
    http: {
      // Node answers an HTTP/1.1 request without Host itself, in no documented body: the hook below does instead.
      requireHostHeader: false,
      // Node looks for requests past their timeout every 30 s by default, so a slow or truncated
      // request was answered up to 30 s after --request-timeout (46–50 s for the default 30 s).
      connectionsCheckingInterval: 1_000,
    },
    // Errors Fastify meets before routing (a bad percent-escape, an over-long id) get Jobwire's body too.
    frameworkErrors: (error: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
      const known = toJobwireError(error, request.id, settings.maxBodyBytes)
      void reply.code(known.status).header('x-request-id', request.id).send({ error: known.toBody() })
    },
    // …and so do requests Node's HTTP parser refuses before Fastify sees them (bad headers, unknown methods).
    clientErrorHandler: (error: NodeJS.ErrnoException, socket: Duplex) => answerClientError(error, socket),
  }
  const app: FastifyInstance =
    options.logger === false
      ? Fastify({ ...common, logger: false })
      : Fastify({
          ...common,
          loggerInstance: options.logger as FastifyBaseLogger,
          // A request's child logger is made only when something logs through it (lazy-logger.ts).
          childLoggerFactory: (logger, bindings, childOptions) => new LazyLogger(logger, bindings, childOptions),
        })
  // Headers must arrive within the request timeout too (slowloris sends them one byte at a time).
  app.server.headersTimeout = Math.min(settings.requestTimeoutMs, 60_000)
  const sse = new SseTransport({
    ...options.sse,
    onSlowConsumer: () => options.metrics.slowConsumerCloses.inc({ transport: 'sse' }),
    onDelivered: options.metrics.deliveryObserver('sse'),
  })
  // An SSE connection carries one job's stream.
  options.metrics.trackTransport('sse', { connections: () => sse.connections, subscriptions: () => sse.connections })
  options.metrics.trackTransport('poll', { subscriptions: () => options.service.openPolls })
  options.metrics.trackBodies(() => options.limits.bodyBytesInFlight)
  app.addHook('onClose', async () => sse.close())
  // Fastify parses text/plain by default; the API takes JSON only, so it gets unsupported_media_type.
  app.removeContentTypeParser('text/plain')
  // JSON bodies are checked for depth and width before they are parsed: nothing nested past the
  // limit reaches a recursive walk (validation, encoding, a store), so it answers 400, not 500.
  const parseJson = app.getDefaultJsonParser('error', 'error')
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8')
    try {
      checkJsonShape(text, settings.jsonShape)
    } catch (error) {
      done(error as Error, undefined)
      return
    }
    parseJson(request, text, (error, value) => {
      // Read and parsed: what many bodies at once cost is behind it (the answer's own work is not counted).
      request.releaseBody?.()
      done(error === null ? null : (refusedKeys(text) ?? error), value)
    })
  })
  app.decorateRequest('principal', null)
  app.decorateRequest('releaseBody', null)

  // Open streams by API key, so that revoking a key closes them at once.
  const streamsByKey = new Map<string, Set<(error: JobwireError) => void>>()
  options.auth.onRevoke((keyId) => {
    for (const fail of streamsByKey.get(keyId) ?? []) fail(new JobwireError('unauthorized'))
  })
  const trackKey = (principal: Principal, fail: (error: JobwireError) => void): (() => void) => {
    if (principal.kind !== 'key') return () => {}
    let set = streamsByKey.get(principal.keyId)
    if (set === undefined) streamsByKey.set(principal.keyId, (set = new Set()))
    set.add(fail)
    // A revocation between authentication and this registration found nothing to close: check once more.
    void options.auth.stillValid(principal).then(
      (valid) => {
        if (!valid) fail(new JobwireError('unauthorized'))
      },
      () => {},
    )
    return () => {
      set.delete(fail)
      if (set.size === 0) streamsByKey.delete(principal.keyId)
    }
  }

  const shutdown = new AbortController()
  // Every long-poll (claims, signals, event polls) listens for the shutdown: thousands at once is normal.
  setMaxListeners(0, shutdown.signal)
  const context: RouteContext = {
    shuttingDown: shutdown.signal,
    service: options.service,
    dispatcher: options.dispatcher,
    auth: options.auth,
    limits: options.limits,
    sse,
    trackKey,
    pollDelivered: options.metrics.deliveryObserver('poll'),
    settings,
  }

  app.setErrorHandler((error: FastifyError | JobwireError, request, reply) => {
    const known = toJobwireError(error, request.id, request.routeOptions.bodyLimit ?? settings.maxBodyBytes)
    // A client that went away mid-body is its own business: nobody reads the answer, and anyone could fill the error log.
    if (isAbort(error, request)) {
      request.log.debug({ reqId: request.id, url: request.url.split('?')[0] }, 'request aborted by the client')
      void reply.code(400).send({ error: new JobwireError('invalid_request', { reason: 'the request was aborted' }).toBody() })
      return
    }
    if (known.code === 'internal') request.log.error({ err: error, reqId: request.id, url: request.url.split('?')[0] }, 'unhandled error')
    const retryAfter = known.details?.retryAfter
    if (typeof retryAfter === 'number') void reply.header('retry-after', String(retryAfter))
    else if (known.status === 503) void reply.header('retry-after', '1')
    void reply.code(known.status).send({ error: known.toBody() })
  })
  app.setNotFoundHandler((request, reply) => {
    const error = new JobwireError('route_not_found', { method: request.method, url: request.url.split('?')[0] })
    void reply.code(404).send({ error: error.toBody() })
  })

  /**
   * Counts an authenticated request's body against `--max-body-bytes-in-flight` from before it is
   * read until it is parsed (or the answer is sent, or the client goes): its `Content-Length`, or
   * its route's limit when it comes chunked. One declared larger than the route takes is left to
   * Fastify's 413. Answers the refusal, if any.
   */
  const admitBody = (request: FastifyRequest, reply: FastifyReply): JobwireError | undefined => {
    const length = request.headers['content-length']
    const limit = request.routeOptions.bodyLimit ?? settings.maxBodyBytes
    const bytes = length !== undefined ? Number(length) : request.headers['transfer-encoding'] !== undefined ? limit : 0
    if (!(bytes > 0) || bytes > limit) return undefined
    try {
      const release = options.limits.admitBody(bytes)
      request.releaseBody = release
      reply.raw.once('close', release)
      return undefined
    } catch (error) {
      return error as JobwireError
    }
  }
  const cors = corsPolicy(settings.corsOrigins)
  /** The /v1 credential check, shared by HTTP requests and WebSocket upgrades. */
  const authenticateRequest = (headers: IncomingHttpHeaders, accessToken: string | undefined): Principal | Promise<Principal> => {
    const found = credentialOf(headers, accessToken, settings.cookieName)
    if (found === null) throw new JobwireError('unauthorized')
    // A cookie rides along with any request the browser makes: only trusted origins may use it.
    if (found.source === 'cookie') {
      const origin = headers.origin
      if (origin !== undefined && cors(origin)?.credentials !== true && origin !== `http://${headers.host}` && origin !== `https://${headers.host}`) {
        throw new JobwireError('forbidden', { action: `use a cookie from origin ${origin}` })
      }
    }
    return options.auth.authenticateNow(found.credential)
  }
  // The hooks every request runs are callback-style and synchronous where they can be: an async
  // hook costs a promise and a microtask hop per request, on the path every producer's event takes.
  app.addHook('onRequest', (request, _reply, done) => {
    if (request.raw.httpVersion === '1.1' && request.headers.host === undefined) {
      done(new JobwireError('invalid_request', { field: 'host', reason: 'an HTTP/1.1 request needs a Host header' }))
      return
    }
    // `?after=1&after=2` parses to an array: refused here, so no route sees anything but strings.
    const query = request.query as Record<string, unknown>
    for (const name in query) {
      if (Array.isArray(query[name])) {
        done(repeatedParameter(name))
        return
      }
    }
    done()
  })
  // CORS by @fastify/cors, per request from the same allow-list; its preflight answer comes before
  // /v1 authentication. With no allow-list (the default) no origin is allowed and nothing varies by
  // Origin, so the plugin is not registered at all: a preflight is route_not_found either way.
  if (settings.corsOrigins.length > 0) {
    await app.register(fastifyCors, {
      delegator: (request, callback) => callback(null, corsOptions(request.headers.origin === undefined ? null : cors(request.headers.origin))),
    })
  }
  app.addHook('onSend', (request, reply, payload, done) => {
    void reply.header('x-request-id', request.id)
    // Authenticated answers are personal: no cache may keep them.
    if (request.principal !== null && reply.getHeader('cache-control') === undefined) void reply.header('cache-control', 'no-store')
    done(null, payload)
  })

  // At debug, one line per answered request: the path only, since a query string may carry a token.
  if (options.logger !== false && options.logger.isLevelEnabled('debug')) {
    app.addHook('onResponse', async (request, reply) => {
      request.log.debug({ method: request.method, path: request.url.split('?')[0], status: reply.statusCode, ms: Math.round(reply.elapsedTime) }, 'answered')
    })
  }

  await registerDashboard(app)
  app.get('/healthz', async () => ({ ok: true }))
  // Public like the health checks: the API's shape is no secret, and tools fetch it without a key.
  app.get('/v1/openapi.json', async () => openApiDocument())
  app.get('/readyz', async (_request, reply) => {
    const store = options.service.store.kind
    if (shutdown.signal.aborted) return reply.code(503).send({ ok: false, store, reason: 'shutting down' })
    try {
      await options.service.store.ping()
    } catch (error) {
      return reply.code(503).send({ ok: false, store, reason: (error as Error).message })
    }
    const sweeps = options.sweepProblem?.() ?? null
    if (sweeps !== null) return reply.code(503).send({ ok: false, store, reason: sweeps })
    return { ok: true, store }
  })

  await app.register(
    async (v1) => {
      v1.addHook('onRequest', (request, reply, done) => {
        // Refused requests too: their lines still say which job was asked for.
        const answer = (error?: unknown): void => {
          if (options.logger !== false) bindJobLog(request, reply)
          done(error as Error | undefined)
        }
        let found: Principal | Promise<Principal>
        try {
          found = authenticateRequest(request.headers, (request.query as { access_token?: string }).access_token)
        } catch (error) {
          answer(error)
          return
        }
        // The admin key is checked without a promise; API keys and tokens may need the store or a verify.
        if (found instanceof Promise) {
          found.then(
            (principal) => {
              request.principal = principal
              answer(admitBody(request, reply))
            },
            answer,
          )
          return
        }
        request.principal = found
        answer(admitBody(request, reply))
      })
      registerJobRoutes(v1, context)
      registerEventRoutes(v1, context)
      registerWorkerRoutes(v1, context)
      registerAccessRoutes(v1, context)
    },
    { prefix: '/v1' },
  )

  app.get('/metrics', async (request, reply) => {
    // Header or cookie (never the query string), with the same cookie Origin check as /v1.
    request.principal = await authenticateRequest(request.headers, undefined)
    requireKeyRole(principalOf(request), ['admin'], 'read metrics')
    return reply.type(options.metrics.registry.contentType).send(await options.metrics.registry.metrics())
  })

  if (options.websocket != null) {
    const ws = new WsEndpoint(app.server, {
      ...options.websocket,
      onSlowConsumer: () => options.metrics.slowConsumerCloses.inc({ transport: 'ws' }),
      onDelivered: options.metrics.deliveryObserver('ws'),
    }, {
      service: options.service,
      authenticateUpgrade: async (request) => {
        const tokens = new URL(request.url ?? '/', 'http://localhost').searchParams.getAll('access_token')
        if (tokens.length > 1) throw repeatedParameter('access_token')
        // A socket may open without a credential: then each subscription brings its own (per-job tokens).
        if (credentialOf(request.headers, tokens[0], settings.cookieName) === null) return null
        return authenticateRequest(request.headers, tokens[0])
      },
      authenticate: (credential) => options.auth.authenticate(credential),
      openStream: (principal, ip) => options.limits.openStream(principal, ip),
      takePerson: (principal) => options.limits.takePersonSlot(principal),
      trackKey,
      logInternal: (error, where) => {
        const id = randomUUID()
        app.log.error({ err: error, reqId: id, where }, 'unhandled error')
        return id
      },
    })
    options.metrics.trackTransport('ws', { connections: () => ws.connections, subscriptions: () => ws.subscriptions, coalesced: () => ws.coalesced })
    // A node shutting down tells its sockets to go elsewhere together with its other streams.
    shutdown.signal.addEventListener('abort', () => ws.close(), { once: true })
    app.addHook('preClose', async () => ws.close())
  }

  for (const plugin of options.plugins ?? []) await plugin(app, context)
  return { app, sse, endLongPolls: () => shutdown.abort() }
}

/**
 * Lines logged while serving a request name the job (from the route) and the tenant (from the
 * credential) where known, beside Fastify's request id. Never the credential or the query string.
 */
function bindJobLog(request: FastifyRequest, reply: FastifyReply): void {
  const jobId = (request.params as { id?: unknown } | undefined)?.id
  const tenant = request.principal?.tenant ?? null
  if (typeof jobId !== 'string' && tenant === null) return
  const bindings: { jobId?: string; tenant?: string } = {}
  if (typeof jobId === 'string') bindings.jobId = jobId
  if (tenant !== null) bindings.tenant = tenant
  // Into the request's logger before it is made, if it is not yet (nothing logged so far).
  if (request.log instanceof LazyLogger && request.log.bind(bindings)) return
  request.log = request.log.child(bindings)
  reply.log = request.log
}

/**
 * What @fastify/cors does for a request's Origin: nothing for no Origin or one not allowed (its
 * preflight falls through to route_not_found); else allow that origin (or `*`, without credentials).
 * Any OPTIONS from an allowed origin is answered 204, as a preflight (not only those naming a method).
 */
function corsOptions(allowed: { origin: string; credentials: boolean } | null): FastifyCorsOptions {
  if (allowed === null) return { origin: false }
  return {
    origin: allowed.origin,
    credentials: allowed.credentials,
    methods: 'GET, POST, DELETE, OPTIONS',
    allowedHeaders: 'authorization, content-type, last-event-id',
    maxAge: 600,
    strictPreflight: false,
  }
}

/** The CORS allow-list: which origin to echo, and whether credentials may come along (never with `*`). */
function corsPolicy(origins: string[]): (origin: string) => { origin: string; credentials: boolean } | null {
  const exact = new Set(origins.filter((o) => o !== '*'))
  const any = origins.includes('*')
  return (origin) => {
    if (exact.has(origin)) return { origin, credentials: true }
    if (any) return { origin: '*', credentials: false }
    return null
  }
}

/** The boundary: whatever was thrown becomes a registry error; unknown ones become `internal`. */
function toJobwireError(error: unknown, requestId: string, bodyLimit?: number): JobwireError {
  if (error instanceof JobwireError) return error
  const fastifyError = error as Partial<FastifyError>
  const code = fastifyError.code === undefined ? undefined : clientErrors[fastifyError.code]
  const reason = fastifyError.code === undefined ? undefined : clientReasons[fastifyError.code]
  if (code === 'invalid_request' || (code === undefined && reason !== undefined)) return new JobwireError('invalid_request', { reason })
  if (code !== undefined) return new JobwireError(code, code === 'payload_too_large' ? { limit: bodyLimit } : undefined)
  if (fastifyError.statusCode === 400 && error instanceof SyntaxError) return new JobwireError('malformed_json')
  // Any other Fastify error about the request (a 4xx of its own) is the client's mistake, said in Jobwire's body.
  const status = fastifyError.statusCode
  if (typeof fastifyError.code === 'string' && fastifyError.code.startsWith('FST_') && typeof status === 'number' && status >= 400 && status < 500) {
    return new JobwireError('invalid_request', { reason: fastifyError.message ?? 'refused' })
  }
  return new JobwireError('internal', { requestId })
}

/**
 * Fastify's parser refuses a `__proto__` key, or a `constructor` key holding `prototype` (what
 * pollutes prototypes when merged), with the same error as broken JSON. A body that is JSON is
 * told why instead; the check runs only on that error path.
 */
function refusedKeys(text: string): JobwireError | null {
  try {
    JSON.parse(text)
  } catch {
    return null
  }
  return new JobwireError('invalid_request', { reason: 'a key named "__proto__", or "constructor" holding "prototype", is not accepted anywhere in a body' })
}

function repeatedParameter(name: string): JobwireError {
  const field = name.slice(0, 100)
  return new JobwireError('invalid_request', { field, reason: `${field}: given more than once` })
}

/** Whether the request failed because its client went away before sending all of it. */
function isAbort(error: unknown, request: FastifyRequest): boolean {
  const code = (error as { code?: unknown }).code
  return code === 'ECONNRESET' || code === 'ECONNABORTED' || (request.raw.destroyed && !request.raw.complete)
}

/**
 * Answers what Node's HTTP parser refused before any route saw it (a malformed request line or
 * header, headers past the size limit, a request that took too long) in Jobwire's body, then
 * closes. A reset connection gets nothing: there is no one to tell.
 */
function answerClientError(error: NodeJS.ErrnoException, socket: Duplex): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return
  const reason =
    error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? 'the request did not arrive within the request timeout'
      : error.code === 'HPE_HEADER_OVERFLOW'
        ? 'the request headers are too large'
        : 'the request is not valid HTTP/1.1'
  const body = JSON.stringify({ error: new JobwireError('invalid_request', { reason }).toBody() })
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 400 Bad Request\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    )
  }
  socket.destroy()
}

