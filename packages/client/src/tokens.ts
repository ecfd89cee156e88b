import { JobwireError, type Owner } from '@jobwire/protocol'
import type { Environment } from './environment.js'

/**
 * What a credential is asked for. `jobs`: watching (or cancelling) these jobs — the client asks
 * once per job it watches, so a backend may mint a token for just that job. `user`: the person's
 * own jobs (`watchMyJobs`, `listJobs`); `owner` when an API key names one.
 */
export type TokenRequest = { scope: 'jobs'; jobIds: readonly string[] } | { scope: 'user'; owner?: Owner }

/**
 * Returns the credential for `request`: a subscription token your backend minted, the app's own
 * JWT, or (server-side) an API key. Called on connect, on every reconnect, for each job watched,
 * and when the server says a credential expires. A credential that is not limited to listed jobs
 * (anything but a subscription token minted with `jobIds`) is used for every job until it nears
 * expiry, so a `getToken` that ignores its argument is called about as often as one per client.
 * A token minted for listed jobs is used for those jobs only, each on its own: one socket carries
 * jobs under as many tokens as it likes. Return `null`, or throw `new JobwireError('unauthorized')`
 * (or any error with `status` 401 or 403), to say the user may not watch: the client stops retrying
 * (with per-job tokens, only the watch of that job ends). Any other throw is retried with backoff.
 */
export type GetToken = (request: TokenRequest) => string | null | Promise<string | null>

/** Whether getToken's failure means "no" rather than "not now". */
function isRefusal(error: unknown): boolean {
  if (error instanceof JobwireError) return error.code === 'unauthorized' || error.code === 'forbidden' || error.code === 'invalid_token'
  const status = (error as { status?: unknown } | null)?.status
  return status === 401 || status === 403
}

/** Seconds of `exp` margin: a token this close to expiry is not used for a new connection. */
const expiryMarginMs = 5_000

/** Per-job tokens cached before the first sweep of expired ones; after, twice what a sweep left. */
const firstSweepAt = 256

/** A credential as the client uses it. `fresh`: it came from getToken for this very request, so a refusal of it is final. */
export interface Credential {
  token: string | null
  fresh: boolean
  /** Limited to listed jobs (a subscription token's `jobs` claim): sent with each of their subscriptions. */
  perJob: boolean
}

interface Cached {
  token: string
  fetchedAt: number
  expiresAt: number | null
  /** The jobs it is limited to, or null for a credential that is not. */
  jobIds: readonly string[] | null
}

/**
 * Caches what getToken returned: a credential not limited to jobs serves every request; a
 * per-job token serves its jobs. Until the first per-job token is seen, one call runs at a time
 * (a credential for everything then serves everyone waiting); after, one per job at a time.
 */
export class TokenSource {
  #general: Cached | null = null
  readonly #perJob = new Map<string, Cached>()
  /** The size of `#perJob` at which expired tokens are swept out next. */
  #sweepAt = firstSweepAt
  #perJobSeen = false
  readonly #pending = new Map<string, Promise<Cached>>()

  constructor(
    private readonly getToken: GetToken | undefined,
    private readonly env: Environment,
  ) {}

  get hasSource(): boolean {
    return this.getToken !== undefined
  }

  /** Whether getToken has handed out per-job tokens: a refusal then ends one job's watch, not the client. */
  get perJob(): boolean {
    return this.#perJobSeen
  }

  /**
   * A credential for `request` obtained at or after `notBefore` that is not about to expire,
   * calling getToken when no cached one qualifies. Rejects with `unauthorized` when getToken refuses.
   */
  async get(request: TokenRequest, notBefore = -Infinity): Promise<Credential> {
    if (this.getToken === undefined) return { token: null, fresh: false, perJob: false }
    for (;;) {
      const cached = this.#cached(request, notBefore)
      if (cached !== null) return { token: cached.token, fresh: false, perJob: cached.jobIds !== null }
      const key = this.#perJobSeen ? keyOf(request) : '*'
      const pending = this.#pending.get(key)
      if (pending !== undefined) {
        const got = await pending
        if (covers(got, request)) return { token: got.token, fresh: true, perJob: got.jobIds !== null }
        continue
      }
      const fetching = this.#fetch(request).finally(() => this.#pending.delete(key))
      this.#pending.set(key, fetching)
      const got = await fetching
      return { token: got.token, fresh: true, perJob: got.jobIds !== null }
    }
  }

  /**
   * Forgets the per-job token of `jobId`: the client no longer follows the job. The cache holds
   * the jobs in use, not every job this client ever watched (a dashboard's thousands, one after
   * another); watching the job again asks getToken again.
   */
  forget(jobId: string): void {
    this.#perJob.delete(jobId)
  }

  /** Jobs with a per-job token cached (tests). */
  get cachedJobs(): number {
    return this.#perJob.size
  }

  /** Forgets `token` (the server refused it or said it expires), so the next `get` asks again. */
  invalidate(token: string | null): void {
    if (token === null) return
    if (this.#general?.token === token) this.#general = null
    for (const [jobId, cached] of this.#perJob) if (cached.token === token) this.#perJob.delete(jobId)
  }

  #cached(request: TokenRequest, notBefore: number): Cached | null {
    const usable = (cached: Cached | null | undefined): cached is Cached =>
      cached != null && cached.fetchedAt >= notBefore && (cached.expiresAt === null || cached.expiresAt - expiryMarginMs > this.env.now())
    if (usable(this.#general)) return this.#general
    if (request.scope !== 'jobs' || request.jobIds.length === 0) return null
    const first = this.#perJob.get(request.jobIds[0] as string)
    if (!usable(first)) return null
    return request.jobIds.every((jobId) => this.#perJob.get(jobId) === first) ? first : null
  }

  async #fetch(request: TokenRequest): Promise<Cached> {
    let token: string | null
    try {
      token = await (this.getToken as GetToken)(request)
    } catch (error) {
      if (isRefusal(error)) throw new JobwireError('unauthorized', { reason: 'getToken refused' }, refusalMessage(error))
      throw error
    }
    if (token === null || token === '') throw new JobwireError('unauthorized', { reason: 'getToken returned no token' })
    const jobIds = jobsOf(token)
    const cached: Cached = { token, fetchedAt: this.env.now(), expiresAt: expiryOf(token), jobIds }
    if (jobIds === null) this.#general = cached
    else {
      this.#perJobSeen = true
      for (const jobId of jobIds) this.#perJob.set(jobId, cached)
      if (this.#perJob.size >= this.#sweepAt) this.#sweepExpired()
    }
    return cached
  }

  /**
   * Drops the per-job tokens too close to expiry to be used again. Tokens asked for one request
   * (a cancel, a result) of a job that is not watched are never forgotten otherwise; swept each
   * time the cache has doubled, the work stays proportional to what is added.
   */
  #sweepExpired(): void {
    const now = this.env.now()
    for (const [jobId, cached] of this.#perJob) if (cached.expiresAt !== null && cached.expiresAt - expiryMarginMs <= now) this.#perJob.delete(jobId)
    this.#sweepAt = Math.max(firstSweepAt, 2 * this.#perJob.size)
  }
}

function keyOf(request: TokenRequest): string {
  return request.scope === 'jobs' ? `jobs:${request.jobIds.join(',')}` : `user:${request.owner?.tenant ?? ''}:${request.owner?.user ?? ''}`
}

function covers(cached: Cached, request: TokenRequest): boolean {
  if (cached.jobIds === null) return true
  return request.scope === 'jobs' && request.jobIds.every((jobId) => cached.jobIds?.includes(jobId) === true)
}

function refusalMessage(error: unknown): string {
  return `getToken refused: ${error instanceof Error ? error.message : String(error)}`
}

/** `exp` of a JWT in epoch ms, or null when the credential is not a JWT or has none. */
function expiryOf(token: string): number | null {
  const exp = claimsOf(token)?.exp
  return typeof exp === 'number' ? exp * 1000 : null
}

/** The jobs a subscription token is limited to (its `jobs` claim), or null for any other credential. */
function jobsOf(token: string): readonly string[] | null {
  const jobs = claimsOf(token)?.jobs
  return Array.isArray(jobs) && jobs.length > 0 && jobs.every((id) => typeof id === 'string') ? (jobs as string[]) : null
}

/** A JWT's payload, read without verifying it (the server verifies); null for anything else. */
function claimsOf(token: string): Record<string, unknown> | null {
  const parts = token.split('.')
  if (parts.length !== 3 || parts[1] === undefined) return null
  try {
    const claims: unknown = JSON.parse(atob(parts[1].replace(/-/g, '+').replace(/_/g, '/')))
    return typeof claims === 'object' && claims !== null ? (claims as Record<string, unknown>) : null
  } catch {
    return null
  }
}
