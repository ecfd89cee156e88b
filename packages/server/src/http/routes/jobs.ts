import type { FastifyInstance } from 'fastify'
import type { z } from 'zod'
import { JobwireError, type JobState, type Owner } from '@jobwire/protocol'
import type { CreateJobInput } from '../../core/jobs.js'
import { authorizeCreate, authorizedJob, canRead, listScope, ownJob, requireKeyRole } from '../../core/access.js'
import { clientAddress } from '../../core/scopes.js'
import { abortOnClose, principalOf, summarize, type RouteContext } from '../context.js'
import { serveJobStream } from '../stream-route.js'
import { snapshotJson, stateJson } from '../../transports/state-json.js'
import { listedJob } from '../../core/store.js'
import { deadlineSettings } from '../../config.js'
import { cancelBody, createJobBody, listQuery, parseOwnerFilter, parsePosition, parseWith } from '../schemas.js'

type CreateJobBody = z.infer<typeof createJobBody>

/** Jobs: create, read, list, append events, cancel, resume, stream, long-poll. */
export function registerJobRoutes(v1: FastifyInstance, context: RouteContext): void {
  const { service, limits, settings } = context

  v1.post('/jobs', async (request, reply) => {
    const principal = principalOf(request)
    // A key's role is checked before its body is read: a worker key learns nothing from a bad one.
    if (principal.kind === 'key') requireKeyRole(principal, ['admin', 'backend'], 'create jobs')
    const body = parseWith(createJobBody, request.body ?? {})
    const grant = authorizeCreate(principal, body)
    const { job, created } = grant.as === 'person' ? await createOwnJob(grant.owner, body) : await createJob(body)
    void reply.code(created ? 201 : 200).header('location', `/v1/jobs/${job.id}`)
    return service.withQueuePosition(job)
  })

  /** A backend's job: for any owner of its tenant, dispatched or self-run, counted against its owner's create limit. */
  async function createJob(body: CreateJobBody) {
    await limits.countCreation(body.owner ?? null, body.type)
    return service.createJob(createInput(body, body.owner, body.dispatch, body.idempotencyKey))
  }

  /**
   * A person starting their own job (`authorizeCreate` allowed it): the owner is always the
   * credential's tenant and user, the job is always dispatched to workers, and it counts against
   * their create limit. Their idempotency keys live apart from everyone else's, so a key cannot
   * reveal another person's job.
   */
  async function createOwnJob(owner: Owner, body: CreateJobBody) {
    await limits.countCreation(owner, body.type)
    const idempotencyKey = body.idempotencyKey === undefined ? undefined : `person:${owner.tenant}:${owner.user}:${body.idempotencyKey}`
    return service.createJob(createInput(body, owner, true, idempotencyKey))
  }

  /**
   * What JobService creates from a request, field by field: a spread of the parsed body followed by
   * fields it lacks (`deadlines`) took V8's slow path, microseconds per create.
   */
  function createInput(body: CreateJobBody, owner: Owner | undefined, dispatch: boolean | undefined, idempotencyKey: string | undefined): CreateJobInput {
    return { type: body.type, input: body.input, owner, idempotencyKey, dispatch, maxAttempts: body.maxAttempts, deadlines: deadlineSettings(body), stages: body.stages }
  }

  v1.get('/jobs', async (request) => {
    const principal = principalOf(request)
    const scope = listScope(principal)
    const query = parseWith(listQuery, request.query)
    if ('jobIds' in scope) {
      // A token for listed jobs lists just those (newest first), without touching anyone else's.
      const found = await Promise.all(scope.jobIds.map((id) => service.store.getJob(id)))
      const jobs = found
        .filter((job): job is JobState => job !== null && canRead(principal, job))
        .filter((job) => (query.status === undefined || job.status === query.status) && (query.type === undefined || job.type === query.type))
        .sort((a, b) => b.createdAt.localeCompare(a.createdAt))
        .slice(0, query.limit)
      return { jobs: (await Promise.all(jobs.map((job) => service.withQueuePosition(listedJob(job))))).map(summarize), nextCursor: null }
    }
    const owner = parseOwnerFilter(query.owner)
    // People and bound keys see their own corner; the filters narrow it further, never widen it.
    const tenant = query.tenant ?? owner.tenant
    const user = query.user ?? owner.user
    if ((scope.tenant !== undefined && tenant !== undefined && tenant !== scope.tenant) || (scope.user !== undefined && user !== undefined && user !== scope.user)) {
      return { jobs: [], nextCursor: null }
    }
    const page = await service.listJobs({
      status: query.status,
      type: query.type,
      tenant: scope.tenant ?? tenant,
      user: scope.user ?? user,
      cursor: query.cursor,
      limit: query.limit,
    })
    const visible = page.jobs.filter((job) => canRead(principal, job))
    const jobs = await Promise.all(visible.map((job) => service.withQueuePosition(job)))
    return { jobs: jobs.map(summarize), nextCursor: page.nextCursor }
  })

  v1.get<{ Params: { id: string } }>('/jobs/:id', async (request, reply) => {
    const job = await authorizedJob(service.store, principalOf(request), 'read', request.params.id)
    // Encoded once per state (transports/state-json.ts): a job read often, or by many at once, is not re-encoded each time.
    return reply.type('application/json; charset=utf-8').send(stateJson(await service.withQueuePosition(job)))
  })

  // A job's result and checkpoint in full, wherever they are kept: snapshots and live events carry
  // only a ref ({ref, size}) for one too large for an event. The stored JSON is sent as it is.
  for (const which of ['result', 'checkpoint'] as const) {
    v1.get<{ Params: { id: string } }>(`/jobs/:id/${which}`, async (request, reply) => {
      const job = await authorizedJob(service.store, principalOf(request), 'read', request.params.id)
      const json = await service.valueJson(job.id, which, job)
      return reply.type('application/json; charset=utf-8').send(`{"${which}":${json}}`)
    })
  }

  v1.post<{ Params: { id: string } }>('/jobs/:id/cancel', async (request) => {
    const job = await authorizedJob(service.store, principalOf(request), 'cancel', request.params.id)
    const body = parseWith(cancelBody, request.body ?? {})
    return (await service.cancelJob(job.id, body.reason ?? null)).job
  })

  v1.post<{ Params: { id: string } }>('/jobs/:id/resume', async (request) => {
    const principal = principalOf(request)
    const job = await authorizedJob(service.store, principal, 'resume', request.params.id)
    // A person resuming their own job: a new run, counted like a creation.
    const own = ownJob(principal, job)
    if (own !== null) await limits.countCreation(own, job.type)
    return service.withQueuePosition((await service.resumeJob(job.id)).job)
  })

  v1.get<{ Params: { id: string }; Querystring: { after?: string } }>('/jobs/:id/stream', (request, reply) =>
    serveJobStream(request, reply, principalOf(request), context),
  )

  v1.get<{ Params: { id: string }; Querystring: { after?: string; wait?: string } }>('/jobs/:id/events', async (request, reply) => {
    const principal = principalOf(request)
    await authorizedJob(service.store, principal, 'read', request.params.id)
    const after = parsePosition(request.query.after)
    const waitSeconds = request.query.wait === undefined ? 0 : Number(request.query.wait)
    if (!Number.isFinite(waitSeconds) || waitSeconds < 0) {
      throw new JobwireError('invalid_request', { field: 'wait', reason: 'wait: expected seconds >= 0' })
    }
    // A long-poll holds a connection like a stream does, and counts as one while it waits; a client
    // already gone (it has no address any more) is answered at once, to no one, and not counted.
    const address = clientAddress(request.raw.socket)
    const waitMs = address === null ? 0 : Math.min(waitSeconds * 1000, settings.pollMaxWaitMs)
    const slot = waitMs > 0 && after !== undefined && address !== null ? await limits.openStream(principal, address) : null
    try {
      const answer = await service.poll(request.params.id, after, waitMs, abortOnClose(reply, context.shuttingDown), (publishedAt) =>
        reply.raw.once('finish', () => context.pollDelivered((performance.now() - publishedAt) / 1000)),
      )
      if (answer.snapshot === undefined) return answer
      // A snapshot's state is encoded once however many polls (and streams) start from it (transports/state-json.ts).
      const { snapshot, events, next, done, more } = answer
      const json = `{"snapshot":${snapshotJson(snapshot.job, snapshot.reset, snapshot.reason)},"events":${JSON.stringify(events)},"next":${next},"done":${done},"more":${more}}`
      return reply.type('application/json; charset=utf-8').send(json)
    } finally {
      slot?.release()
    }
  })
}
