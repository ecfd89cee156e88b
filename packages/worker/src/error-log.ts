import { WorkerRequestError } from './api.js'
import type { Timers } from './timing.js'

/** How often a worker whose requests keep failing says so again. */
const reminderMs = 60_000

interface Outage {
  since: number
  failures: number
  /** The error as last said, without its operation: the same outage fails every kind of request alike. */
  said: string
  remindedAt: number
}

/**
 * The worker's default `onError`: one `console.warn` line per failure, except while the server
 * cannot be reached. Then the first failure is said, later ones with the same error are counted, a
 * reminder comes once a minute, and the first answer (one not worth retrying) says the outage is over. Without
 * it a worker whose server is down wrote a line per claim retry and per heartbeat of each job it
 * held: over a thousand an hour.
 */
export class DefaultErrorLog {
  #outage: Outage | null = null

  constructor(
    private readonly timers: Pick<Timers, 'now'>,
    private readonly write: (line: string) => void = (line) => console.warn(line),
  ) {}

  readonly report = (error: unknown, context: { operation: string; jobId?: string }): void => {
    const message = error instanceof Error ? error.message : String(error)
    // A request's error already starts with its operation ("claim: …"): said once, not twice.
    const said = message.startsWith(`${context.operation}: `) ? message.slice(context.operation.length + 2) : message
    const line = `jobwire worker: ${context.operation}${context.jobId === undefined ? '' : ` ${context.jobId}`}: ${said}`
    if (!(error instanceof WorkerRequestError && error.transient)) {
      const stopped = context.operation === 'claim' && error instanceof WorkerRequestError ? ' — the worker has stopped' : ''
      this.write(`${line}${stopped}`)
      return
    }
    const now = this.timers.now()
    const outage = this.#outage
    if (outage === null) {
      this.#outage = { since: now, failures: 1, said, remindedAt: now }
      this.write(line)
      return
    }
    outage.failures += 1
    if (said !== outage.said) {
      outage.said = said
      outage.remindedAt = now
      this.write(line)
    } else if (now - outage.remindedAt >= reminderMs) {
      outage.remindedAt = now
      this.write(`jobwire worker: still failing: ${outage.failures} failed requests in the last ${seconds(now - outage.since)} s: ${said}`)
    }
  }

  /** The server answered a request (not with a 5xx, 408 or 429): an outage, if there was one, is over. */
  readonly answered = (): void => {
    const outage = this.#outage
    if (outage === null) return
    this.#outage = null
    this.write(`jobwire worker: the server answers again (${outage.failures} failed requests over ${seconds(this.timers.now() - outage.since)} s)`)
  }
}

function seconds(ms: number): string {
  return (ms / 1000).toFixed(1)
}
