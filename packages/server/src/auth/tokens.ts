import { randomBytes } from 'node:crypto'
import { errors as joseErrors, jwtVerify, SignJWT } from 'jose'
import { z } from 'zod'
import { JobwireError } from '@jobwire/protocol'
import type { Principal, Right } from '../core/scopes.js'
import { isWellFormed } from '../core/well-formed.js'

/**
 * Subscription tokens: short-lived HS256 JWTs that a backend mints for a browser, scoped to jobs
 * or to one user's jobs. `@jobwire/backend` mints the same format offline with node:crypto.
 */
export const tokenIssuer = 'jobwire'
const tokenAudience = 'jobwire:subscription'
/** Seconds of clock difference forgiven between the minting backend and this node. */
export const clockToleranceSeconds = 5

export interface SubscriptionScope {
  jobIds?: string[]
  tenant?: string
  user?: string
  rights?: Right[]
  /** Job types the holder may start and resume as `user` (needs `tenant` and `user`). */
  create?: string[]
}

const claimsSchema = z.object({
  jti: z.string().min(1).max(100),
  exp: z.number(),
  jobs: z.array(z.string().min(1).max(100)).min(1).max(1000).optional(),
  tenant: z.string().min(1).max(200).optional(),
  user: z.string().min(1).max(200).optional(),
  rights: z.array(z.enum(['read', 'cancel'])).min(1).max(2),
  create: z.array(z.string().min(1).max(100)).min(1).max(50).optional(),
})

export async function signSubscriptionToken(
  secret: Uint8Array,
  scope: SubscriptionScope,
  ttlSeconds: number,
  now: number = Date.now(),
): Promise<{ token: string; expiresAt: string }> {
  const iat = Math.floor(now / 1000)
  const exp = iat + ttlSeconds
  const payload: Record<string, unknown> = { rights: scope.rights ?? ['read'] }
  if (scope.jobIds !== undefined) payload.jobs = scope.jobIds
  if (scope.tenant !== undefined) payload.tenant = scope.tenant
  if (scope.user !== undefined) payload.user = scope.user
  if (scope.create !== undefined) payload.create = scope.create
  const token = await new SignJWT(payload)
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuer(tokenIssuer)
    .setAudience(tokenAudience)
    .setIssuedAt(iat)
    .setExpirationTime(exp)
    .setJti(randomBytes(12).toString('base64url'))
    .sign(secret)
  return { token, expiresAt: new Date(exp * 1000).toISOString() }
}

export async function verifySubscriptionToken(secret: Uint8Array, token: string): Promise<Principal> {
  let payload: unknown
  try {
    ;({ payload } = await jwtVerify(token, secret, {
      algorithms: ['HS256'],
      issuer: tokenIssuer,
      audience: tokenAudience,
      clockTolerance: clockToleranceSeconds,
      requiredClaims: ['exp', 'jti'],
    }))
  } catch (error) {
    throw tokenError(error)
  }
  const claims = claimsSchema.safeParse(payload)
  if (!claims.success) throw new JobwireError('invalid_token', { reason: 'the token has no valid scope' })
  const { jobs, tenant, user, rights, exp, jti, create } = claims.data
  if (jobs === undefined && tenant === undefined && user === undefined) {
    throw new JobwireError('invalid_token', { reason: 'the token names no jobs and no user' })
  }
  if (!isWellFormed(tenant ?? '') || !isWellFormed(user ?? '')) throw new JobwireError('invalid_token', { reason: 'its tenant or user holds a lone surrogate (not well-formed Unicode)' })
  if (create !== undefined && (tenant === undefined || user === undefined)) {
    throw new JobwireError('invalid_token', { reason: 'a create right needs the tenant and user who will own the jobs' })
  }
  return {
    kind: 'token',
    tenant: tenant ?? null,
    user: user ?? null,
    jobIds: jobs ?? null,
    rights: new Set(rights),
    expiresAt: exp * 1000,
    tokenId: jti,
    ...(create === undefined ? {} : { create }),
  }
}

/** A verification failure as a registry error; the reason names the check, never the secret. */
export function tokenError(error: unknown): JobwireError {
  if (error instanceof joseErrors.JWTExpired) {
    const exp = (error.payload as { exp?: number }).exp
    return new JobwireError('token_expired', { expiredAt: exp === undefined ? 'an earlier time' : new Date(exp * 1000).toISOString() })
  }
  if (error instanceof joseErrors.JWTClaimValidationFailed) return new JobwireError('invalid_token', { reason: `claim "${error.claim}" ${error.reason}` })
  if (error instanceof joseErrors.JOSEAlgNotAllowed) return new JobwireError('invalid_token', { reason: 'its algorithm is not allowed' })
  if (error instanceof joseErrors.JWSSignatureVerificationFailed) return new JobwireError('invalid_token', { reason: 'bad signature' })
  if (error instanceof joseErrors.JWKSNoMatchingKey) return new JobwireError('invalid_token', { reason: 'no key matches its kid' })
  if (error instanceof joseErrors.JOSEError) return new JobwireError('invalid_token', { reason: error.code.toLowerCase().replace(/^err_/, '').replaceAll('_', ' ') })
  return new JobwireError('invalid_token', { reason: 'it is not a valid JWT' })
}
