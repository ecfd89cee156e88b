import { randomBytes } from 'node:crypto'
import { JobwireError } from '@jobwire/protocol'
import type { RedisConnection, Warn } from './connection.js'
import type { RedisKeys } from './keys.js'
import type { RedisNotifications } from './notifications.js'

/**
 * How far a job's seq jumps when its history may have been lost (its epoch changes): further
 * than any job gets in the window between Redis's last durable write and its failure.
 */
export const epochSeqGap = 1_000_000

export interface RedisEpochsOptions {
  connection: RedisConnection
  keys: RedisKeys
  notifications: RedisNotifications
  /** This node's name (candidate generations, the probe channel). */
  node: string
  probeIntervalMs: number
  onWarning: Warn
  /** Whatever Redis held before this connection it may hold no longer: forget what was kept of it. */
  forget: () => void
}

/**
 * Which Redis this node talks to and whether its connections work. On every (re)connect and every
 * probe interval it reads Redis's `run_id` and the deployment's generation (lua/refresh-generation.lua);
 * a change means Redis restarted, failed over or lost our keys, so jobs touched from then on start
 * a new epoch (the scripts see the new generation) and every local watcher re-reads. The probe also
 * publishes a token on this node's own channel: one that never comes back means the pub/sub
 * connection is dead though its socket looks open, so it is made again.
 */
export class RedisEpochs {
  readonly #connection: RedisConnection
  readonly #keys: RedisKeys
  readonly #notifications: RedisNotifications
  readonly #options: RedisEpochsOptions
  readonly #probeChannel: string
  /** The Redis server's run_id, read on every (re)connect: null until known. */
  #runId: string | null = null
  /** The deployment's generation as last seen: a change means Redis lost writes. */
  #generation: string | null = null
  #candidates = 0
  #clientReady = false
  readonly #probeTimer: NodeJS.Timeout
  readonly #probeTimeoutMs: number
  #probing = false
  #probeSent = 0
  #probeSentAt = 0
  #probeHeard = 0

  constructor(options: RedisEpochsOptions) {
    this.#options = options
    this.#connection = options.connection
    this.#keys = options.keys
    this.#notifications = options.notifications
    this.#probeChannel = this.#keys.probeChannel(options.node)
    this.#probeTimeoutMs = Math.max(1000, options.probeIntervalMs)
    const client = this.#connection.client
    client.on('ready', () => void this.#clientConnected())
    client.on('close', () => {
      this.#clientReady = false
    })
    this.#probeTimer = setInterval(() => void this.#probe(), options.probeIntervalMs)
    this.#probeTimer.unref()
  }

  /** The command connection works and this node knows which Redis it talks to. */
  get ready(): boolean {
    return this.#clientReady && this.#runId !== null
  }

  /** Whether a probe published on this node's channel is overdue (the pub/sub connection may be dead). */
  get overdue(): boolean {
    return this.#probeSent > this.#probeHeard && Date.now() - this.#probeSentAt > this.#probeTimeoutMs
  }

  /** A probe token came back on this node's channel. */
  heard(token: number): void {
    this.#probeHeard = Math.max(this.#probeHeard, token)
  }

  /** The generation a script starts if it finds none (Redis lost our keys since the last probe). */
  candidate(): string {
    if (this.#runId === null) throw new JobwireError('unavailable', { reason: 'Redis is unreachable' })
    return `${this.#runId}/${this.#options.node}.${++this.#candidates}`
  }

  close(): void {
    clearInterval(this.#probeTimer)
  }

  async #clientConnected(): Promise<void> {
    try {
      await this.#refreshGeneration(true)
      if (this.#connection.client.status !== 'ready' || this.#connection.closed) return
      this.#clientReady = true
      this.#connection.resetWarnings() // the next outage is reported again
      this.#connection.changed()
      this.#notifications.resyncWhenReady()
    } catch (error) {
      // The probe tries again.
      this.#connection.warn('could not identify the Redis server', { error: (error as Error).message })
    }
  }

  /**
   * Reads which Redis this is (`run_id` changes on every restart and differs after a failover)
   * and the deployment's generation, starting a new one if Redis restarted or lost it. A change
   * means Redis may have lost writes: jobs touched from now on start a new epoch (the scripts see
   * the new generation), and every local watcher re-reads. What this node kept of the jobs it
   * committed is forgotten then, and on every new connection (`connected`) — not on each probe
   * that finds the same Redis: that dropped every busy job's kept state every two seconds, and
   * each job's next write read it back (a third of all writes, measured at 2,000 events/s).
   */
  async #refreshGeneration(connected = false): Promise<void> {
    const info = await this.#connection.client.info('server')
    const runId = /run_id:(\w+)/.exec(info)?.[1] ?? 'unknown'
    const token = randomBytes(9).toString('base64url')
    const generation = String(await this.#connection.script('refreshGeneration')(1, this.#keys.generation, runId, token))
    const previousRunId = this.#runId
    this.#runId = runId
    const previous = this.#generation
    this.#generation = generation
    // Whatever Redis held before, it may hold no longer: the next writes read first.
    if (connected || previousRunId !== runId || previous !== generation) this.#options.forget()
    if (previous !== null && previous !== generation) {
      this.#options.onWarning('Redis restarted, failed over or lost our keys: jobs that survived start a new epoch, watchers re-read', {
        previous,
        current: generation,
      })
      this.#notifications.resync()
    }
  }

  /**
   * Every probe interval: a probe published last time that never came back means the pub/sub
   * connection is dead though its socket looks open, so it is dropped and made again (which
   * resubscribes and has every watcher re-read). Also re-reads which Redis this is.
   */
  async #probe(): Promise<void> {
    if (this.#connection.closed || this.#probing) return
    this.#probing = true
    const notifications = this.#notifications
    const client = this.#connection.client
    try {
      if (notifications.subscriberReady && this.overdue) {
        this.#options.onWarning('the Redis pub/sub connection stopped delivering; reconnecting it', { node: this.#options.node })
        this.#probeHeard = this.#probeSent
        notifications.reconnect()
      }
      if (client.status !== 'ready') return
      await this.#refreshGeneration()
      if (!this.#clientReady && client.status === 'ready') {
        this.#clientReady = true
        this.#connection.changed()
      }
      notifications.resyncWhenReady()
      notifications.resubscribeUnconfirmed()
      if (notifications.ready && this.#probeSent <= this.#probeHeard) {
        const token = this.#probeSent + 1
        const receivers = await client.publish(this.#probeChannel, String(token))
        this.#probeSent = token
        this.#probeSentAt = Date.now()
        if (receivers === 0) {
          // Redis has no subscriber on our channel: the subscription was lost without a word.
          this.#options.onWarning('Redis dropped this node\'s subscriptions; reconnecting the pub/sub connection', { node: this.#options.node })
          this.#probeHeard = this.#probeSent
          notifications.reconnect()
        }
      }
    } catch (error) {
      // A command connection that stopped answering may be dead without knowing: make it anew.
      if (error instanceof Error && /timed out/i.test(error.message)) client.disconnect(true)
    } finally {
      this.#probing = false
    }
  }
}
