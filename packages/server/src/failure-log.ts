import type { Logger } from 'pino'

interface Failing {
  message: string
  count: number
  since: number
  remindedAt: number
}

/** How often a task that keeps failing the same way is logged again, with its count. */
const failureReminderMs = 60_000

/**
 * The log of a periodic task's failures (the sweeps), once per outage instead of once per tick:
 * with Redis gone for an hour, the lease sweep alone wrote a warning every second. The first
 * failure, and each failure that says something new, is a warning; the same failure again is a
 * reminder with its count every `remindMs`; the first success after failures says how long it
 * lasted.
 */
export class FailureLog {
  readonly #failing = new Map<string, Failing>()

  constructor(
    private readonly logger: Logger | false,
    private readonly remindMs = failureReminderMs,
    private readonly now: () => number = Date.now,
  ) {}

  failed(task: string, error: unknown): void {
    const message = error instanceof Error ? error.message : String(error)
    const now = this.now()
    const known = this.#failing.get(task)
    if (known === undefined || known.message !== message) {
      this.#failing.set(task, { message, count: (known?.count ?? 0) + 1, since: known?.since ?? now, remindedAt: now })
      if (this.logger) this.logger.warn({ err: error }, `${task} failed`)
      return
    }
    known.count++
    if (now - known.remindedAt < this.remindMs) return
    known.remindedAt = now
    if (this.logger) this.logger.warn({ err: error, failures: known.count, failingForMs: now - known.since }, `${task} still failing`)
  }

  succeeded(task: string): void {
    const known = this.#failing.get(task)
    if (known === undefined) return
    this.#failing.delete(task)
    if (this.logger) this.logger.info({ failures: known.count, failedForMs: this.now() - known.since }, `${task} works again`)
  }
}
