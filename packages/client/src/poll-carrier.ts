import type { JobwireError, PollResponse } from '@jobwire/protocol'
import { asJobwireError, authHeaders, errorOf, timeBox } from './core.js'
import { HttpCarrier } from './http-carrier.js'
import type { TimerHandle } from './environment.js'

/**
 * One job over plain HTTP polling (`GET /v1/jobs/:id/events?after=seq`) every `pollIntervalMs`:
 * the transport that gets through anything that passes ordinary requests. Stops at the terminal
 * event; never polls a finished job.
 */
export class PollCarrier extends HttpCarrier {
  readonly kind = 'poll'
  #round: object | null = null
  #timer: TimerHandle | null = null
  #abort: AbortController | null = null

  start(): void {
    this.feed.connection.set('polling', `polling every ${this.core.settings.pollIntervalMs} ms`)
    void this.open()
  }

  protected drop(): void {
    this.#round = null
    this.#abort?.abort()
    this.#abort = null
    if (this.#timer !== null) this.core.env.timers.clearTimeout(this.#timer)
    this.#timer = null
  }

  protected limited(error: JobwireError): void {
    // Polls hold no stream slot; a limit here is temporary.
    this.feed.connection.set('reconnecting', error.code)
    this.retry.schedule()
  }

  protected async open(): Promise<void> {
    if (this.stopped || this.feed.done) return
    this.drop()
    const round = {}
    this.#round = round
    let credential: { token: string | null; fresh: boolean }
    try {
      credential = await this.core.tokens.get({ scope: 'jobs', jobIds: [this.feed.jobId] })
    } catch (error) {
      if (this.#round === round) this.onError(asJobwireError(error), true, null)
      return
    }
    if (this.#round !== round) return
    const after = this.feed.position
    const path = `/v1/jobs/${encodeURIComponent(this.feed.jobId)}/events${after === undefined ? '' : `?after=${after}`}`
    // A poll is answered at once: one that is not within the first-message timeout (a server that
    // accepted the connection and hangs, a proxy that holds it) is given up and tried again, as a
    // stream would be.
    const timeoutMs = this.core.settings.firstMessageTimeoutMs
    const box = timeBox(this.core.env.timers, timeoutMs)
    this.#abort = box.controller
    let body: PollResponse
    try {
      const response = await this.core.env.fetch(this.core.url(path), {
        headers: { accept: 'application/json', ...authHeaders(credential.token) },
        signal: box.controller.signal,
        cache: 'no-store',
      })
      if (this.#round !== round) return
      if (!response.ok) {
        const error = await errorOf(response)
        if (this.#round === round) this.onError(error, credential.fresh, credential.token)
        return
      }
      body = (await response.json()) as PollResponse
    } catch (error) {
      if (this.#round !== round) return
      this.#abort = null
      this.feed.connection.set('reconnecting', box.timedOut() ? `no answer to a poll within ${timeoutMs} ms` : `network: ${asJobwireError(error).message}`)
      this.retry.schedule()
      return
    } finally {
      box.clear()
    }
    if (this.#round !== round) return
    this.#abort = null
    this.retry.succeeded()
    this.feed.connection.set('polling', 'polled')
    if (body.snapshot !== undefined) this.feed.receive({ type: 'snapshot', ...body.snapshot })
    for (const event of body.events) this.feed.receive({ type: 'event', event })
    if (this.feed.done || this.stopped) return
    // The server says when the log holds more than one answer carried: fetch it at once.
    const next = body.more ? 0 : this.core.settings.pollIntervalMs
    this.#timer = this.core.env.timers.setTimeout(() => {
      this.#timer = null
      void this.open()
    }, next)
  }
}
