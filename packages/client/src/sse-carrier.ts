import { createSseParser, decodeSseMessage, isTerminal, JobwireError, sseEventNames, type StreamMessage } from '@jobwire/protocol'
import { asJobwireError, authHeaders, errorOf } from './core.js'
import { HttpCarrier } from './http-carrier.js'
import type { TimerHandle } from './environment.js'

/**
 * One job over Server-Sent Events, read with `fetch` (so the credential goes in a header and
 * heartbeat comments are visible) or, when given one, an EventSource. A stream that delivers
 * nothing — not its first message within `firstMessageTimeoutMs`, or only silence after it, twice —
 * is held back by something in between (a buffering proxy): the client falls back to polling.
 */
export class SseCarrier extends HttpCarrier {
  readonly kind = 'sse'
  #attempt: object | null = null
  #abort: (() => void) | null = null
  #everLive = false
  /** Silences in a row after which nothing but a stream's first message had arrived. */
  #stalls = 0
  #messagesThisAttempt = 0
  #disconnectedAt = -Infinity
  #firstTimer: TimerHandle | null = null
  #watchdog: TimerHandle | null = null

  start(): void {
    void this.open()
  }

  protected drop(): void {
    this.#attempt = null
    this.#abort?.()
    this.#abort = null
    this.#clearTimers()
  }

  protected limited(): void {
    this.core.pollFeed(this.feed)
  }

  protected override onError(error: JobwireError, freshToken: boolean, token: string | null): void {
    this.#disconnectedAt = this.core.env.now()
    super.onError(error, freshToken, token)
  }

  #clearTimers(): void {
    const { timers } = this.core.env
    if (this.#firstTimer !== null) timers.clearTimeout(this.#firstTimer)
    if (this.#watchdog !== null) timers.clearTimeout(this.#watchdog)
    this.#firstTimer = null
    this.#watchdog = null
  }

  protected async open(): Promise<void> {
    if (this.stopped || this.feed.done) return
    this.drop()
    const attempt = {}
    this.#attempt = attempt
    this.#messagesThisAttempt = 0
    this.feed.connection.set(this.#everLive ? 'reconnecting' : 'connecting', 'opening an SSE stream')
    let credential: { token: string | null; fresh: boolean }
    try {
      credential = await this.core.tokens.get({ scope: 'jobs', jobIds: [this.feed.jobId] }, this.#disconnectedAt)
    } catch (error) {
      if (this.#attempt === attempt) this.onError(asJobwireError(error), true, null)
      return
    }
    if (this.#attempt !== attempt) return
    const after = this.feed.position
    const path = `/v1/jobs/${encodeURIComponent(this.feed.jobId)}/stream${after === undefined ? '' : `?after=${after}`}`
    this.#armFirstMessage(attempt)
    if (this.core.env.EventSource !== null && typeof ReadableStream === 'undefined') {
      this.#viaEventSource(attempt, path, credential)
      return
    }
    const controller = new AbortController()
    this.#abort = () => controller.abort()
    let response: Response
    try {
      response = await this.core.env.fetch(this.core.url(path), {
        headers: { accept: 'text/event-stream', ...authHeaders(credential.token) },
        signal: controller.signal,
        cache: 'no-store',
      })
    } catch (error) {
      if (this.#attempt === attempt) this.#lost(attempt, `network: ${asJobwireError(error).message}`)
      return
    }
    if (this.#attempt !== attempt) {
      controller.abort()
      return
    }
    if (response.status === 204) {
      // The server has nothing after our position and never will: the job ended there.
      this.#ended()
      return
    }
    if (!response.ok || response.body === null) {
      const error = response.ok ? new JobwireError('unavailable', { reason: 'the stream has no body' }) : await errorOf(response)
      if (this.#attempt === attempt) this.onError(error, credential.fresh, credential.token)
      return
    }
    const parser = createSseParser(
      (frame) => {
        if (this.#attempt !== attempt) return
        let message: StreamMessage | null
        try {
          message = decodeSseMessage(frame)
        } catch {
          this.#lost(attempt, 'a frame that is not JSON')
          return
        }
        if (message !== null) this.#onMessage(attempt, message, credential)
      },
      // A heartbeat got through: whatever holds bytes back, it is not holding these.
      () => {
        if (this.#attempt === attempt) this.#stalls = 0
      },
    )
    const reader = response.body.getReader()
    const decoder = new TextDecoder()
    try {
      for (;;) {
        const { done, value } = await reader.read()
        if (done || this.#attempt !== attempt) break
        this.#alive(attempt)
        parser.push(decoder.decode(value, { stream: true }))
      }
    } catch {
      // aborted by us, or the connection broke: the same as an end below
    }
    if (this.#attempt === attempt) this.#lost(attempt, 'the stream ended')
  }

  /** For platforms without streaming fetch: the same frames through an EventSource (no heartbeat visibility). */
  #viaEventSource(attempt: object, path: string, credential: { token: string | null; fresh: boolean }): void {
    const EventSourceImpl = this.core.env.EventSource
    if (EventSourceImpl === null) return
    const url = new URL(this.core.url(path))
    if (credential.token !== null) url.searchParams.set('access_token', credential.token)
    const source = new EventSourceImpl(url.toString())
    this.#abort = () => source.close()
    for (const name of sseEventNames) {
      source.addEventListener(name, (event) => {
        if (this.#attempt !== attempt || typeof event.data !== 'string') return
        let message: StreamMessage | null
        try {
          message = decodeSseMessage({ event: name, data: event.data })
        } catch {
          return
        }
        if (message !== null) this.#onMessage(attempt, message, credential)
      })
    }
    // EventSource would reconnect by itself without our token or position: we do it instead.
    source.onerror = () => {
      // CLOSED before any message: the server refused the stream (204 for a job that ended at our
      // position, or an error status), which EventSource does not let us read. A snapshot tells.
      const refused = source.readyState === 2 && this.#messagesThisAttempt === 0
      source.close()
      if (this.#attempt !== attempt) return
      if (refused) this.feed.wantSnapshot()
      this.#lost(attempt, 'the stream broke')
    }
  }

  /** Answered 204: the job ended at our position. Its final state, if we lack it, comes with one snapshot. */
  #ended(): void {
    this.drop()
    if (this.stopped || this.feed.done) return
    if (this.feed.state !== null && isTerminal(this.feed.state.status)) {
      this.feed.finish()
      return
    }
    this.feed.wantSnapshot()
    void this.open()
  }

  #onMessage(attempt: object, message: StreamMessage, credential: { token: string | null; fresh: boolean }): void {
    if (this.#firstTimer !== null) {
      this.core.env.timers.clearTimeout(this.#firstTimer)
      this.#firstTimer = null
    }
    this.#alive(attempt)
    if (message.type === 'error') {
      const error = JobwireError.fromBody(message.error)
      // A token that expires after the stream delivered worked until then: renewed at once.
      this.onError(error, credential.fresh && !(error.code === 'token_expired' && this.#messagesThisAttempt > 0), credential.token)
      return
    }
    if (++this.#messagesThisAttempt > 1) this.#stalls = 0
    if (message.type !== 'queue') {
      this.#everLive = true
      this.retry.succeeded()
      this.feed.connection.set('live', 'SSE stream open')
    }
    this.feed.receive(message)
  }

  #armFirstMessage(attempt: object): void {
    const { timers } = this.core.env
    this.#firstTimer = timers.setTimeout(() => {
      this.#firstTimer = null
      if (this.#attempt !== attempt) return
      this.#blocked(`no SSE message within ${this.core.settings.firstMessageTimeoutMs} ms (a buffering proxy?)`)
    }, this.core.settings.firstMessageTimeoutMs)
  }

  /** Bytes arrived: the link is alive; silence past the heartbeat timeout means it is not. */
  #alive(attempt: object): void {
    const { timers } = this.core.env
    if (this.#watchdog !== null) timers.clearTimeout(this.#watchdog)
    const timeout = this.core.settings.heartbeatTimeoutMs ?? this.core.settings.sseHeartbeatTimeoutMs
    this.#watchdog = timers.setTimeout(() => {
      this.#watchdog = null
      if (this.#attempt !== attempt) return
      // Silence right after a good start, twice: heartbeats are being held back, not just a blip.
      if (++this.#stalls >= 2) {
        this.#blocked('no SSE heartbeat arrived (a buffering proxy?)')
        return
      }
      this.#lost(attempt, 'no heartbeat')
    }, timeout)
  }

  /** SSE does not get through: the client moves on to the next transport, or, when SSE is the last one allowed, it is tried again with backoff. */
  #blocked(reason: string): void {
    this.drop()
    if (this.core.transportFailed('sse', reason) || this.stopped || this.feed.done) return
    this.#disconnectedAt = this.core.env.now()
    this.feed.connection.set('reconnecting', reason)
    this.retry.schedule()
  }

  #lost(attempt: object, reason: string): void {
    if (this.#attempt !== attempt || this.stopped) return
    this.drop()
    this.#disconnectedAt = this.core.env.now()
    if (this.feed.done) return
    this.feed.connection.set('reconnecting', reason)
    this.retry.schedule()
  }
}
