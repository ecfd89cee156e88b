import { createHash, randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import { JobwireError } from '@jobwire/protocol'
import type { ApiKeyRecord, KeyStore, RateCounter, StreamCounter } from '../core/keys.js'
import { configDefaults } from '../config.js'
import { RedisKeys } from './redis-keys.js'
import { failFastConnection, redisFailure } from './redis-store.js'

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

interface Script {
  lua: string
  sha: string
}

function script(lua: string): Script {
  return { lua, sha: createHash('sha1').update(lua).digest('hex') }
}

/** Milliseconds on Redis's clock, so that nodes with skewed clocks agree on when a lease lapses. */
const redisNow = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

const scripts = {
  /**
   * Fixed window: counts a hit unless `max` were counted; the first hit starts the window.
   * KEYS: counter. ARGV: max, window ms. Returns {1, 0}, or {0, ms until the window ends}.
   */
  hit: script(`
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
local ttl = redis.call('PTTL', KEYS[1])
if n >= tonumber(ARGV[1]) then
  if ttl < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    ttl = tonumber(ARGV[2])
  end
  return {0, ttl}
end
redis.call('INCR', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return {1, 0}
`),
  /**
   * Marks a key revoked (the first time only), records when, and announces it to every node.
   * KEYS: key record, revoked zset. ARGV: id, revokedAt (ISO), channel. Returns 0 if there is no such key.
   */
  revoke: script(`${redisNow}
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HSETNX', KEYS[1], 'revokedAt', ARGV[2]) == 1 then redis.call('ZADD', KEYS[2], now, ARGV[1]) end
redis.call('PUBLISH', ARGV[3], ARGV[1])
return 1
`),
  /**
   * Takes a stream slot of a subject if the live nodes hold fewer than `max` together. This node's
   * own count is the caller's (`want`, including this slot): it keeps the truth locally.
   * KEYS: nodes zset, this node's hash. ARGV: node, subject, want, max, lease ms, node hash start.
   * Returns 0 (full), 1 (taken), or 2 (taken, but this node's hash had lapsed: rewrite it).
   */
  acquire: script(`${redisNow}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local others = 0
for _, node in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if node ~= ARGV[1] then others = others + tonumber(redis.call('HGET', ARGV[6] .. node, ARGV[2]) or '0') end
end
if others + tonumber(ARGV[3]) > tonumber(ARGV[4]) then return 0 end
local existed = redis.call('EXISTS', KEYS[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[5]), ARGV[1])
if existed == 0 then return 2 end
return 1
`),
  /** Sets this node's count of a subject (0 deletes it). KEYS: this node's hash. ARGV: subject, count, lease ms. */
  setCount: script(`
if tonumber(ARGV[2]) > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 1
`),
  /**
   * Renews this node's lease; with `rewrite`, first replaces its hash with the counts given.
   * KEYS: nodes zset, this node's hash. ARGV: node, lease ms, rewrite (1/0), then subject, count pairs.
   * Returns 0 when the hash is gone (it lapsed, or Redis lost it), else 1.
   */
  renew: script(`${redisNow}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[2])
  for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
end
return redis.call('PEXPIRE', KEYS[2], ARGV[2])
`),
  /** Open streams of a subject on every live node. KEYS: nodes zset. ARGV: subject, node hash start. */
  count: script(`${redisNow}
local total = 0
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')) do
  total = total + tonumber(redis.call('HGET', ARGV[2] .. node, ARGV[1]) or '0')
end
return total
`),
}

/**
 * API keys, rate limits and stream limits shared by every node of a Redis deployment, under the
 * store's prefix (layout in redis-keys.ts).
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
  readonly #client: Redis
  readonly #subscriber: Redis
  readonly #node = randomBytes(6).toString('base64url')
  readonly #leaseMs: number
  readonly #onWarning: (message: string, details?: Record<string, unknown>) => void
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
  #closed = false
  #lastWarning = ''

  constructor(options: RedisCredentialsOptions) {
    this.#keys = new RedisKeys(options.prefix ?? configDefaults.redisPrefix)
    this.#leaseMs = options.streamLeaseMs ?? 30_000
    this.#onWarning = options.onWarning ?? (() => {})
    const connection = failFastConnection(options.commandTimeoutMs ?? 3000)
    this.#client = new Redis(options.url, { ...connection, connectionName: `jobwire:${this.#node}:access` })
    this.#subscriber = new Redis(options.url, { ...connection, connectionName: `jobwire:${this.#node}:revocations` })
    this.#client.on('error', (error: Error) => this.#warn('Redis connection error (credentials)', { error: error.message }))
    this.#subscriber.on('error', (error: Error) => this.#warn('Redis pub/sub connection error (revocations)', { error: error.message }))
    this.#client.on('ready', () => {
      this.#lastWarning = ''
      this.#dirty = true // Redis may have restarted without our hash
      void this.#renew()
      void this.#checkRevocations(false)
    })
    this.#subscriber.on('ready', () => {
      this.#subscriber.subscribe(this.#keys.revokedChannel).then(
        () => void this.#checkRevocations(true),
        () => this.#subscriber.disconnect(true),
      )
    })
    this.#subscriber.on('message', (_channel: string, keyId: string) => this.#announce(keyId))
    const checkMs = options.revocationCheckMs ?? 5_000
    this.#timers = [setInterval(() => void this.#renew(), Math.max(100, Math.floor(this.#leaseMs / 3))), setInterval(() => void this.#checkRevocations(false), checkMs)]
    for (const timer of this.#timers) timer.unref()
  }

  /** Resolves true once both connections are up and subscribed (false after `timeoutMs`). */
  async waitUntilReady(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs
    while (!this.#closed && Date.now() < deadline) {
      if (this.#client.status === 'ready' && this.#subscriber.status === 'ready' && this.#revokedSeen >= 0) return true
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    return false
  }

  // --- KeyStore ------------------------------------------------------------------------------

  async create(record: ApiKeyRecord): Promise<void> {
    const { revokedAt, ...kept } = record
    const fields: Record<string, string> = { record: JSON.stringify(kept) }
    if (revokedAt !== null) fields.revokedAt = revokedAt
    const replies = await this.#guard(() =>
      this.#client.multi().hset(this.#keys.apiKey(record.id), fields).zadd(this.#keys.apiKeys, Date.parse(record.createdAt) || Date.now(), record.id).exec(),
    )
    const failed = replies?.find(([error]) => error !== null)?.[0]
    if (replies === null || failed !== undefined) throw this.#translate(failed ?? new Error('the transaction was aborted'))
  }

  async get(id: string): Promise<ApiKeyRecord | null> {
    const [record, revokedAt] = await this.#guard(() => this.#client.hmget(this.#keys.apiKey(id), 'record', 'revokedAt'))
    return toRecord(record ?? null, revokedAt ?? null)
  }

  async list(): Promise<ApiKeyRecord[]> {
    const ids = await this.#guard(() => this.#client.zrange(this.#keys.apiKeys, '0', '-1'))
    if (ids.length === 0) return []
    const pipeline = this.#client.pipeline()
    for (const id of ids) pipeline.hmget(this.#keys.apiKey(id), 'record', 'revokedAt')
    const replies = (await this.#guard(() => pipeline.exec())) ?? []
    return replies.flatMap(([error, fields]) => {
      if (error !== null) throw this.#translate(error)
      const [record, revokedAt] = fields as (string | null)[]
      const found = toRecord(record ?? null, revokedAt ?? null)
      return found === null ? [] : [found]
    })
  }

  async revoke(id: string, at: string): Promise<boolean> {
    // Announced here by the caller already: the echo from pub/sub is not announced again.
    this.#announced.add(id)
    const reply = await this.#eval(scripts.revoke, [this.#keys.apiKey(id), this.#keys.revoked], [id, at, this.#keys.revokedChannel])
    return reply === 1
  }

  /** Calls `listener` with the id of each key revoked through another node, once, as soon as this node hears of it. */
  watchRevocations(listener: (keyId: string) => void): () => void {
    this.#revokeListeners.add(listener)
    return () => this.#revokeListeners.delete(listener)
  }

  async close(): Promise<void> {
    if (this.#closed) return
    for (const timer of this.#timers) clearInterval(timer)
    // Give this node's slots back now rather than when its lease lapses.
    if (this.#client.status === 'ready') {
      await this.#client
        .multi()
        .del(this.#keys.streamNode(this.#node))
        .zrem(this.#keys.streamNodes, this.#node)
        .exec()
        .catch(() => undefined)
    }
    this.#closed = true
    this.#client.disconnect()
    this.#subscriber.disconnect()
  }

  // --- RateCounter ---------------------------------------------------------------------------

  async hit(key: string, max: number, windowMs: number): Promise<{ ok: boolean; retryAfterMs: number }> {
    const [ok, retryAfterMs] = (await this.#eval(scripts.hit, [this.#keys.rate(key)], [max, windowMs])) as [number, number]
    return { ok: ok === 1, retryAfterMs: Number(retryAfterMs) }
  }

  // --- StreamCounter -------------------------------------------------------------------------

  async acquire(key: string, max: number): Promise<(() => void) | null> {
    // Counted here first, so that concurrent acquires on this node each ask for one more.
    const want = (this.#open.get(key) ?? 0) + 1
    this.#open.set(key, want)
    let reply: unknown
    try {
      reply = await this.#eval(
        scripts.acquire,
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
    return Number(await this.#eval(scripts.count, [this.#keys.streamNodes], [key, this.#keys.streamNode('')]))
  }

  /** One slot of `key` fewer here, mirrored to Redis (commands leave in order, so the last one sent wins). */
  #drop(key: string): void {
    const left = (this.#open.get(key) ?? 1) - 1
    if (left <= 0) this.#open.delete(key)
    else this.#open.set(key, left)
    if (this.#closed) return
    this.#eval(scripts.setCount, [this.#keys.streamNode(this.#node)], [key, left, this.#leaseMs]).catch(() => {
      this.#dirty = true
    })
  }

  async #renew(): Promise<void> {
    if (this.#closed || this.#renewing || this.#client.status !== 'ready') return
    this.#renewing = true
    try {
      for (let round = 0; round < 2; round++) {
        const rewrite = this.#dirty
        this.#dirty = false
        const pairs = rewrite ? [...this.#open].flatMap(([subject, count]) => [subject, count]) : []
        const reply = await this.#eval(
          scripts.renew,
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
    if (this.#closed || this.#checking || this.#client.status !== 'ready') return
    this.#checking = true
    try {
      const full = this.#fullCheckPending
      this.#fullCheckPending = false
      const size = await this.#client.zcard(this.#keys.revoked)
      if (full || size !== this.#revokedSeen) {
        const ids = await this.#client.zrange(this.#keys.revoked, '0', '-1')
        for (const id of ids) this.#announce(id)
        this.#revokedSeen = ids.length
      }
    } catch {
      this.#fullCheckPending = true // the next check tries again
    } finally {
      this.#checking = false
    }
  }

  // --- plumbing ------------------------------------------------------------------------------

  async #eval(which: Script, keys: string[], args: (string | number)[]): Promise<unknown> {
    return this.#guard(async () => {
      try {
        return await this.#client.evalsha(which.sha, keys.length, ...keys, ...args)
      } catch (error) {
        if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error
        // Sent again after commands that followed it: this node's slot counts may land out of order.
        this.#dirty = true
        return this.#client.eval(which.lua, keys.length, ...keys, ...args)
      }
    })
  }

  async #guard<T>(call: () => Promise<T>): Promise<T> {
    if (this.#closed) throw new JobwireError('unavailable', { reason: 'the store is closed' })
    if (this.#client.status !== 'ready') throw new JobwireError('unavailable', { reason: 'Redis is unreachable' })
    try {
      return await call()
    } catch (error) {
      throw this.#translate(error)
    }
  }

  #translate(error: unknown): unknown {
    return redisFailure(error, this.#closed)
  }

  #warn(message: string, details: Record<string, unknown>): void {
    const text = `${message} ${JSON.stringify(details)}`
    if (text === this.#lastWarning || this.#closed) return
    this.#lastWarning = text
    this.#onWarning(message, details)
  }
}

function toRecord(record: string | null, revokedAt: string | null): ApiKeyRecord | null {
  if (record === null) return null
  return { ...(JSON.parse(record) as Omit<ApiKeyRecord, 'revokedAt'>), revokedAt }
}
