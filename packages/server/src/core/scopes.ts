import { JobwireError, type JobState } from '@jobwire/protocol'

export type Role = 'admin' | 'backend' | 'worker'
export const roles: readonly Role[] = ['admin', 'backend', 'worker']
export type Right = 'read' | 'cancel'

/**
 * Who is asking, as established by authentication. Every check below is a pure function of the
 * principal and the job, so the same rules hold on every path and every node.
 */
export type Principal =
  /** An API key (or the bootstrap admin key). A `tenant` binds it to that tenant's jobs. */
  | { kind: 'key'; keyId: string; role: Role; tenant: string | null; types: readonly string[] | null }
  /**
   * A person, from the app's own JWT: their jobs only; with `tenantWide`, they may also read
   * (not cancel) every job of their tenant (a team's page). `create`: job types they may start
   * (and resume) themselves, as their own jobs (`--jwt-create-types`).
   */
  | { kind: 'user'; tenant: string; user: string; rights: ReadonlySet<Right>; expiresAt: number | null; tenantWide?: boolean; create?: readonly string[] }
  /** A subscription token minted by a backend: listed jobs, all jobs of one user, or all jobs of one tenant (`user` null). */
  | {
      kind: 'token'
      tenant: string | null
      user: string | null
      jobIds: readonly string[] | null
      rights: ReadonlySet<Right>
      expiresAt: number
      tokenId: string
      /** Job types the holder may start (and resume) as the token's user; only tokens naming a user carry it. */
      create?: readonly string[]
    }

/**
 * The identity limits are counted against: one person (the same whether an app JWT, a user token or
 * a per-job token minted for them carries them), one token minted for no one, or one key.
 */
export function limitSubject(principal: Principal): string {
  switch (principal.kind) {
    case 'key':
      return `key:${principal.keyId}`
    case 'user':
      return `user:${personKey(principal.tenant, principal.user)}`
    case 'token':
      return principal.user !== null ? `user:${personKey(principal.tenant ?? '', principal.user)}` : `token:${principal.tokenId}`
  }
}

/** A person as one counter key: escaped, so that no tenant or user with a `:` in it can pass for another person. */
export function personKey(tenant: string, user: string): string {
  return `${encodeURIComponent(tenant)}:${encodeURIComponent(user)}`
}

/** When the credential stops being valid (epoch ms), or null if it does not expire. */
export function expiryOf(principal: Principal): number | null {
  return principal.kind === 'key' ? null : principal.expiresAt
}

function ownerMatches(job: JobState, tenant: string | null, user: string | null): boolean {
  if (tenant !== null && job.owner?.tenant !== tenant) return false
  if (user !== null && job.owner?.user !== user) return false
  return true
}

/** May `principal` see this job (snapshot, stream, poll, list)? */
export function canRead(principal: Principal, job: JobState): boolean {
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
export function canCancel(principal: Principal, job: JobState): boolean {
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
export function canManage(principal: Principal, job: JobState | null): boolean {
  if (principal.kind !== 'key' || principal.role === 'worker') return false
  return job === null || principal.role === 'admin' || principal.tenant === null || job.owner?.tenant === principal.tenant
}

/**
 * The owner a person's own job gets when their credential may create jobs of `type`: always the
 * credential's tenant and user. Null when it may not (keys are checked by `canManage`).
 */
export function personalOwner(principal: Principal, type: string): { tenant: string; user: string } | null {
  if (principal.kind === 'key' || principal.tenant === null || principal.user === null) return null
  return principal.create?.includes(type) === true ? { tenant: principal.tenant, user: principal.user } : null
}

/** Workers claim, heartbeat, release and write leased jobs of their types. Admins may too. */
export function canWork(principal: Principal, type: string): boolean {
  if (principal.kind !== 'key') return false
  if (principal.role === 'admin') return true
  return principal.role === 'worker' && (principal.types === null || principal.types.includes(type))
}

/** The tenant a list or a new job is confined to (null: any), or a refusal for people and tokens. */
export function tenantOf(principal: Principal): string | null {
  if (principal.kind === 'key') return principal.role === 'admin' ? null : principal.tenant
  return principal.tenant
}

export function requireKeyRole(principal: Principal, allowed: readonly Role[], action: string): void {
  if (principal.kind !== 'key' || !allowed.includes(principal.role)) throw new JobwireError('forbidden', { action })
}

/** Out of scope looks exactly like missing: nobody learns which job ids exist. */
export function notFound(jobId: string): JobwireError {
  return new JobwireError('job_not_found', { jobId })
}
