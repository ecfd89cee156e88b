import { defaultTokenTtlSeconds, maxTokenTtlSeconds, type SubscriptionToken, type TokenRight } from '@jobwire/protocol'
import { createHmac, randomBytes } from 'node:crypto'

export type Right = TokenRight

export interface MintOptions {
  /** The server's `--token-secret` (`JOBWIRE_TOKEN_SECRET`). */
  secret: string
  /** Jobs the token may watch. */
  jobIds?: string[]
  /** With `user`: every job of this user in this tenant (including jobs created later). */
  tenant?: string
  user?: string
  /** With `tenant` and no `user` or `jobIds`: every job of the tenant, of any user (a team's page). */
  tenantWide?: boolean
  /** Default `['read']`; add `'cancel'` to let the holder cancel. */
  rights?: Right[]
  /**
   * Job types the holder may start (`POST /v1/jobs`) and resume as this `user`: the server makes
   * them the owner, whatever the request says, and counts them against the per-person create limit.
   */
  create?: string[]
  /** Lifetime in seconds; default 900 (15 minutes), at most 86,400. */
  ttlSeconds?: number
  /** Clock, for tests. */
  now?: number
}

/**
 * Mints a subscription token with no network hop: an HS256 JWT the server verifies with the same
 * secret. Give it to a browser for `EventSource(…/stream?access_token=…)` or the client SDK.
 * Mint only for jobs and users your own auth has checked the caller may see.
 */
export function mintSubscriptionToken(options: MintOptions): SubscriptionToken {
  if (options.secret.length < 32) throw new TypeError('mintSubscriptionToken: secret must be at least 32 characters')
  if (options.tenantWide === true) {
    if (options.tenant === undefined || options.user !== undefined || options.jobIds !== undefined) {
      throw new TypeError('mintSubscriptionToken: tenantWide needs tenant, and no user or jobIds')
    }
  } else {
    if (options.jobIds === undefined && options.user === undefined) throw new TypeError('mintSubscriptionToken: give jobIds, tenant and user, or tenant and tenantWide')
    if (options.user !== undefined && options.tenant === undefined) throw new TypeError('mintSubscriptionToken: user needs tenant')
  }
  const ttl = Math.min(options.ttlSeconds ?? defaultTokenTtlSeconds, maxTokenTtlSeconds)
  const iat = Math.floor((options.now ?? Date.now()) / 1000)
  const payload: Record<string, unknown> = {
    iss: 'jobwire',
    aud: 'jobwire:subscription',
    iat,
    exp: iat + ttl,
    jti: randomBytes(12).toString('base64url'),
    rights: options.rights ?? ['read'],
  }
  if (options.jobIds !== undefined) payload.jobs = options.jobIds
  if (options.tenant !== undefined) payload.tenant = options.tenant
  if (options.user !== undefined) payload.user = options.user
  if (options.create !== undefined) {
    if (options.user === undefined) throw new TypeError('mintSubscriptionToken: create needs tenant and user')
    payload.create = options.create
  }
  const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url')
  const signingInput = `${encode({ alg: 'HS256', typ: 'JWT' })}.${encode(payload)}`
  const signature = createHmac('sha256', options.secret).update(signingInput).digest('base64url')
  return { token: `${signingInput}.${signature}`, expiresAt: new Date((iat + ttl) * 1000).toISOString() }
}
