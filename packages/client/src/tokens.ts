import { JobwireError } from '@jobwire/protocol'
import type { Environment } from './environment.js'

/**
 * Returns the credential to watch with: a subscription token your backend minted, the app's own
 * JWT, or (server-side) an API key. Called on connect, on every reconnect, and when the server
 * says the credential expires. Return `null`, or throw `new JobwireError('unauthorized')` (or any
 * error with `status` 401 or 403), to say the user may not watch: the client stops retrying.
 * Any other throw is taken as temporary and retried with backoff.
 */
export type GetToken = () => string | null | Promise<string | null>

/** Whether getToken's failure means "no" rather than "not now". */
export function isRefusal(error: unknown): boolean {
  if (error instanceof JobwireError) return error.code === 'unauthorized' || error.code === 'forbidden' || error.code === 'invalid_token'
  const status = (error as { status?: unknown } | null)?.status
  return status === 401 || status === 403
}

/** Seconds of `exp` margin: a token this close to expiry is not used for a new connection. */
const expiryMarginMs = 5_000

/** Caches what getToken returned; one call at a time, however many links ask. */
export class TokenSource {
  #token: string | null = null
  #fetchedAt = -Infinity
  #expiresAt: number | null = null
  #pending: Promise<string | null> | null = null

  constructor(
    private readonly getToken: GetToken | undefined,
    private readonly env: Environment,
  ) {}

  get hasSource(): boolean {
    return this.getToken !== undefined
  }

  /**
   * A credential obtained at or after `notBefore` that is not about to expire, calling getToken
   * when the cached one does not qualify. `fresh`: it came from getToken during this call, so a
   * refusal of it is final. Rejects with `unauthorized` when getToken refuses.
   */
  async get(notBefore = -Infinity): Promise<{ token: string | null; fresh: boolean }> {
    if (this.getToken === undefined) return { token: null, fresh: false }
    const now = this.env.now()
    const usable = this.#token !== null && this.#fetchedAt >= notBefore && (this.#expiresAt === null || this.#expiresAt - expiryMarginMs > now)
    if (usable) return { token: this.#token, fresh: false }
    return { token: await this.#fetch(), fresh: true }
  }

  /** Forgets `token` (the server refused it or said it expired), so the next `get` asks again. */
  invalidate(token: string | null): void {
    if (token === this.#token) {
      this.#token = null
      this.#fetchedAt = -Infinity
    }
  }

  #fetch(): Promise<string | null> {
    this.#pending ??= (async () => {
      try {
        let token: string | null
        try {
          token = await (this.getToken as GetToken)()
        } catch (error) {
          if (isRefusal(error)) throw new JobwireError('unauthorized', { reason: 'getToken refused' }, refusalMessage(error))
          throw error
        }
        if (token === null || token === '') throw new JobwireError('unauthorized', { reason: 'getToken returned no token' })
        this.#token = token
        this.#fetchedAt = this.env.now()
        this.#expiresAt = expiryOf(token)
        return token
      } finally {
        this.#pending = null
      }
    })()
    return this.#pending
  }
}

function refusalMessage(error: unknown): string {
  return `getToken refused: ${error instanceof Error ? error.message : String(error)}`
}

/** `exp` of a JWT in epoch ms, or null when the credential is not a JWT or has none. */
export function expiryOf(token: string): number | null {
  const parts = token.split('.')
  if (parts.length !== 3 || parts[1] === undefined) return null
  try {
    const json = atob(parts[1].replace(/-/g, '+').replace(/_/g, '/'))
    const exp = (JSON.parse(json) as { exp?: unknown }).exp
    return typeof exp === 'number' ? exp * 1000 : null
  } catch {
    return null
  }
}
