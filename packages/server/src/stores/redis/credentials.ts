import { randomBytes } from 'node:crypto'
import type { ApiKeyRecord, KeyStore, RateCounter, StreamCounter } from '../../core/keys.js'
import { configDefaults } from '../../config.js'
import { RedisConnection } from './connection.js'
import { RedisKeys } from './keys.js'

export interface RedisCredentialsOptions {
  /** The Redis the store uses. */
  url: string
  /** The store's prefix (default `jobwire`). */
  prefix?: string
  /** A command unanswered this long fails with `unavailable` (default 3000 ms). */
  commandTimeoutMs?: number
  /**
   * How long a node's stream slots outlive its last renewal (default 30 s; renewed every third of
   * it). A node killed with `kill -9` holds its slots this long, never longer.
   */
  streamLeaseMs?: number
  /** How often revocations are also looked up, in case a pub/sub message was missed (default 5 s). */
  revocationCheckMs?: number
  onWarning?: (message: string, details?: Record<string, unknown>) => void
}

/**
 * API keys, rate limits and stream limits shared by every node of a Redis deployment, under the
 * store's prefix (layout in keys.ts; scripts in lua/).
 *
 * - Keys: a hash per key; a revocation is recorded and published on `P:ch:revoked`, so each node
 *   closes the streams it holds for that key at once. A node also re-reads the revoked set when its
 *   pub/sub connection comes back and whenever the set's size differs from what it heard (checked
 *   every few seconds), so a lost message delays a close by seconds, never forever.
 * - Rate limits: one fixed-window counter per subject, INCR and PEXPIRE in one script.
 * - Stream limits: each node keeps its own counts in memory (the truth for its own sockets) and
 *   mirrors them into a hash of its own that expires with a lease it renews; a zset lists the
 *   nodes by lease. A limit check sums the live nodes' counts. A node killed with `kill -9` stops
 *   renewing, so its slots lapse after `streamLeaseMs`; a node whose hash lapsed or was lost
 *   (Redis restarted) rewrites it from memory on its next renewal.
 *
 * It has its own two connections (commands, and pub/sub for revocations), with the store's
 * fail-fast settings: while Redis is away every call fails with `unavailable` (503).
 */
export class RedisCredentials implements KeyStore, RateCounter, StreamCounter {
  readonly #keys: RedisKeys
  readonly #connection: RedisConnection
  readonly #node = randomBytes(6).toString('base64url')
  readonly #leaseMs: number
  readonly #revokeListeners = new Set<(keyId: string) => void>()
  /** Revocations already announced here (a revocation is forever: each is announced once). */
  readonly #announced = new Set<string>()
  /** Size of the revoked set when last read in full. */
  #revokedSeen = -1
  /** The pub/sub connection (re)subscribed: what was published before may have been missed. */
  #fullCheckPending = false
  /** This node's open streams per subject: what its hash in Redis must say. */
  readonly #open = new Map<string, number>()
  /** The hash may disagree with `#open` (a write failed, or it lapsed): rewrite it on the next renewal. */
  #dirty = false
  readonly #timers: NodeJS.Timeout[]
  #renewing = false
  #checking = false

  constructor(options: RedisCredentialsOptions) {
    this.#keys = new RedisKeys(options.prefix ?? configDefaults.redisPrefix)
    this.#leaseMs = options.streamLeaseMs ?? 30_000
    this.#connection = new RedisConnection({
      url: options.url,
      commandTimeoutMs: options.commandTimeoutMs ?? 3000,
      name: `jobwire:${this.#node}:access`,
      subscriberSuffix: 'revocations',
      clientLabel: ' (credentials)',
      subscriberLabel: ' (revocations)',
      onWarning: options.onWarning ?? (() => {}),
    })
    this.#connection.client.on('ready', () => {
      this.#connection.resetWarnings()
      this.#dirty = true // Redis may have restarted without our hash
      void this.#renew()
      void this.#checkRevocations(false)
    })
    const subscriber = this.#connection.subscriber
    subscriber.on('ready', () => {
      subscriber.subscribe(this.#keys.revokedChannel).then(
        () => void this.#checkRevocations(true),
        () => subscriber.disconnect(true),
      )
    })
    subscriber.on('message', (_channel: string, keyId: string) => this.#announce(keyId))
    const checkMs = options.revocationCheckMs ?? 5_000
    this.#timers = [setInterval(() => void this.#renew(), Math.max(100, Math.floor(this.#leaseMs / 3))), setInterval(() => void this.#checkRevocations(false), checkMs)]
    for (const timer of this.#timers) timer.unref()
  }

  /** Resolves true once both connections are up and subscribed (false after `timeoutMs`). */
  async waitUntilReady(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs
    while (!this.#connection.closed && Date.now() < deadline) {
      if (this.#connection.client.status === 'ready' && this.#connection.subscriber.status === 'ready' && this.#revokedSeen >= 0) return true
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    return false
  }

  // --- KeyStore ------------------------------------------------------------------------------

  async create(record: ApiKeyRecord): Promise<void> {
    const { revokedAt, ...kept } = record
    const fields: Record<string, string> = { record: JSON.stringify(kept) }
    if (revokedAt !== null) fields.revokedAt = revokedAt
    const replies = await this.#connection.guard(() =>
      this.#connection.client.multi().hset(this.#keys.apiKey(record.id), fields).zadd(this.#keys.apiKeys, Date.parse(record.createdAt) || Date.now(), record.id).exec(),
    )
    const failed = replies?.find(([error]) => error !== null)?.[0]
    if (replies === null || failed !== undefined) throw this.#connection.translate(failed ?? new Error('the transaction was aborted'))
  }

  async get(id: string): Promise<ApiKeyRecord | null> {
    const [record, revokedAt] = await this.#connection.guard(() => this.#connection.client.hmget(this.#keys.apiKey(id), 'record', 'revokedAt'))
    return toRecord(record ?? null, revokedAt ?? null)
  }

  async list(): Promise<ApiKeyRecord[]> {
    const ids = await this.#connection.guard(() => this.#connection.client.zrange(this.#keys.apiKeys, '0', '-1'))
    if (ids.length === 0) return []
    const pipeline = this.#connection.client.pipeline()
    for (const id of ids) pipeline.hmget(this.#keys.apiKey(id), 'record', 'revokedAt')
    const replies = (await this.#connection.guard(() => pipeline.exec())) ?? []
    return replies.flatMap(([error, fields]) => {
      if (error !== null) throw this.#connection.translate(error)
      const [record, revokedAt] = fields as (string | null)[]
      const found = toRecord(record ?? null, revokedAt ?? null)
      return found === null ? [] : [found]
    })
  }

  async revoke(id: string, at: string): Promise<boolean> {
    // Announced here by the caller already: the echo from pub/sub is not announced again.
    this.#announced.add(id)
    const reply = await this.#connection.run('revoke', [this.#keys.apiKey(id), this.#keys.revoked], [id, at, this.#keys.revokedChannel])
    return reply === 1
  }

  /** Calls `listener` with the id of each key revoked through another node, once, as soon as this node hears of it. */
  watchRevocations(listener: (keyId: string) => void): () => void {
    this.#revokeListeners.add(listener)
    return () => this.#revokeListeners.delete(listener)
  }

  async close(): Promise<void> {
    if (this.#connection.closed) return
    for (const timer of this.#timers) clearInterval(timer)
    // Give this node's slots back now rather than when its lease lapses.
    if (this.#connection.client.status === 'ready') {
      await this.#connection.client
        .multi()
        .del(this.#keys.streamNode(this.#node))
        .zrem(this.#keys.streamNodes, this.#node)
        .exec()
        .catch(() => undefined)
    }
    this.#connection.close()
  }

  // --- RateCounter ---------------------------------------------------------------------------

  async hit(key: string, max: number, windowMs: number): Promise<{ ok: boolean; retryAfterMs: number }> {
    const [ok, retryAfterMs] = (await this.#connection.run('hit', [this.#keys.rate(key)], [max, windowMs])) as [number, number]
    return { ok: ok === 1, retryAfterMs: Number(retryAfterMs) }
  }

  // --- StreamCounter -------------------------------------------------------------------------

  async acquire(key: string, max: number): Promise<(() => void) | null> {
    // Counted here first, so that concurrent acquires on this node each ask for one more.
    const want = (this.#open.get(key) ?? 0) + 1
    this.#open.set(key, want)
    let reply: unknown
    try {
      reply = await this.#connection.run(
        'acquire',
        [this.#keys.streamNodes, this.#keys.streamNode(this.#node)],
        [this.#node, key, want, max, this.#leaseMs, this.#keys.streamNode('')],
      )
    } catch (error) {
      this.#drop(key)
      throw error
    }
    if (reply === 0) {
      this.#drop(key)
      return null
    }
    if (reply === 2) {
      this.#dirty = true
      void this.#renew()
    }
    let released = false
    return () => {
      if (released) return
      released = true
      this.#drop(key)
    }
  }

  /** Open streams of `key` on every live node. */
  async count(key: string): Promise<number> {
    return Number(await this.#connection.run('count', [this.#keys.streamNodes], [key, this.#keys.streamNode('')]))
  }

  /** One slot of `key` fewer here, mirrored to Redis (commands leave in order, so the last one sent wins). */
  #drop(key: string): void {
    const left = (this.#open.get(key) ?? 1) - 1
    if (left <= 0) this.#open.delete(key)
    else this.#open.set(key, left)
    if (this.#connection.closed) return
    this.#connection.run('setCount', [this.#keys.streamNode(this.#node)], [key, left, this.#leaseMs]).catch(() => {
      this.#dirty = true
    })
  }

  async #renew(): Promise<void> {
    if (this.#connection.closed || this.#renewing || this.#connection.client.status !== 'ready') return
    this.#renewing = true
    try {
      for (let round = 0; round < 2; round++) {
        const rewrite = this.#dirty
        this.#dirty = false
        const pairs = rewrite ? [...this.#open].flatMap(([subject, count]) => [subject, count]) : []
        const reply = await this.#connection.run(
          'renew',
          [this.#keys.streamNodes, this.#keys.streamNode(this.#node)],
          [this.#node, this.#leaseMs, rewrite ? '1' : '0', ...pairs],
        )
        if (reply === 1 || this.#open.size === 0) return
        this.#dirty = true // the hash lapsed or Redis lost it: write it again now
      }
    } catch {
      this.#dirty = true
    } finally {
      this.#renewing = false
    }
  }

  // --- revocations ---------------------------------------------------------------------------

  #announce(keyId: string): void {
    if (this.#announced.has(keyId)) return
    this.#announced.add(keyId)
    for (const listener of this.#revokeListeners) listener(keyId)
  }

  /** Reads the revoked set when forced (after a reconnect) or when its size says a message was missed. */
  async #checkRevocations(force: boolean): Promise<void> {
    if (force) this.#fullCheckPending = true
    if (this.#connection.closed || this.#checking || this.#connection.client.status !== 'ready') return
    this.#checking = true
    try {
      const full = this.#fullCheckPending
      this.#fullCheckPending = false
      const size = await this.#connection.client.zcard(this.#keys.revoked)
      if (full || size !== this.#revokedSeen) {
        const ids = await this.#connection.client.zrange(this.#keys.revoked, '0', '-1')
        for (const id of ids) this.#announce(id)
        this.#revokedSeen = ids.length
      }
    } catch {
      this.#fullCheckPending = true // the next check tries again
    } finally {
      this.#checking = false
    }
  }
}

function toRecord(record: string | null, revokedAt: string | null): ApiKeyRecord | null {
  if (record === null) return null
  return { ...(JSON.parse(record) as Omit<ApiKeyRecord, 'revokedAt'>), revokedAt }
}
