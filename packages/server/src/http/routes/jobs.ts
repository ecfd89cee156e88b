import type { FastifyInstance } from 'fastify'
import { JobwireError, type JobState } from '@jobwire/protocol'
import { canCancel, canManage, canRead, personalOwner, requireKeyRole, tenantOf, type Principal } from '../../core/scopes.js'
import { abortOnClose, principalOf, summarize, visibleJob, type RouteContext } from '../context.js'
import { serveJobStream } from '../stream-route.js'
import { deadlineSettings } from '../../config.js'
import { cancelBody, createJobBody, listQuery, parseOwnerFilter, parsePosition, parseWith } from '../schemas.js'

/** Jobs: create, read, list, append events, cancel, resume, stream, long-poll. */
export function registerJobRoutes(v1: FastifyInstance, context: RouteContext): void {
  const { service, limits, settings } = context

  v1.post('/jobs', async (request, reply) => {
    const principal = principalOf(request)
    if (principal.kind !== 'key') {
      const { job, created } = await createOwnJob(principal, request.body)
      void reply.code(created ? 201 : 200).header('location', `/v1/jobs/${job.id}`)
      return service.withQueuePosition(job)
    }
    requireKeyRole(principal, ['admin', 'backend'], 'create jobs')
    const body = parseWith(createJobBody, request.body ?? {})
    const tenant = tenantOf(principal)
    if (tenant !== null && body.owner?.tenant !== tenant) {
      throw body.owner === undefined
        ? new JobwireError('invalid_request', { field: 'owner', reason: `owner: required for a key bound to tenant "${tenant}"` })
        : new JobwireError('forbidden', { action: `create jobs for tenant "${body.owner.tenant}"` })
    }
    await limits.countCreation(body.owner ?? null, body.type)
    const { job, created } = await service.createJob({ ...body, deadlines: deadlineSettings(body) })
    void reply.code(created ? 201 : 200).header('location', `/v1/jobs/${job.id}`)
    return service.withQueuePosition(job)
  })

  v1.get('/jobs', async (request) => {
    const principal = principalOf(request)
    if (principal.kind === 'key' && principal.role === 'worker') throw new JobwireError('forbidden', { action: 'list jobs' })
    const query = parseWith(listQuery, request.query)
    if (principal.kind === 'token' && principal.jobIds !== null) {
      // A token for listed jobs lists just those (newest first), without touching anyone else's.
      const found = await Promise.all(principal.jobIds.map((id) => service.store.getJob(id)))
      const jobs = found
        .filter((job): job is JobState => job !== null && canRead(principal, job))
        .filter((job) => (query.status === undefined || job.status === query.status) && (query.type === undefined || job.type === query.type))
        .sort((a, b) => b.createdAt.localeCompare(a.createdAt))
        .slice(0, query.limit)
      return { jobs: (await Promise.all(jobs.map((job) => service.withQueuePosition(job)))).map(summarize), nextCursor: null }
    }
    const owner = parseOwnerFilter(query.owner)
    // People and bound keys see their own corner; the filters narrow it further, never widen it.
    const forced =
      principal.kind === 'key'
        ? { tenant: tenantOf(principal) ?? undefined, user: undefined }
        : { tenant: principal.tenant ?? undefined, user: principal.kind === 'user' && principal.tenantWide === true ? undefined : (principal.user ?? undefined) }
    const tenant = query.tenant ?? owner.tenant
    const user = query.user ?? owner.user
    if ((forced.tenant !== undefined && tenant !== undefined && tenant !== forced.tenant) || (forced.user !== undefined && user !== undefined && user !== forced.user)) {
      return { jobs: [], nextCursor: null }
    }
    const page = await service.listJobs({
      status: query.status,
      type: query.type,
      tenant: forced.tenant ?? tenant,
      user: forced.user ?? user,
      cursor: query.cursor,
      limit: query.limit,
    })
    const visible = page.jobs.filter((job) => canRead(principal, job))
    const jobs = await Promise.all(visible.map((job) => service.withQueuePosition(job)))
    return { jobs: jobs.map(summarize), nextCursor: page.nextCursor }
  })

  v1.get<{ Params: { id: string } }>('/jobs/:id', async (request) => {
    const job = await visibleJob(service, principalOf(request), request.params.id)
    return service.withQueuePosition(job)
  })

  // A job's result and checkpoint in full, wherever they are kept: snapshots and live events carry
  // only a ref ({ref, size}) for one too large for an event. The stored JSON is sent as it is.
  for (const which of ['result', 'checkpoint'] as const) {
    v1.get<{ Params: { id: string } }>(`/jobs/:id/${which}`, async (request, reply) => {
      const job = await visibleJob(service, principalOf(request), request.params.id)
      const json = await service.valueJson(job.id, which, job)
      return reply.type('application/json; charset=utf-8').send(`{"${which}":${json}}`)
    })
  }

  v1.post<{ Params: { id: string } }>('/jobs/:id/cancel', async (request) => {
    const principal = principalOf(request)
    const job = await visibleJob(service, principal, request.params.id)
    if (!canCancel(principal, job)) throw new JobwireError('forbidden', { action: 'cancel this job' })
    const body = parseWith(cancelBody, request.body ?? {})
    return (await service.cancelJob(job.id, body.reason ?? null)).job
  })

  v1.post<{ Params: { id: string } }>('/jobs/:id/resume', async (request) => {
    const principal = principalOf(request)
    const job = await visibleJob(service, principal, request.params.id)
    const own = personalOwner(principal, job.type)
    if (own !== null && job.owner?.tenant === own.tenant && job.owner.user === own.user) {
      // A person resuming their own job: a new run, counted like a creation.
      await limits.countCreation(own, job.type)
    } else if (!canManage(principal, job)) throw new JobwireError('forbidden', { action: 'resume jobs' })
    return service.withQueuePosition((await service.resumeJob(job.id)).job)
  })

  /**
   * A person starting their own job: allowed for the types their credential's `create` right
   * lists; the owner is always the credential's tenant and user, the job is always dispatched to
   * workers, and it counts against their create limit. Their idempotency keys live apart from
   * everyone else's, so a key cannot reveal another person's job.
   */
  async function createOwnJob(principal: Exclude<Principal, { kind: 'key' }>, raw: unknown) {
    const body = parseWith(createJobBody, raw ?? {})
    const owner = personalOwner(principal, body.type)
    if (owner === null) throw new JobwireError('forbidden', { action: `create jobs of type "${body.type}"` })
    if (body.owner !== undefined && (body.owner.tenant !== owner.tenant || body.owner.user !== owner.user)) {
      throw new JobwireError('forbidden', { action: 'create jobs for someone else' })
    }
    if (body.dispatch === false) throw new JobwireError('forbidden', { action: 'create jobs that no worker runs (dispatch: false)' })
    if (body.maxAttempts !== undefined) throw new JobwireError('forbidden', { action: 'set maxAttempts' })
    await limits.countCreation(owner, body.type)
    const idempotencyKey = body.idempotencyKey === undefined ? undefined : `person:${owner.tenant}:${owner.user}:${body.idempotencyKey}`
    return service.createJob({ ...body, owner, dispatch: true, deadlines: deadlineSettings(body), ...(idempotencyKey === undefined ? {} : { idempotencyKey }) })
  }

  v1.get<{ Params: { id: string }; Querystring: { after?: string } }>('/jobs/:id/stream', (request, reply) =>
    serveJobStream(request, reply, principalOf(request), context),
  )

  v1.get<{ Params: { id: string }; Querystring: { after?: string; wait?: string } }>('/jobs/:id/events', async (request, reply) => {
    const principal = principalOf(request)
    await visibleJob(service, principal, request.params.id)
    const after = parsePosition(request.query.after)
    const waitSeconds = request.query.wait === undefined ? 0 : Number(request.query.wait)
    if (!Number.isFinite(waitSeconds) || waitSeconds < 0) {
      throw new JobwireError('invalid_request', { field: 'wait', reason: 'wait: expected seconds >= 0' })
    }
    const waitMs = Math.min(waitSeconds * 1000, settings.pollMaxWaitMs)
    // A long-poll holds a connection like a stream does, and counts as one while it waits.
    const slot = waitMs > 0 && after !== undefined ? await limits.openStream(principal, request.ip) : null
    try {
      return await service.poll(request.params.id, after, waitMs, abortOnClose(reply, context.shuttingDown), (publishedAt) =>
        reply.raw.once('finish', () => context.pollDelivered((performance.now() - publishedAt) / 1000)),
      )
    } finally {
      slot?.release()
    }
  })
}
