import { readFileSync } from 'node:fs'
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  importSPKI,
  jwtVerify,
  type JSONWebKeySet,
  type JWTPayload,
  type JWTVerifyGetKey,
  type KeyObject,
} from 'jose'
import { JobwireError } from '@jobwire/protocol'
import type { Principal, Right } from '../core/scopes.js'
import { isWellFormed } from '../core/well-formed.js'
import { clockToleranceSeconds, tokenError } from './tokens.js'

export interface AppJwtOptions {
  /** HS256/384/512 shared secret. */
  secret?: string
  /** Path of a PEM public key (RS*, PS*, ES*, EdDSA). */
  publicKeyFile?: string
  /** JWKS URL, fetched and cached; a fixed URL from config, never one named by a token. */
  jwksUrl?: string
  /** Path of a JWKS JSON file. */
  jwksFile?: string
  /** Allowed algorithms; anything else (including `none`) is refused. */
  algorithms: string[]
  issuer?: string
  audience?: string
  /** Claim holding the tenant; when absent from a token, `defaultTenant` is used if set. */
  tenantClaim: string
  userClaim: string
  defaultTenant?: string
  rights: Right[]
  /** Job types every person with an app JWT may start (and resume) as their own; default none. */
  createTypes?: string[]
}

/**
 * The claim that, when `true`, lets the person read (not cancel) every job of their tenant — a
 * team's page — and not only their own.
 */
const tenantReadClaim = 'jobwire_tenant_read'

/**
 * Verifies the app's own user JWTs, so an existing login works without a token exchange. Keys
 * and algorithms come only from configuration.
 */
export class AppJwtVerifier {
  readonly #key: Promise<Uint8Array | KeyObject | CryptoKey> | JWTVerifyGetKey

  constructor(private readonly options: AppJwtOptions) {
    if (options.algorithms.length === 0) throw new Error('JWT verification needs an algorithm allow-list (--jwt-algorithms)')
    if (options.secret !== undefined) this.#key = Promise.resolve(new TextEncoder().encode(options.secret))
    else if (options.publicKeyFile !== undefined) {
      const pem = readFileSync(options.publicKeyFile, 'utf8')
      const algorithm = options.algorithms[0] as string
      this.#key = importSPKI(pem, algorithm)
    } else if (options.jwksFile !== undefined) this.#key = createLocalJWKSet(JSON.parse(readFileSync(options.jwksFile, 'utf8')) as JSONWebKeySet)
    else if (options.jwksUrl !== undefined) this.#key = createRemoteJWKSet(new URL(options.jwksUrl), { cacheMaxAge: 10 * 60_000, cooldownDuration: 30_000 })
    else throw new Error('JWT verification needs a key: --jwt-secret, --jwt-public-key-file, --jwks-url or --jwks-file')
  }

  async verify(token: string): Promise<Principal> {
    let payload: JWTPayload
    try {
      const options = {
        algorithms: this.options.algorithms,
        clockTolerance: clockToleranceSeconds,
        requiredClaims: ['exp'],
        ...(this.options.issuer === undefined ? {} : { issuer: this.options.issuer }),
        ...(this.options.audience === undefined ? {} : { audience: this.options.audience }),
      }
      const key = this.#key
      ;({ payload } = typeof key === 'function' ? await jwtVerify(token, key, options) : await jwtVerify(token, await key, options))
    } catch (error) {
      throw tokenError(error)
    }
    const user = payload[this.options.userClaim]
    const tenant = payload[this.options.tenantClaim] ?? this.options.defaultTenant
    if (typeof user !== 'string' || user === '') throw new JobwireError('invalid_token', { reason: `no "${this.options.userClaim}" claim` })
    if (typeof tenant !== 'string' || tenant === '') throw new JobwireError('invalid_token', { reason: `no "${this.options.tenantClaim}" claim` })
    // A person is their tenant and user, kept as UTF-8 (owner indexes, limit counters): both must be well-formed.
    if (!isWellFormed(user) || !isWellFormed(tenant)) throw new JobwireError('invalid_token', { reason: 'its tenant or user claim holds a lone surrogate (not well-formed Unicode)' })
    const create = this.options.createTypes ?? []
    const principal: Principal = { kind: 'user', tenant, user, rights: new Set(this.options.rights), expiresAt: (payload.exp ?? 0) * 1000, ...(create.length === 0 ? {} : { create }) }
    if (payload[tenantReadClaim] === true) principal.tenantWide = true
    return principal
  }
}
