import { JobwireError, type JobState, type Owner } from '@jobwire/protocol'
import type { Principal, Role } from './scopes.js'
import type { Store } from './store.js'

/**
 * Authorization, in one place: what a principal may do to a job, to the list of jobs and to a
 * person's feed, and how long its credential holds. HTTP routes, SSE, WebSocket and long-poll all
 * ask here, so a rule changes in one edit and holds on every path and every node. Every answer is
 * a pure function of the principal and the job; refusals are registry errors, and a job out of
 * reach is answered exactly like a missing one (`job_not_found`), so nobody learns which ids exist.
 */

/**
 * What can be done to one job:
 * - `read`: snapshot, result, stream, long-poll, subscribe;
 * - `cancel`; `resume` (a backend's, or a person's own job of a type they may create);
 * - `write`: append events without a lease (backends); `write-leased`: with one (its worker, or a backend);
 * - `heartbeat`: a self-run job's runner says it is alive;
 * - `mint-token`: name the job in a subscription token (backends that manage it).
 */
export type JobAction = 'read' | 'cancel' | 'resume' | 'write' | 'write-leased' | 'heartbeat' | 'mint-token'

/**
 * All that authorization reads of a job: its id, type and owner, fixed when it is created — so a
 * node may keep them (`JobService.facts`) and authorize a write without reading the job again.
 */
export type JobFacts = Pick<JobState, 'id' | 'type' | 'owner'>

/**
 * May `principal` (or any of several, e.g. a WebSocket stream's own credential and the socket's)
 * do `action` to the job with id `jobId` (`job`: null when it does not exist)? Null when allowed;
 * otherwise the error to answer.
 */
export function authorize(principal: Principal | readonly Principal[], action: JobAction, job: JobFacts | null, jobId: string): JobwireError | null {
  if (Array.isArray(principal)) {
    let refused: JobwireError | null = null
    for (const one of principal as readonly Principal[]) {
      const error = authorize(one, action, job, jobId)
      if (error === null) return null
      // The most telling refusal: "forbidden" from one that may see the job beats "not found".
      if (refused === null || (refused.code === 'job_not_found' && error.code !== 'job_not_found')) refused = error
    }
    return refused ?? notFound(jobId)
  }
  const one = principal as Principal
  if (job === null) return notFound(jobId)
  switch (action) {
    case 'read':
      return canRead(one, job) ? null : notFound(jobId)
    case 'cancel':
      if (!canRead(one, job)) return notFound(jobId)
      return canCancel(one, job) ? null : new JobwireError('forbidden', { action: 'cancel this job' })
    case 'resume':
      if (!canRead(one, job)) return notFound(jobId)
      return ownJob(one, job) !== null || canManage(one, job) ? null : new JobwireError('forbidden', { action: 'resume jobs' })
    case 'write':
    case 'write-leased': {
      // Workers write the jobs they hold (the lease itself is checked in the append); backends write the rest.
      const allowed = canManage(one, job) || (action === 'write-leased' && canWork(one, job.type) && canRead(one, job))
      if (allowed) return null
      return canRead(one, job) ? new JobwireError('forbidden', { action: 'write events to this job' }) : notFound(jobId)
    }
    case 'heartbeat':
      if (!canRead(one, job)) return notFound(jobId)
      return canManage(one, job) ? null : new JobwireError('forbidden', { action: 'heartbeat this job' })
    case 'mint-token':
      return canManage(one, job) ? null : notFound(jobId)
  }
}

/** The job, if it exists and `principal` may do `action` to it; otherwise the refusal, without the job. */
export async function jobFor(
  store: Pick<Store, 'getJob'>,
  principal: Principal | readonly Principal[],
  action: JobAction,
  jobId: string,
): Promise<{ job: JobState; error: null } | { job: null; error: JobwireError }> {
  const job = await store.getJob(jobId)
  const error = authorize(principal, action, job, jobId)
  return error === null && job !== null ? { job, error: null } : { job: null, error: error ?? notFound(jobId) }
}

/** The job's facts if `principal` may do `action` to it (from `source`, e.g. a cache); throws the refusal otherwise. */
export async function authorizedFacts(
  source: { facts(jobId: string): Promise<JobFacts | null> },
  principal: Principal | readonly Principal[],
  action: JobAction,
  jobId: string,
): Promise<JobFacts> {
  const job = await source.facts(jobId)
  const error = authorize(principal, action, job, jobId)
  if (error !== null || job === null) throw error ?? notFound(jobId)
  return job
}

/** The job if `principal` may do `action` to it; throws the refusal otherwise. */
export async function authorizedJob(store: Pick<Store, 'getJob'>, principal: Principal | readonly Principal[], action: JobAction, jobId: string): Promise<JobState> {
  const { job, error } = await jobFor(store, principal, action, jobId)
  if (error !== null) throw error
  return job
}

/** May `principal` see this job (snapshot, stream, poll, list)? */
export function canRead(principal: Principal, job: JobFacts): boolean {
  switch (principal.kind) {
    case 'key':
      if (principal.role === 'worker') return principal.types === null || principal.types.includes(job.type)
      return principal.role === 'admin' || principal.tenant === null || job.owner?.tenant === principal.tenant
    case 'user':
      return principal.rights.has('read') && ownerMatches(job, principal.tenant, principal.tenantWide === true ? null : principal.user)
    case 'token':
      if (!principal.rights.has('read')) return false
      if (principal.jobIds !== null) return principal.jobIds.includes(job.id)
      return ownerMatches(job, principal.tenant, principal.user)
  }
}

/** May `principal` cancel this job? (It must also be able to read it.) */
function canCancel(principal: Principal, job: JobFacts): boolean {
  if (!canRead(principal, job)) return false
  switch (principal.kind) {
    case 'key':
      return principal.role !== 'worker'
    case 'user':
      // Tenant-wide reading does not widen cancelling: a person cancels their own jobs.
      return principal.rights.has('cancel') && ownerMatches(job, principal.tenant, principal.user)
    case 'token':
      return principal.rights.has('cancel')
  }
}

/** Backends (and admins) manage jobs: create, resume, append as a non-worker runner. */
function canManage(principal: Principal, job: JobFacts): boolean {
  if (principal.kind !== 'key' || principal.role === 'worker') return false
  return principal.role === 'admin' || principal.tenant === null || job.owner?.tenant === principal.tenant
}

/** Workers claim, heartbeat, release and write leased jobs of their types. Admins may too. */
export function canWork(principal: Principal, type: string): boolean {
  if (principal.kind !== 'key') return false
  if (principal.role === 'admin') return true
  return principal.role === 'worker' && (principal.types === null || principal.types.includes(type))
}

function ownerMatches(job: JobFacts, tenant: string | null, user: string | null): boolean {
  if (tenant !== null && job.owner?.tenant !== tenant) return false
  if (user !== null && job.owner?.user !== user) return false
  return true
}

/**
 * The owner a person's own job gets when their credential may create jobs of `type`: always the
 * credential's tenant and user. Null when it may not (keys create as backends).
 */
function personalOwner(principal: Principal, type: string): Owner | null {
  if (principal.kind === 'key' || principal.tenant === null || principal.user === null) return null
  return principal.create?.includes(type) === true ? { tenant: principal.tenant, user: principal.user } : null
}

/** The person `job` belongs to when it is `principal`'s own and they may create (and so resume) its type; else null. */
export function ownJob(principal: Principal, job: JobFacts): Owner | null {
  const own = personalOwner(principal, job.type)
  return own !== null && job.owner?.tenant === own.tenant && job.owner.user === own.user ? own : null
}

/** What a create request asks for that decides whether it may: its type and owner, and the person-only limits. */
export interface CreateRequest {
  type: string
  owner?: Owner | null
  dispatch?: boolean
  maxAttempts?: number
}

/**
 * May `principal` create this job? Backends (and admins) create for anyone of their tenant
 * (`as: 'key'`); a person creates jobs of the types their credential lists, always as their own,
 * always dispatched (`as: 'person'` with the owner the job gets). Throws the refusal otherwise.
 */
export function authorizeCreate(principal: Principal, request: CreateRequest): { as: 'key' } | { as: 'person'; owner: Owner } {
  if (principal.kind === 'key') {
    requireKeyRole(principal, ['admin', 'backend'], 'create jobs')
    const tenant = tenantOf(principal)
    if (tenant !== null && request.owner?.tenant !== tenant) {
      throw request.owner == null
        ? new JobwireError('invalid_request', { field: 'owner', reason: `owner: required for a key bound to tenant "${tenant}"` })
        : new JobwireError('forbidden', { action: `create jobs for tenant "${request.owner.tenant}"` })
    }
    return { as: 'key' }
  }
  const owner = personalOwner(principal, request.type)
  if (owner === null) throw new JobwireError('forbidden', { action: `create jobs of type "${request.type}"` })
  if (request.owner != null && (request.owner.tenant !== owner.tenant || request.owner.user !== owner.user)) {
    throw new JobwireError('forbidden', { action: 'create jobs for someone else' })
  }
  if (request.dispatch === false) throw new JobwireError('forbidden', { action: 'create jobs that no worker runs (dispatch: false)' })
  if (request.maxAttempts !== undefined) throw new JobwireError('forbidden', { action: 'set maxAttempts' })
  return { as: 'person', owner }
}

/** The tenant a list, a token or a new job is confined to (null: any). */
export function tenantOf(principal: Principal): string | null {
  if (principal.kind === 'key') return principal.role === 'admin' ? null : principal.tenant
  return principal.tenant
}

/** Refuses (`forbidden`, naming `action`) anything but an API key of one of these roles. */
export function requireKeyRole(principal: Principal, allowed: readonly Role[], action: string): void {
  if (principal.kind !== 'key' || !allowed.includes(principal.role)) throw new JobwireError('forbidden', { action })
}

/**
 * The part of the job list `principal` may see: the jobs a token lists, or an owner corner
 * (`tenant`, `user`; undefined: any) that filters may narrow and never widen. Workers list nothing.
 */
export function listScope(principal: Principal): { jobIds: readonly string[] } | { tenant: string | undefined; user: string | undefined } {
  if (principal.kind === 'key' && principal.role === 'worker') throw new JobwireError('forbidden', { action: 'list jobs' })
  if (principal.kind === 'token' && principal.jobIds !== null) return { jobIds: principal.jobIds }
  if (principal.kind === 'key') return { tenant: tenantOf(principal) ?? undefined, user: undefined }
  return { tenant: principal.tenant ?? undefined, user: principal.kind === 'user' && principal.tenantWide === true ? undefined : (principal.user ?? undefined) }
}

/**
 * The owner whose jobs a user feed ("all my jobs") shows: a person's own (tenant-wide reading
 * does not widen it), or the one an API key names. Throws when `principal` may not watch it.
 */
export function feedOwner(principal: Principal | null, requested: Owner | undefined): Owner {
  if (principal === null) throw new JobwireError('unauthorized', { reason: 'this socket has no credential' })
  let owner: Owner
  switch (principal.kind) {
    case 'user':
      owner = { tenant: principal.tenant, user: principal.user }
      break
    case 'token':
      if (principal.tenant === null || principal.user === null || !principal.rights.has('read')) {
        throw new JobwireError('forbidden', { action: 'watch all jobs of a user (the token names no user)' })
      }
      owner = { tenant: principal.tenant, user: principal.user }
      break
    case 'key':
      if (principal.role === 'worker') throw new JobwireError('forbidden', { action: 'watch the jobs of a user' })
      if (requested === undefined) throw new JobwireError('invalid_request', { field: 'owner', reason: 'owner: required with an API key' })
      if (principal.role !== 'admin' && principal.tenant !== null && requested.tenant !== principal.tenant) {
        throw new JobwireError('forbidden', { action: `watch jobs of tenant "${requested.tenant}"` })
      }
      return requested
  }
  if (requested !== undefined && (requested.tenant !== owner.tenant || requested.user !== owner.user)) {
    throw new JobwireError('forbidden', { action: 'watch the jobs of another user' })
  }
  return owner
}

/** Out of scope looks exactly like missing: nobody learns which job ids exist. */
export function notFound(jobId: string): JobwireError {
  return new JobwireError('job_not_found', { jobId })
}

/** When the credential stops being valid (epoch ms), or null if it does not expire. */
export function expiryOf(principal: Principal): number | null {
  return principal.kind === 'key' ? null : principal.expiresAt
}

function expiredError(expiresAt: number): JobwireError {
  return new JobwireError('token_expired', { expiredAt: new Date(expiresAt).toISOString() })
}

/**
 * Refuses a credential already past its `exp`: verification forgives a few seconds of clock
 * skew, but a stream must not open (and replay events) past it.
 */
export function requireUnexpired(principal: Principal, now: number = Date.now()): void {
  const expiresAt = expiryOf(principal)
  if (expiresAt !== null && expiresAt <= now) throw expiredError(expiresAt)
}

/**
 * Follows a credential's life on an open stream: `expiring` (if given) `noticeMs` before its
 * `exp`, then `expired` with `token_expired` at `exp` (at once when it is already past). Returns
 * the function that stops both. A credential without expiry (an API key) schedules nothing.
 */
export function watchExpiry(
  principal: Principal,
  expired: (error: JobwireError) => void,
  notice?: { noticeMs: number; expiring: (expiresAt: string) => void },
): () => void {
  const expiresAt = expiryOf(principal)
  if (expiresAt === null) return () => {}
  const stops: (() => void)[] = []
  // The notice first: a credential already in its notice window hears it before the end.
  if (notice !== undefined) {
    const iso = new Date(expiresAt).toISOString()
    stops.push(runAt(expiresAt - notice.noticeMs, () => notice.expiring(iso)))
  }
  stops.push(runAt(expiresAt, () => expired(expiredError(expiresAt))))
  return () => {
    for (const stop of stops) stop()
  }
}

/** setTimeout for an absolute time, also beyond setTimeout's 24.8-day range. */
function runAt(deadline: number, fn: () => void): () => void {
  let timer: NodeJS.Timeout
  const arm = (): void => {
    const left = deadline - Date.now()
    timer = left > 2 ** 31 - 1 ? setTimeout(arm, 2 ** 31 - 1) : setTimeout(fn, Math.max(0, left))
    timer.unref()
  }
  arm()
  return () => {
    // Ref'd as it is cleared: Node drops the list of a timer's duration when its last timer goes
    // only for ref'd timers. Each of these has a duration of its own (to the ms of its `exp`), so
    // every stream that closed left an empty list (~180 bytes) until its token would have expired,
    // hours or days on: a node serving many streams under long-lived tokens grew for as long.
    timer.ref()
    clearTimeout(timer)
  }
}
