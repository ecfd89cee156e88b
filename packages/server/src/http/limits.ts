import { JobwireError } from '@jobwire/protocol'
import type { RateCounter, StreamCounter, StreamSlot } from '../core/keys.js'
import { byName } from '../core/by-name.js'
import { limitSubject, personKey, type Principal } from '../core/scopes.js'
import type { Metrics } from '../metrics.js'

export interface LimitSettings {
  /** Jobs created per owner (a person) per window. */
  createLimit: number
  createWindowMs: number
  /**
   * Open streams per person, whatever credential carries them (an app JWT, a user token, a per-job
   * token minted for the user); a per-job token minted for no user counts on its own. API keys are
   * server-side and not counted here.
   */
  streamsPerUser: number
  /** Open streams per client IP, for people's credentials. */
  streamsPerIp: number
  /** Open streams on this node, whoever holds them. */
  maxConnections: number
  /** Bytes of request bodies this node reads and parses at once (`admitBody`). */
  maxBodyBytesInFlight: number
  /** Tenant → tier name. A tenant not listed is a tier of its own (its name), so tier limits may name tenants too. */
  tenantTiers?: Record<string, string>
  /** Per tier: replaces `createLimit` for people of its tenants. */
  createLimitByTier?: Record<string, number>
  /** Per tier: replaces `streamsPerUser` for people of its tenants. */
  streamsPerUserByTier?: Record<string, number>
  /** Per job type: jobs of that type one person may create per window, counted apart from their other jobs. */
  createLimitByType?: Record<string, number>
  /** Per job type: SSE streams of jobs of that type one person may hold open, on top of `streamsPerUser`. */
  streamsPerUserByType?: Record<string, number>
}

/** Request bodies under this are never refused by `maxBodyBytesInFlight` (though they count toward it). */
const smallBodyBytes = 64 * 1024

/**
 * The resource limits, counted through RateCounter/StreamCounter so that the Redis backend can
 * count them across nodes. Each refusal is a 429 (with Retry-After) or 503 and a metric.
 */
export class Limits {
  #connections = 0
  #bodyBytes = 0

  constructor(
    readonly settings: LimitSettings,
    private readonly rate: RateCounter,
    private readonly streams: StreamCounter,
    private readonly metrics: Metrics,
  ) {}

  get connections(): number {
    return this.#connections
  }

  /** Bytes of request bodies admitted and not yet parsed (or answered). */
  get bodyBytesInFlight(): number {
    return this.#bodyBytes
  }

  /**
   * Admits a request body of `bytes` against `maxBodyBytesInFlight`, or refuses it with
   * `overloaded` (before it is read, so nothing was done). Bodies under `smallBodyBytes` are
   * counted but never refused (a progress tick, a claim: most requests, and cheap); a larger one
   * is always admitted when nothing else is in flight, so one as large as its route allows still
   * passes on an idle node. The release returned gives the bytes back; calling it again does nothing.
   */
  admitBody(bytes: number): () => void {
    const limit = this.settings.maxBodyBytesInFlight
    if (bytes >= smallBodyBytes && this.#bodyBytes > 0 && this.#bodyBytes + bytes > limit) {
      this.metrics.limitRejections.inc({ limit: 'body_bytes_in_flight' })
      throw new JobwireError('overloaded', { bytes: this.#bodyBytes, size: bytes, limit, retryAfter: 1 })
    }
    this.#bodyBytes += bytes
    let held = true
    return () => {
      if (!held) return
      held = false
      this.#bodyBytes -= bytes
    }
  }

  /** The value `byTier` sets for `tenant`'s tier, if any. */
  #forTier(byTier: Record<string, number> | undefined, tenant: string | null): number | undefined {
    if (byTier === undefined || tenant === null) return undefined
    return byName(byTier, byName(this.settings.tenantTiers, tenant) ?? tenant)
  }

  /**
   * Counts a job of `type` created on behalf of `owner` (people only: jobs without an owner are
   * not counted): against the type's own limit when it has one, else the tenant tier's or the global one.
   */
  async countCreation(owner: { tenant: string; user: string } | null, type?: string): Promise<void> {
    if (owner === null) return
    const { createWindowMs } = this.settings
    const byType = type === undefined ? undefined : byName(this.settings.createLimitByType, type)
    const createLimit = byType ?? this.#forTier(this.settings.createLimitByTier, owner.tenant) ?? this.settings.createLimit
    const person = personKey(owner.tenant, owner.user)
    const result = await this.rate.hit(byType === undefined ? `create:${person}` : `create:${person}:type:${type}`, createLimit, createWindowMs)
    if (!result.ok) {
      this.metrics.limitRejections.inc({ limit: 'create_per_user' })
      throw new JobwireError('rate_limited', {
        limit: 'job creations',
        max: createLimit,
        window: `${Math.round(createWindowMs / 1000)} s`,
        retryAfter: Math.max(1, Math.ceil(result.retryAfterMs / 1000)),
      })
    }
  }

  /**
   * Takes the slots an open stream (SSE, WebSocket, long-poll) needs: one of this node's
   * connections, and for people one of their streams and one of their address's, counted on every
   * node. The node's slot is taken before anything is awaited, so concurrent opens see each other.
   * A WebSocket opened without a credential (`null`: its subscriptions bring their own) counts
   * against its address.
   */
  async openStream(principal: Principal | null, ip: string, type?: string): Promise<StreamSlot> {
    const { maxConnections, streamsPerIp } = this.settings
    const perType = type === undefined ? undefined : byName(this.settings.streamsPerUserByType, type)
    if (this.#connections >= maxConnections) {
      this.metrics.limitRejections.inc({ limit: 'connections' })
      throw new JobwireError('server_busy', { max: maxConnections, retryAfter: 1 })
    }
    this.#connections++
    let person: (() => void) | null = null
    let address: (() => void) | null = null
    let ofType: (() => void) | null = null
    try {
      person = await this.takePersonSlot(principal)
      const subject = limitSubjectOf(principal)
      if (subject !== null && perType !== undefined) {
        ofType = await this.streams.acquire(`streams:${subject}:type:${type}`, perType)
        if (ofType === null) {
          this.metrics.limitRejections.inc({ limit: 'streams_per_user' })
          throw new JobwireError('too_many_streams', { scope: `this user's "${type}" jobs`, max: perType, retryAfter: 5 })
        }
      }
      if (principal === null || principal.kind !== 'key') {
        address = await this.streams.acquire(`streams-ip:${ip}`, streamsPerIp)
        if (address === null) {
          this.metrics.limitRejections.inc({ limit: 'streams_per_ip' })
          throw new JobwireError('too_many_streams', { scope: 'this address', max: streamsPerIp, retryAfter: 5 })
        }
      }
    } catch (error) {
      this.#connections--
      person?.()
      ofType?.()
      throw error
    }
    let open = true
    return {
      release: () => {
        if (!open) return
        open = false
        this.#connections--
        person?.()
        ofType?.()
        address?.()
      },
      moveTo: async (next) => {
        if (!open || limitSubjectOf(next) === limitSubjectOf(principal)) return
        const taken = await this.takePersonSlot(next)
        if (!open) {
          taken?.()
          return
        }
        person?.()
        person = taken
        principal = next
      },
    }
  }

  /** One of the person's streams (null for API keys, which are not counted per person). */
  async takePersonSlot(principal: Principal | null): Promise<(() => void) | null> {
    const subject = limitSubjectOf(principal)
    if (subject === null) return null
    const streamsPerUser = this.#forTier(this.settings.streamsPerUserByTier, principal === null || principal.kind === 'key' ? null : principal.tenant) ?? this.settings.streamsPerUser
    const slot = await this.streams.acquire(`streams:${subject}`, streamsPerUser)
    if (slot === null) {
      this.metrics.limitRejections.inc({ limit: 'streams_per_user' })
      throw new JobwireError('too_many_streams', { scope: 'this user', max: streamsPerUser, retryAfter: 5 })
    }
    return slot
  }
}

/** Whose streams a principal's count against: a person (however their credential says so), a token, or nobody (API keys). */
function limitSubjectOf(principal: Principal | null): string | null {
  return principal === null || principal.kind === 'key' ? null : limitSubject(principal)
}
