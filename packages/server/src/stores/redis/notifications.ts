import { JobwireError, type JobEvent, type JobEventOf, type Owner } from '@jobwire/protocol'
import { FanOut } from '../../core/fan-out.js'
import type { EventListener, OwnerListener, Unsubscribe } from '../../core/store.js'
import type { RedisConnection } from './connection.js'
import type { RedisKeys } from './keys.js'

interface Channel {
  /** Bumped with every SUBSCRIBE sent, so only the newest reply confirms. */
  token: number
  confirmed: boolean
  pending: boolean
}

/** Own commits remembered per job until Redis echoes them (more means echoes were lost). */
const maxEchoes = 256
/** Messages heard per job, for an own commit whose echo beats its reply (a handful is plenty). */
const maxHeard = 16

/** Adds `message` to the job's list, dropping the oldest past `max`. */
function remember(lists: Map<string, string[]>, jobId: string, message: string, max: number): void {
  const list = lists.get(jobId)
  if (list === undefined) lists.set(jobId, [message])
  else if (list.push(message) > max) list.shift()
}

/**
 * Whether the job's list holds `message`; if so it is taken out, with the entries before it (the
 * lists are in publish order: those will not come any more).
 */
function takeFrom(lists: Map<string, string[]>, jobId: string, message: string): boolean {
  const list = lists.get(jobId)
  if (list === undefined) return false
  const at = list.indexOf(message)
  if (at < 0) return false
  if (at === list.length - 1) lists.delete(jobId)
  else list.splice(0, at + 1)
  return true
}

export interface RedisNotificationsOptions {
  connection: RedisConnection
  keys: RedisKeys
  /** This node's name on the probe channel. */
  node: string
  commandTimeoutMs: number
  /** Whether the command connection works (a re-read while commands fail would only end the watchers). */
  clientReady: () => boolean
  /** A token this node published on its probe channel came back (epochs.ts). */
  onProbe: (token: number) => void
}

/**
 * Pub/sub: events reach every node over Redis channels, and each node subscribes only to the jobs,
 * queues and owner feeds its own listeners need (one channel each, subscribed with the first
 * listener and dropped with the last). A subscription counts only once Redis confirmed it, and a
 * read or write of a watched job waits for that ("listen first, then look"). Whatever may have been
 * missed (the pub/sub connection came back, Redis lost data) is healed by every local watcher
 * re-reading the log from its own position (`resync`).
 */
export class RedisNotifications {
  readonly #connection: RedisConnection
  readonly #keys: RedisKeys
  readonly #options: RedisNotificationsOptions
  readonly #fanOut = new FanOut({
    onFirst: (id) => this.#addChannel(this.#keys.jobChannel(id)),
    onLast: (id) => this.#dropChannel(this.#keys.jobChannel(id)),
    onFirstOwner: (owner) => this.#addChannel(this.#keys.ownerChannel(owner.tenant, owner.user)),
    onLastOwner: (owner) => this.#dropChannel(this.#keys.ownerChannel(owner.tenant, owner.user)),
  })
  /** Channels this node's listeners need, and whether Redis confirmed each. */
  readonly #channels = new Map<string, Channel>()
  readonly #watchedJobs = new Set<string>()
  /**
   * Per watched job, what this node committed, published on the job's channel and delivered to its
   * own watchers at once (`delivered`), oldest first: when Redis echoes it back, it is skipped.
   */
  readonly #echoes = new Map<string, string[]>()
  /**
   * Per watched job with a commit of this node in flight, the last messages heard on its channel
   * and published here: that commit can arrive over pub/sub before its own reply (two
   * connections), and is then not published a second time when the reply comes (`delivered`).
   * Nothing is kept for a job with no commit in flight: no message heard then can be one.
   */
  readonly #heard = new Map<string, string[]>()
  /** This node's commits sent and not yet answered, per job (`committing` … `settled`). */
  readonly #inFlight = new Map<string, number>()
  readonly #queueListeners = new Map<string, number>()
  readonly #ownerChannelStart: string
  readonly #probeChannel: string
  /** Watchers must re-read once both connections are up (after a reconnect or a generation change). */
  #resyncPending = false
  #subscriberReady = false

  constructor(options: RedisNotificationsOptions) {
    this.#options = options
    this.#connection = options.connection
    this.#keys = options.keys
    this.#ownerChannelStart = `${this.#keys.prefix}:ch:owner:`
    this.#probeChannel = this.#keys.probeChannel(options.node)
    const subscriber = this.#connection.subscriber
    subscriber.on('ready', () => void this.#subscriberConnected())
    subscriber.on('close', () => {
      this.#subscriberReady = false
      this.#echoes.clear()
      this.#heard.clear()
      for (const channel of this.#channels.values()) {
        channel.confirmed = false
        channel.pending = false
      }
    })
    subscriber.on('message', (channel: string, message: string) => this.#onMessage(channel, message))
  }

  subscribe(jobId: string, listener: EventListener): Unsubscribe {
    if (this.#connection.closed) return () => {}
    return this.#fanOut.subscribe(jobId, listener)
  }

  subscribeQueue(type: string, listener: () => void): Unsubscribe {
    if (this.#connection.closed) return () => {}
    const count = this.#queueListeners.get(type) ?? 0
    this.#queueListeners.set(type, count + 1)
    if (count === 0) this.#addChannel(this.#keys.queueChannel(type))
    const unsubscribe = this.#fanOut.subscribeQueue(type, listener)
    let done = false
    return () => {
      if (done) return
      done = true
      unsubscribe()
      const left = (this.#queueListeners.get(type) ?? 1) - 1
      if (left > 0) {
        this.#queueListeners.set(type, left)
        return
      }
      this.#queueListeners.delete(type)
      this.#dropChannel(this.#keys.queueChannel(type))
    }
  }

  subscribeOwner(owner: Owner, listener: OwnerListener): Unsubscribe {
    if (this.#connection.closed) return () => {}
    return this.#fanOut.subscribeOwner(owner, listener)
  }

  /**
   * This node committed `events` (`bodies`, their JSON) and published them: its own watchers get them now,
   * without waiting for Redis to echo them back (the echo is then skipped). Another node's commit
   * that overtakes this one on the way is no problem: a watcher that sees a seq skip ahead reads
   * the log for what is missing, and drops what it already has.
   */
  /** A commit of this job leaves this node: what its channel says until it is answered may be its echo. */
  committing(jobId: string): void {
    this.#inFlight.set(jobId, (this.#inFlight.get(jobId) ?? 0) + 1)
  }

  /** That commit was answered (after `delivered`, if it landed). */
  settled(jobId: string): void {
    const left = (this.#inFlight.get(jobId) ?? 1) - 1
    if (left > 0) {
      this.#inFlight.set(jobId, left)
      return
    }
    this.#inFlight.delete(jobId)
    this.#heard.delete(jobId)
  }

  delivered(jobId: string, events: readonly JobEvent[], bodies: readonly string[]): void {
    if (!this.#watchedJobs.has(jobId)) return
    // The message lua/commit.lua published (what its echo will say): made only for a watched job.
    const message = `[${bodies.join(',')}]`
    // The echo came first: already published.
    if (takeFrom(this.#heard, jobId, message)) return
    // Expected back on the channel (a subscription still being confirmed included: an entry that
    // never comes back is dropped by the next one that does, or with the channel).
    remember(this.#echoes, jobId, message, maxEchoes)
    this.#fanOut.publish(jobId, events)
  }

  /** The pub/sub connection is up and Redis confirmed this node's probe channel. */
  get ready(): boolean {
    return this.#subscriberReady && this.#confirmed(this.#probeChannel)
  }

  /** Before reading or writing a job someone here watches: Redis must have confirmed the watch. */
  listening(jobId: string): Promise<void> {
    const channel = this.#channels.get(this.#keys.jobChannel(jobId))
    if (channel === undefined || channel.confirmed) return Promise.resolve()
    return this.listeningTo([this.#keys.jobChannel(jobId)])
  }

  /**
   * Listen first, then look: a subscription is only safe once Redis has confirmed it, else an
   * event committed between our read and the SUBSCRIBE would be missed. Waits for that.
   */
  async listeningTo(channels: readonly string[]): Promise<void> {
    const deadline = Date.now() + this.#options.commandTimeoutMs
    for (;;) {
      if (this.#connection.closed) throw new JobwireError('unavailable', { reason: 'the store is closed' })
      if (channels.every((channel) => !this.#channels.has(channel) || this.#confirmed(channel))) return
      const left = deadline - Date.now()
      if (left <= 0) throw new JobwireError('unavailable', { reason: 'the pub/sub connection to Redis is not subscribed' })
      await this.#connection.nextChange(left)
    }
  }

  /** Every local watcher re-reads and every waiting claimer looks again, once both connections work. */
  resync(): void {
    this.#resyncPending = true
    this.#echoes.clear()
    this.#heard.clear()
    this.resyncWhenReady()
  }

  /**
   * Has every local watcher re-read the log from its own position, and every waiting claimer
   * look again, if that is pending and both connections work (a re-read while commands still
   * fail would only end the watchers with `unavailable`).
   */
  resyncWhenReady(): void {
    if (!this.#resyncPending || !this.#options.clientReady() || !this.#subscriberReady || this.#connection.closed) return
    this.#resyncPending = false
    for (const jobId of this.#watchedJobs) this.#fanOut.resync(jobId)
    for (const type of this.#queueListeners.keys()) this.#fanOut.publishQueue(type)
  }

  /** Sends SUBSCRIBE again for each channel Redis has not confirmed and no reply is awaited for. */
  resubscribeUnconfirmed(): void {
    for (const [channel, entry] of this.#channels) if (!entry.confirmed && !entry.pending) void this.#subscribeChannel(channel)
  }

  /** Whether the pub/sub connection is up (its probe channel may still be unconfirmed). */
  get subscriberReady(): boolean {
    return this.#subscriberReady
  }

  /** Drops the pub/sub connection and makes it again (which resubscribes and resyncs). */
  reconnect(): void {
    this.#connection.subscriber.disconnect(true)
  }

  async #subscriberConnected(): Promise<void> {
    if (this.#connection.closed) return
    this.#subscriberReady = true
    if (!this.#channels.has(this.#probeChannel)) this.#channels.set(this.#probeChannel, { token: 0, confirmed: false, pending: false })
    const all = [...this.#channels.keys()]
    await Promise.all(all.map((channel) => this.#subscribeChannel(channel)))
    if (!this.#subscriberReady) return
    // Whatever was published while this connection was down or being set up is lost.
    this.resync()
  }

  #addChannel(channel: string): void {
    if (this.#channels.has(channel)) return
    this.#channels.set(channel, { token: 0, confirmed: false, pending: false })
    const jobId = this.#jobOfChannel(channel)
    if (jobId !== null) this.#watchedJobs.add(jobId)
    void this.#subscribeChannel(channel)
  }

  #dropChannel(channel: string): void {
    if (!this.#channels.delete(channel)) return
    const jobId = this.#jobOfChannel(channel)
    if (jobId !== null) {
      this.#watchedJobs.delete(jobId)
      this.#echoes.delete(jobId)
      this.#heard.delete(jobId)
    }
    if (this.#subscriberReady && !this.#connection.closed) this.#connection.subscriber.unsubscribe(channel).catch(() => undefined)
  }

  async #subscribeChannel(channel: string): Promise<void> {
    const entry = this.#channels.get(channel)
    if (entry === undefined || !this.#subscriberReady || this.#connection.closed) return
    const token = ++entry.token
    entry.confirmed = false
    entry.pending = true
    try {
      await this.#connection.subscriber.subscribe(channel)
      if (this.#channels.get(channel) === entry && entry.token === token && this.#subscriberReady) {
        entry.confirmed = true
        this.#connection.changed()
      }
    } catch {
      // Left unconfirmed: the probe subscribes it again, or forces a reconnect.
    } finally {
      if (entry.token === token) entry.pending = false
    }
  }

  #jobOfChannel(channel: string): string | null {
    const start = this.#keys.jobChannel('')
    return channel.startsWith(start) ? channel.slice(start.length) : null
  }

  #confirmed(channel: string): boolean {
    return this.#channels.get(channel)?.confirmed === true
  }

  #onMessage(channel: string, message: string): void {
    const jobId = this.#jobOfChannel(channel)
    if (jobId !== null) {
      // This node's own commit, already delivered when its reply came.
      if (takeFrom(this.#echoes, jobId, message)) return
      let events: JobEvent[]
      try {
        events = JSON.parse(message) as JobEvent[]
      } catch {
        return
      }
      if (this.#inFlight.has(jobId)) remember(this.#heard, jobId, message, maxHeard)
      this.#fanOut.publish(jobId, events)
      return
    }
    const queueStart = this.#keys.queueChannel('')
    if (channel.startsWith(queueStart)) {
      this.#fanOut.publishQueue(channel.slice(queueStart.length))
      return
    }
    if (channel.startsWith(this.#ownerChannelStart)) {
      try {
        this.#fanOut.publishCreated(JSON.parse(message) as JobEventOf<'created'>)
      } catch {
        // not ours
      }
      return
    }
    if (channel === this.#probeChannel) this.#options.onProbe(Number(message))
  }
}
