import type { FastifyInstance } from 'fastify'
import { JobwireError } from '@jobwire/protocol'
import { z } from 'zod'
import { authorizedJob, notFound, requireKeyRole, tenantOf } from '../../core/access.js'
import { roles, type Role } from '../../core/scopes.js'
import { signSubscriptionToken } from '../../auth/tokens.js'
import { isWellFormed, notWellFormed } from '../../core/well-formed.js'
import { principalOf, type RouteContext } from '../context.js'
import { parseWith, tenantName, userName } from '../schemas.js'

export const tokenBody = z
  .object({
    jobIds: z.array(z.string().min(1).max(100)).min(1).max(1000).optional(),
    tenant: tenantName.optional(),
    /** With `jobIds`: the person the token is for, so that their streams are counted together. */
    user: userName.optional(),
    /** Every job of `tenant`, of any user (a team's page). */
    tenantWide: z.literal(true).optional(),
    rights: z.array(z.enum(['read', 'cancel'])).min(1).max(2).optional(),
    /** Job types the holder may start and resume as `user`. */
    create: z.array(z.string().min(1).max(100)).min(1).max(50).optional(),
    /** Seconds. */
    ttl: z.number().int().min(10).optional(),
  })
  .strict()

export const keyBody = z
  .object({
    name: z.string().min(1).max(100).refine(isWellFormed, notWellFormed),
    role: z.enum(roles as [Role, ...Role[]]),
    tenant: tenantName.optional(),
    types: z.array(z.string().min(1).max(100).refine(isWellFormed, notWellFormed)).min(1).max(50).optional(),
  })
  .strict()

/** Subscription tokens (backends mint them for their users) and API keys (admins manage them). */
export function registerAccessRoutes(v1: FastifyInstance, context: RouteContext): void {
  const { service, auth, settings } = context

  v1.post('/tokens', async (request) => {
    const principal = principalOf(request)
    requireKeyRole(principal, ['admin', 'backend'], 'mint tokens')
    const body = parseWith(tokenBody, request.body ?? {})
    if (body.tenantWide === true && (body.jobIds !== undefined || body.user !== undefined)) {
      throw new JobwireError('invalid_request', { field: 'tenantWide', reason: 'tenantWide: a tenant-wide token names no jobIds and no user' })
    }
    if (body.jobIds === undefined && body.user === undefined && body.tenantWide !== true) {
      throw new JobwireError('invalid_request', { field: 'jobIds', reason: 'jobIds, user or tenantWide: a token needs one of them' })
    }
    const bound = tenantOf(principal)
    if (bound !== null && body.tenant !== undefined && body.tenant !== bound) {
      throw new JobwireError('forbidden', { action: `mint tokens for tenant "${body.tenant}"` })
    }
    const tenant = body.tenant ?? bound ?? undefined
    if ((body.user !== undefined || body.tenantWide === true) && tenant === undefined) {
      throw new JobwireError('invalid_request', { field: 'tenant', reason: `tenant: required with ${body.user !== undefined ? 'user' : 'tenantWide'}` })
    }
    if (body.create !== undefined && body.user === undefined) {
      throw new JobwireError('invalid_request', { field: 'create', reason: 'create: needs the user who will own the jobs' })
    }
    // The ownership check lives here, not in every app: a backend mints only for jobs it may manage.
    // The jobs are read all at once (one after another, 1,000 of them were 1,000 Redis round
    // trips); a refusal names the first job in the list that is refused, as it always has.
    const checked = await Promise.allSettled(
      (body.jobIds ?? []).map(async (jobId) => {
        const job = await authorizedJob(service.store, principal, 'mint-token', jobId)
        if (tenant !== undefined && job.owner?.tenant !== tenant) throw notFound(jobId)
      }),
    )
    const refused = checked.find((outcome) => outcome.status === 'rejected')
    if (refused !== undefined) throw refused.reason
    const ttl = Math.min(body.ttl ?? settings.tokenTtlSeconds, settings.maxTokenTtlSeconds)
    return signSubscriptionToken(auth.tokenSecret, { jobIds: body.jobIds, tenant, user: body.user, rights: body.rights ?? ['read'], create: body.create }, ttl)
  })

  v1.post('/keys', async (request, reply) => {
    requireKeyRole(principalOf(request), ['admin'], 'manage API keys')
    const body = parseWith(keyBody, request.body ?? {})
    if (body.types !== undefined && body.role !== 'worker') {
      throw new JobwireError('invalid_request', { field: 'types', reason: 'types: only for worker keys' })
    }
    const { key, record } = await auth.createKey(body)
    return reply.code(201).send({ ...record, key })
  })

  v1.get('/keys', async (request) => {
    requireKeyRole(principalOf(request), ['admin'], 'manage API keys')
    return { keys: await auth.listKeys() }
  })

  v1.delete<{ Params: { id: string } }>('/keys/:id', async (request) => {
    requireKeyRole(principalOf(request), ['admin'], 'manage API keys')
    await auth.revokeKey(request.params.id)
    return { id: request.params.id, revoked: true }
  })
}
