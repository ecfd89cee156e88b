import { JobwireError } from '@jobwire/protocol'
import type { RateCounter, StreamCounter } from '../core/keys.js'
import { limitSubject, type Principal } from '../core/scopes.js'
import type { Metrics } from '../metrics.js'

export interface LimitSettings {
  /** Jobs created per owner (a person) per window. */
  createLimit: number
  createWindowMs: number
  /** Open streams per person (user JWT or subscription token); API keys are server-side and not counted here. */
  streamsPerUser: number
  /** Open streams per client IP, for people's credentials. */
  streamsPerIp: number
  /** Open streams on this node, whoever holds them. */
  maxConnections: number
}

/**
 * The resource limits, counted through RateCounter/StreamCounter so that the Redis backend can
 * count them across nodes. Each refusal is a 429 (with Retry-After) or 503 and a metric.
 */
export class Limits {
  #connections = 0

  constructor(
    readonly settings: LimitSettings,
    private readonly rate: RateCounter,
    private readonly streams: StreamCounter,
    private readonly metrics: Metrics,
  ) {}

  get connections(): number {
    return this.#connections
  }

  /** Counts a job created on behalf of `owner` (people only: jobs without an owner are not counted). */
  async countCreation(owner: { tenant: string; user: string } | null): Promise<void> {
    if (owner === null) return
    const { createLimit, createWindowMs } = this.settings
    const result = await this.rate.hit(`create:${owner.tenant}:${owner.user}`, createLimit, createWindowMs)
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

  /** Takes the slots an open stream needs; the returned function gives them back (idempotent). */
  async openStream(principal: Principal, ip: string): Promise<() => void> {
    const { maxConnections, streamsPerUser, streamsPerIp } = this.settings
    if (this.#connections >= maxConnections) {
      this.metrics.limitRejections.inc({ limit: 'connections' })
      throw new JobwireError('server_busy', { max: maxConnections, retryAfter: 1 })
    }
    const releases: (() => void)[] = []
    const releaseAll = (): void => {
      for (const release of releases.splice(0)) release()
    }
    if (principal.kind !== 'key') {
      const perUser = await this.streams.acquire(`streams:${limitSubject(principal)}`, streamsPerUser)
      if (perUser === null) {
        this.metrics.limitRejections.inc({ limit: 'streams_per_user' })
        throw new JobwireError('too_many_streams', { scope: 'this user', max: streamsPerUser, retryAfter: 5 })
      }
      releases.push(perUser)
      const perIp = await this.streams.acquire(`streams-ip:${ip}`, streamsPerIp)
      if (perIp === null) {
        releaseAll()
        this.metrics.limitRejections.inc({ limit: 'streams_per_ip' })
        throw new JobwireError('too_many_streams', { scope: 'this address', max: streamsPerIp, retryAfter: 5 })
      }
      releases.push(perIp)
    }
    this.#connections++
    let open = true
    return () => {
      if (!open) return
      open = false
      this.#connections--
      releaseAll()
    }
  }
}
