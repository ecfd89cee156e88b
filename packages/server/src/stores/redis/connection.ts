import { Redis, type Command, type RedisOptions } from 'ioredis'
import { JobwireError } from '@jobwire/protocol'
import { luaScripts, type ScriptName } from './scripts.js'

/**
 * Fail fast while Redis is away (no offline queue, no retries of a command whose connection
 * dropped: it may or may not have run, so the caller gets 503, never a late 2xx), and keep
 * reconnecting in the background so everything recovers by itself.
 */
function failFastConnection(commandTimeoutMs: number): RedisOptions {
  return {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    autoResubscribe: false,
    commandTimeout: commandTimeoutMs,
    connectTimeout: Math.max(1000, commandTimeoutMs),
    retryStrategy: (times) => Math.min(100 * times, 1000),
  }
}

/** Redis errors that mean "not now" rather than "wrong". */
const transientReplies = /^(BUSY|LOADING|READONLY|MASTERDOWN|TRYAGAIN|CLUSTERDOWN|NOREPLICAS|OOM|NOSCRIPT)/

/**
 * What a failed Redis call means to callers: a script's own refusal (a ReplyError that is not
 * transient) passes through; connection trouble and transient replies become `unavailable` (503).
 */
function redisFailure(error: unknown, closed: boolean): unknown {
  if (error instanceof JobwireError) return error
  if (error instanceof Error && error.name === 'ReplyError' && !transientReplies.test(error.message)) return error
  if (closed) return new JobwireError('unavailable', { reason: 'the store is closed' })
  return new JobwireError('unavailable', { reason: `Redis: ${error instanceof Error ? error.message : String(error)}` })
}

export type Warn = (message: string, details?: Record<string, unknown>) => void

export interface RedisConnectionOptions {
  url: string
  /** A command unanswered this long fails with `unavailable`. */
  commandTimeoutMs: number
  /** The connections' names in CLIENT LIST: `<name>` (commands) and `<name>:<subscriberSuffix>`. */
  name: string
  subscriberSuffix: string
  /** What the warnings call each connection, e.g. ` (credentials)`. */
  clientLabel?: string
  subscriberLabel?: string
  onWarning: Warn
}

type ScriptCall = (numberOfKeys: number, ...keysAndArgs: (string | number)[]) => Promise<unknown>

/** What ioredis keeps of a script registered with `defineCommand` (its `Script`: the command class that sends EVAL on a connection's first use, and the SHA). */
interface RegisteredScript {
  Command: new (name: string, args: string[], options: { replyEncoding: 'utf8' }) => Command
  sha: string
}
interface ScriptRegistry {
  scriptsSet: Record<string, RegisteredScript | undefined>
}

/**
 * The one owner of a component's Redis connections: a command connection with every Lua script
 * registered on it (ioredis `defineCommand`: EVAL the first time a socket runs a script, EVALSHA
 * after, EVAL again after a NOSCRIPT) and a pub/sub connection, both failing fast while Redis is
 * away. Calls go through `guard` / `run`, which refuse while the component is not usable and turn
 * connection trouble into `unavailable` (HTTP 503). It also wakes whoever waits for a change of
 * state (`nextChange`), and reports each connection problem once until it changes.
 */
export class RedisConnection {
  readonly client: Redis
  readonly subscriber: Redis
  #closed = false
  /** The last warning of each kind (its message), with what it said: a kind is reported again only when that changes. */
  readonly #lastWarnings = new Map<string, string>()
  readonly #onWarning: Warn
  readonly #waiters = new Set<() => void>()
  /** Whether commands may be sent now; the owner of this connection may set a stricter test. */
  #usable: () => boolean

  constructor(options: RedisConnectionOptions) {
    this.#onWarning = options.onWarning
    const connection = failFastConnection(options.commandTimeoutMs)
    // No auto-pipelining: it keeps one pipeline in flight at a time and answers its commands only
    // when all of them are answered, so each command waited for the round trip before it, and the
    // commands kept waiting were caught alive by young-generation GCs and promoted (at 2,000
    // events/s on the Redis store: 9–11 MB/s promoted with it, about 2 without; scavenges of 6.5–8.5
    // ms against 3.3–5). The store's commits of a turn already leave in one script call, and reads
    // of many keys at once go as an explicit pipeline (a page of the job list).
    this.client = new Redis(options.url, { ...connection, connectionName: options.name, enableAutoPipelining: false })
    for (const [name, lua] of Object.entries(luaScripts)) this.client.defineCommand(commandName(name as ScriptName), { lua })
    this.subscriber = new Redis(options.url, { ...connection, connectionName: `${options.name}:${options.subscriberSuffix}` })
    this.client.on('error', (error: Error) => this.warn(`Redis connection error${options.clientLabel ?? ''}`, { error: error.message }))
    this.subscriber.on('error', (error: Error) => this.warn(`Redis pub/sub connection error${options.subscriberLabel ?? ''}`, { error: error.message }))
    this.#usable = () => this.client.status === 'ready'
  }

  get closed(): boolean {
    return this.#closed
  }

  /** Replaces the test of whether commands may be sent (e.g. "and we know which Redis this is"). */
  usableWhen(test: () => boolean): void {
    this.#usable = test
  }

  /** Throws `unavailable` when closed or not usable. */
  usable(): void {
    if (this.#closed) throw new JobwireError('unavailable', { reason: 'the store is closed' })
    if (!this.#usable()) throw new JobwireError('unavailable', { reason: 'Redis is unreachable' })
  }

  /** Runs a Redis call, turning connection trouble into `unavailable` (HTTP 503). */
  async guard<T>(call: () => Promise<T>): Promise<T> {
    this.usable()
    try {
      return await call()
    } catch (error) {
      throw this.translate(error)
    }
  }

  /**
   * Runs one of the Lua scripts (scripts.ts). The command is made here with its arguments as one
   * array of strings: ioredis's own call path copies them four times (a spread into the call, its
   * rest parameter, an `unshift`, a `flat()`) and converts each, which for a commit script of 64
   * commits (1,700 arguments) cost more than writing them. Its script command still sends EVAL
   * the first time a connection runs the script, EVALSHA after; a NOSCRIPT (Redis lost its
   * scripts) is sent again through ioredis's path, which loads the script.
   */
  run(script: ScriptName, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
    const viaIoredis = (): Promise<unknown> => this.script(script)(keys.length, ...keys, ...args)
    return this.guard(() => {
      // ioredis's `Script` (internal, not its public API): should a later version keep it elsewhere, its own call path.
      const registered = (this.client as unknown as Partial<ScriptRegistry>).scriptsSet?.[commandName(script)]
      if (typeof registered?.Command !== 'function' || typeof registered.sha !== 'string') return viaIoredis()
      const { Command, sha } = registered
      const command = new Command('evalsha', [], { replyEncoding: 'utf8' })
      const all = [sha, String(keys.length), ...keys]
      for (const arg of args) all.push(typeof arg === 'string' ? arg : String(arg))
      command.args = all
      return (this.client.sendCommand(command) as Promise<unknown>).catch((error: unknown) => {
        if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error
        return viaIoredis()
      })
    })
  }

  /** A script as an ioredis command, for callers that do their own guarding. */
  script(script: ScriptName): ScriptCall {
    const call = (this.client as unknown as Record<string, ScriptCall>)[commandName(script)] as ScriptCall
    return call.bind(this.client)
  }

  translate(error: unknown): unknown {
    return redisFailure(error, this.#closed)
  }

  /** Reports a connection problem once until it changes, not on every reconnect attempt. */
  warn(message: string, details: Record<string, unknown>): void {
    const text = `${message} ${JSON.stringify(details)}`
    // Per kind: the command and pub/sub connections fail in turn while Redis is down, and one
    // shared "last warning" let them alternate, two lines a reconnect attempt for as long as it lasted.
    if (this.#lastWarnings.get(message) === text || this.#closed) return
    this.#lastWarnings.set(message, text)
    this.#onWarning(message, details)
  }

  /** The next problem is reported again (call once things work). */
  resetWarnings(): void {
    this.#lastWarnings.clear()
  }

  /** Resolves at the next `changed()` or after `timeoutMs`. */
  nextChange(timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        this.#waiters.delete(done)
        resolve()
      }
      const timer = setTimeout(done, timeoutMs)
      this.#waiters.add(done)
    })
  }

  changed(): void {
    for (const waiter of [...this.#waiters]) waiter()
  }

  /** Marks the component closed (calls fail from now on), wakes the waiters, drops both connections. */
  close(): void {
    this.#closed = true
    this.changed()
    this.client.disconnect()
    this.subscriber.disconnect()
  }
}

function commandName(script: ScriptName): string {
  return `jobwire_${script}`
}
