import { hash, randomBytes, timingSafeEqual } from 'node:crypto'
import { decodeJwt } from 'jose'
import { JobwireError } from '@jobwire/protocol'
import type { ApiKeyRecord, KeyStore } from '../core/keys.js'
import type { Principal, Role } from '../core/scopes.js'
import type { AppJwtVerifier } from './app-jwt.js'
import { tokenIssuer, verifySubscriptionToken } from './tokens.js'

/** API keys look like `jwk_<id>.<secret>`: the id finds the record, the secret is checked against its hash. */
const apiKeyPattern = /^jwk_([A-Za-z0-9_-]{8,32})\.([A-Za-z0-9_-]{16,128})$/

function sha256(text: string): string {
  return hash('sha256', text, 'hex')
}

/**
 * Whether `candidate` is `key`, compared in constant time over the key's bytes. Only the length
 * can show, as it does in the key's format. Every request is checked against the admin key first:
 * a SHA-256 of the candidate (to make the lengths equal) was 2–3 % of the server's CPU per write.
 */
function matchesKey(candidate: string, key: Buffer): boolean {
  return Buffer.byteLength(candidate) === key.length && timingSafeEqual(Buffer.from(candidate), key)
}

/** A key id: 12 base64url characters, never starting with `-` or `_` (a CLI would take `-h…` for an option). */
function newKeyId(): string {
  for (;;) {
    const id = randomBytes(9).toString('base64url')
    if (/^[A-Za-z0-9]/.test(id)) return id
  }
}

export interface NewApiKey {
  name: string
  role: Role
  tenant?: string | null
  types?: string[] | null
}

/**
 * Turns a credential into a Principal: the bootstrap admin key, an API key, a subscription
 * token, or an app JWT. Revocations are announced so open streams of that key close at once.
 */
export class Authenticator {
  readonly #revokeListeners = new Set<(keyId: string) => void>()
  /** The admin key's bytes, once: every request is checked against it first. */
  readonly #adminKey: Buffer

  constructor(
    private readonly options: {
      adminKey: string
      keys: KeyStore
      tokenSecret: Uint8Array
      appJwt: AppJwtVerifier | null
    },
  ) {
    this.#adminKey = Buffer.from(options.adminKey)
    // Keys revoked through other nodes (a shared store) close this node's streams too.
    options.keys.watchRevocations?.((keyId) => this.#announceRevocation(keyId))
  }

  get tokenSecret(): Uint8Array {
    return this.options.tokenSecret
  }

  async authenticate(credential: string): Promise<Principal> {
    return this.authenticateNow(credential)
  }

  /**
   * `authenticate` for the request path: the admin key's principal comes back without a promise
   * (the check is a comparison); API keys (the store) and tokens (a verify) come back as one. Throws
   * `unauthorized` or `invalid_token` synchronously where it can tell at once.
   */
  authenticateNow(credential: string): Principal | Promise<Principal> {
    if (matchesKey(credential, this.#adminKey)) {
      return { kind: 'key', keyId: 'bootstrap', role: 'admin', tenant: null, types: null }
    }
    const apiKey = apiKeyPattern.exec(credential)
    if (apiKey !== null) return this.#apiKey(apiKey[1] as string, apiKey[2] as string)
    if (credential.split('.').length === 3) {
      let issuer: unknown
      try {
        issuer = decodeJwt(credential).iss
      } catch {
        throw new JobwireError('invalid_token', { reason: 'it is not a valid JWT' })
      }
      // Routing only: each path verifies with its own key and algorithm allow-list.
      if (issuer === tokenIssuer) return verifySubscriptionToken(this.options.tokenSecret, credential)
      if (this.options.appJwt === null) throw new JobwireError('invalid_token', { reason: 'app JWTs are not configured on this server' })
      return this.options.appJwt.verify(credential)
    }
    throw new JobwireError('unauthorized')
  }

  /** Re-checks an API key principal (a stream registered just after its key was revoked finds out this way). */
  async stillValid(principal: Principal): Promise<boolean> {
    if (principal.kind !== 'key' || principal.keyId === 'bootstrap') return true
    const record = await this.options.keys.get(principal.keyId)
    return record !== null && record.revokedAt === null
  }

  async #apiKey(id: string, secret: string): Promise<Principal> {
    const record = await this.options.keys.get(id)
    if (record === null || record.revokedAt !== null || !timingSafeEqual(Buffer.from(sha256(secret)), Buffer.from(record.hash))) {
      throw new JobwireError('unauthorized')
    }
    return { kind: 'key', keyId: record.id, role: record.role, tenant: record.tenant, types: record.types }
  }

  async createKey(input: NewApiKey): Promise<{ key: string; record: Omit<ApiKeyRecord, 'hash'> }> {
    const id = newKeyId()
    const secret = randomBytes(24).toString('base64url')
    const record: ApiKeyRecord = {
      id,
      name: input.name,
      role: input.role,
      tenant: input.tenant ?? null,
      types: input.types ?? null,
      hash: sha256(secret),
      createdAt: new Date().toISOString(),
      revokedAt: null,
    }
    await this.options.keys.create(record)
    const { hash: _hash, ...shown } = record
    return { key: `jwk_${id}.${secret}`, record: shown }
  }

  async listKeys(): Promise<Omit<ApiKeyRecord, 'hash'>[]> {
    return (await this.options.keys.list()).map(({ hash: _hash, ...shown }) => shown)
  }

  async revokeKey(id: string): Promise<void> {
    if (!(await this.options.keys.revoke(id, new Date().toISOString()))) throw new JobwireError('key_not_found', { keyId: id })
    this.#announceRevocation(id)
  }

  #announceRevocation(keyId: string): void {
    for (const listener of this.#revokeListeners) listener(keyId)
  }

  onRevoke(listener: (keyId: string) => void): () => void {
    this.#revokeListeners.add(listener)
    return () => this.#revokeListeners.delete(listener)
  }
}
