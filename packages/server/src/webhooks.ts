import { createHmac, randomInt } from 'node:crypto'
import type { JobEvent, JobState } from '@jobwire/protocol'
import type { JobObserver } from './core/observer.js'
import { byName } from './core/by-name.js'

export interface WebhookSettings {
  /** Receiver URL by job type; `*` for every type without its own. */
  urls: Record<string, string>
  /** HMAC-SHA256 key of the `x-jobwire-signature` header. */
  secret: string
  /** Attempts per delivery, the first included. */
  maxAttempts: number
  /** First retry delay; doubles per attempt (full jitter), at most 60 s. */
  backoffMs: number
  /** Time one attempt may take. Default 10 s. */
  timeoutMs?: number
}

export type DeliveryOutcome = 'delivered' | 'retried' | 'failed'

/** What a receiver gets for a job that ended. */
export interface WebhookPayload {
  /** `<jobId>:<seq>`: the same on every retry, so a receiver can drop a repeat. */
  id: string
  type: 'job.completed' | 'job.failed' | 'job.cancelled'
  job: JobState
  event: JobEvent
}

/** `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, what a receiver recomputes to trust a delivery. */
function webhookSignature(secret: string, timestamp: number, body: string): string {
  return `t=${timestamp},v1=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`
}

/**
 * Job-lifecycle webhooks: when a job of a configured type ends, the node that committed the
 * terminal event POSTs it, signed, and retries with backoff until the receiver answers 2xx or the
 * attempts run out. At least once while the node runs; retries pending at shutdown are dropped.
 */
export class Webhooks {
  readonly #timers = new Set<NodeJS.Timeout>()
  readonly #inFlight = new Set<AbortController>()
  #closed = false

  constructor(
    private readonly settings: WebhookSettings,
    private readonly report: (outcome: DeliveryOutcome, detail: { id: string; url: string; attempt: number; reason?: string }) => void = () => {},
  ) {}

  /** The hook core calls on every commit. */
  readonly observer: JobObserver = {
    committed: (job, events) => {
      for (const event of events) {
        if (event.type !== 'completed' && event.type !== 'failed' && event.type !== 'cancelled') continue
        const url = byName(this.settings.urls, job.type) ?? this.settings.urls['*']
        if (url === undefined) continue
        const payload: WebhookPayload = { id: `${job.id}:${event.seq}`, type: `job.${event.type}`, job, event }
        this.#attempt(url, payload.id, JSON.stringify(payload), 1)
      }
    },
  }

  #attempt(url: string, id: string, body: string, attempt: number): void {
    if (this.#closed) return
    const abort = new AbortController()
    this.#inFlight.add(abort)
    const timeout = setTimeout(() => abort.abort(), this.settings.timeoutMs ?? 10_000)
    const timestamp = Math.floor(Date.now() / 1000)
    fetch(url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'user-agent': 'jobwire-webhook',
        'x-jobwire-delivery': id,
        'x-jobwire-attempt': String(attempt),
        'x-jobwire-signature': webhookSignature(this.settings.secret, timestamp, body),
      },
      body,
      signal: abort.signal,
      redirect: 'manual',
    })
      .then(
        async (response) => {
          await response.body?.cancel()
          return response.ok ? null : `HTTP ${response.status}`
        },
        (error: unknown) => (error instanceof Error ? error.message : String(error)),
      )
      .then((failure) => {
        clearTimeout(timeout)
        this.#inFlight.delete(abort)
        if (failure === null) {
          this.report('delivered', { id, url, attempt })
          return
        }
        if (this.#closed) return
        if (attempt >= this.settings.maxAttempts) {
          this.report('failed', { id, url, attempt, reason: failure })
          return
        }
        this.report('retried', { id, url, attempt, reason: failure })
        const ceiling = Math.min(60_000, this.settings.backoffMs * 2 ** (attempt - 1))
        const timer = setTimeout(() => {
          this.#timers.delete(timer)
          this.#attempt(url, id, body, attempt + 1)
        }, randomInt(0, Math.max(1, Math.round(ceiling)) + 1))
        timer.unref()
        this.#timers.add(timer)
      })
  }

  /** Stops: pending retries are dropped and attempts in flight aborted. */
  close(): void {
    this.#closed = true
    for (const timer of this.#timers) clearTimeout(timer)
    this.#timers.clear()
    for (const abort of this.#inFlight) abort.abort()
  }
}
