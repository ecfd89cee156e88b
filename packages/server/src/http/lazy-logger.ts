import type { FastifyBaseLogger } from 'fastify'
import type { Bindings, ChildLoggerOptions, LogFn } from 'pino'

type LogArgs = [unknown, ...unknown[]]

type Level = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'

/** `logger[level](...args)`: a pino log method, with its logger as `this`, called with what the caller passed. */
function call(logger: FastifyBaseLogger, level: Level, args: LogArgs): void {
  ;(logger[level] as LogFn as unknown as (...all: LogArgs) => void).apply(logger, args)
}

/**
 * A request's logger, made when something first logs through it. Fastify makes a child logger per
 * request (for its id) and the app bound the job and tenant in another; most requests never log,
 * and the two pino children (their bindings serialized, with redaction) were about a sixth of the
 * server's CPU per write with logging on, as `jobwire serve` runs. Bindings added before the first
 * line (`bind`) go into the one child made then.
 */
export class LazyLogger implements FastifyBaseLogger {
  #made: FastifyBaseLogger | null = null

  constructor(
    private readonly parent: FastifyBaseLogger,
    private readonly bindings: Bindings,
    private readonly options: ChildLoggerOptions,
  ) {}

  /** Adds bindings to the child not yet made; false once it exists (then make a child of it). */
  bind(more: Bindings): boolean {
    if (this.#made !== null) return false
    Object.assign(this.bindings, more)
    return true
  }

  #logger(): FastifyBaseLogger {
    this.#made ??= this.parent.child(this.bindings, this.options)
    return this.#made
  }

  get level(): string {
    return this.#logger().level
  }

  set level(level: string) {
    this.#logger().level = level
  }

  // Methods on the prototype, not a closure each: one of these is made for every request.
  fatal(...args: LogArgs): void {
    call(this.#logger(), 'fatal', args)
  }

  error(...args: LogArgs): void {
    call(this.#logger(), 'error', args)
  }

  warn(...args: LogArgs): void {
    call(this.#logger(), 'warn', args)
  }

  info(...args: LogArgs): void {
    call(this.#logger(), 'info', args)
  }

  debug(...args: LogArgs): void {
    call(this.#logger(), 'debug', args)
  }

  trace(...args: LogArgs): void {
    call(this.#logger(), 'trace', args)
  }

  silent(...args: LogArgs): void {
    call(this.#logger(), 'silent', args)
  }

  child(bindings: Bindings, options?: ChildLoggerOptions): FastifyBaseLogger {
    return this.#logger().child(bindings, options)
  }
}
