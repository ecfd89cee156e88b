import type { JobwireError, PollResponse } from '@jobwire/protocol'
import { asJobwireError, authHeaders, decide, errorOf, Retry, type ClientCore } from './core.js'
import type { RetryState } from './connection.js'
import type { TimerHandle } from './environment.js'
import type { Carrier, JobFeed } from './job-feed.js'

/**
 * One job over plain HTTP polling (`GET /v1/jobs/:id/events?after=seq`) every `pollIntervalMs`:
 * the transport that gets through anything that passes ordinary requests. Stops at the terminal
 * event; never polls a finished job.
 */
export class PollCarrier implements Carrier {
  readonly kind = 'poll'
  #stopped = false
  #round: object | null = null
  #timer: TimerHandle | null = null
  #abort: AbortController | null = null
  readonly #retry: Retry
  readonly #stopOnline: () => void

  constructor(
    private readonly feed: JobFeed,
    private readonly core: ClientCore,
  ) {
    this.#retry = new Retry(core, () => void this.#poll(), (attempts) => this.feed.connection.set('offline', `gave up after ${attempts} failed attempts`))
    this.#stopOnline = core.onOnline((online) => {
      if (this.#stopped) return
      if (online) return
      this.#cancelRound()
      this.feed.connection.set('reconnecting', 'offline')
      this.#retry.schedule()
    })
  }

  start(): void {
    this.feed.connection.set('polling', `polling every ${this.core.settings.pollIntervalMs} ms`)
    void this.#poll()
  }

  resync(): void {
    if (this.#stopped) return
    this.#cancelRound()
    void this.#poll()
  }

  get retryState(): RetryState {
    return this.#retry.state
  }

  /** Tries again now, forgetting the attempts so far. */
  reconnect(): void {
    if (this.#stopped) return
    this.#retry.reset()
    this.resync()
  }

  stop(): void {
    this.#stopped = true
    this.#cancelRound()
    this.#retry.cancel()
    this.#stopOnline()
  }

  #cancelRound(): void {
    this.#round = null
    this.#abort?.abort()
    this.#abort = null
    if (this.#timer !== null) this.core.env.timers.clearTimeout(this.#timer)
    this.#timer = null
  }

  async #poll(): Promise<void> {
    if (this.#stopped || this.feed.done) return
    this.#cancelRound()
    const round = {}
    this.#round = round
    let credential: { token: string | null; fresh: boolean }
    try {
      credential = await this.core.tokens.get({ scope: 'jobs', jobIds: [this.feed.jobId] })
    } catch (error) {
      if (this.#round === round) this.#onError(asJobwireError(error), true, null)
      return
    }
    if (this.#round !== round) return
    const after = this.feed.position
    const path = `/v1/jobs/${encodeURIComponent(this.feed.jobId)}/events${after === undefined ? '' : `?after=${after}`}`
    const controller = new AbortController()
    this.#abort = controller
    let body: PollResponse
    try {
      const response = await this.core.env.fetch(this.core.url(path), {
        headers: { accept: 'application/json', ...authHeaders(credential.token) },
        signal: controller.signal,
        cache: 'no-store',
      })
      if (this.#round !== round) return
      if (!response.ok) {
        const error = await errorOf(response)
        if (this.#round === round) this.#onError(error, credential.fresh, credential.token)
        return
      }
      body = (await response.json()) as PollResponse
    } catch (error) {
      if (this.#round !== round) return
      this.#abort = null
      this.feed.connection.set('reconnecting', `network: ${asJobwireError(error).message}`)
      this.#retry.schedule()
      return
    }
    if (this.#round !== round) return
    this.#abort = null
    this.#retry.succeeded()
    this.feed.connection.set('polling', 'polled')
    if (body.snapshot !== undefined) this.feed.receive({ type: 'snapshot', ...body.snapshot })
    for (const event of body.events) this.feed.receive({ type: 'event', event })
    if (this.feed.done || this.#stopped) return
    // The server says when the log holds more than one answer carried: fetch it at once.
    const next = body.more ? 0 : this.core.settings.pollIntervalMs
    this.#timer = this.core.env.timers.setTimeout(() => {
      this.#timer = null
      void this.#poll()
    }, next)
  }

  #onError(error: JobwireError, freshToken: boolean, token: string | null): void {
    this.#cancelRound()
    if (this.#stopped || this.feed.done) return
    const decision = decide(error, freshToken)
    switch (decision.kind) {
      case 'retry':
        if (error.code === 'token_expired' || error.code === 'unauthorized' || error.code === 'invalid_token') this.core.tokens.invalidate(token)
        this.feed.connection.set('reconnecting', decision.reason)
        this.#retry.schedule(decision.delayMs)
        return
      case 'snapshot':
        this.feed.wantSnapshot()
        void this.#poll()
        return
      case 'poll':
        // Polls hold no stream slot; a limit here is temporary.
        this.feed.connection.set('reconnecting', error.code)
        this.#retry.schedule()
        return
      case 'fatal':
        // With per-job tokens, a refused one ends this job's watch only.
        if (this.core.tokens.perJob) this.feed.fail(error)
        else this.core.fatal(error)
        return
      case 'fail':
        this.feed.fail(error)
        return
      default:
        return assertNever(decision)
    }
  }
}

function assertNever(value: never): never {
  throw new Error(`unhandled decision ${JSON.stringify(value)}`)
}
