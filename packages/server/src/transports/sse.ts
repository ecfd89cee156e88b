import type { IncomingMessage, ServerResponse } from 'node:http'
import { encodeSseEvent, encodeSseMessage, JobwireError, sseHeartbeat, type JobEvent, type StreamMessage } from '@jobwire/protocol'
import type { JobSubscription, StreamSink } from '../core/subscription.js'

export interface SseOptions {
  /** Interval of `: heartbeat` comments, which keep proxies from timing out and let clients detect a dead link. */
  heartbeatMs: number
  /** `retry:` reconnect hint sent first. */
  retryMs: number
  /** Bytes a reader may fall behind before it is closed with `slow_consumer`. */
  maxBufferBytes: number
}

export const sseHeaders = {
  'Content-Type': 'text/event-stream; charset=utf-8',
  'Cache-Control': 'no-cache, no-transform',
  Connection: 'keep-alive',
  'X-Accel-Buffering': 'no',
} as const

// Each event is encoded once, however many subscribers it goes to.
const encoded = new WeakMap<JobEvent, string>()
function encodeOnce(event: JobEvent): string {
  let frame = encoded.get(event)
  if (frame === undefined) {
    frame = encodeSseEvent(event)
    encoded.set(event, frame)
  }
  return frame
}

/** One open SSE response. Writes made in one turn of the event loop go out as one socket write. */
class SseConnection implements StreamSink {
  #pending = ''
  #scheduled = false
  #open = false
  #ended = false
  #wroteSince = false
  subscription: JobSubscription | null = null

  constructor(
    private readonly res: ServerResponse,
    private readonly options: SseOptions,
    private readonly onDone: () => void,
  ) {}

  write(messages: readonly StreamMessage[]): void {
    for (const message of messages) {
      this.#pending += message.type === 'event' ? encodeOnce(message.event) : encodeSseMessage(message)
    }
    this.#schedule()
  }

  end(): void {
    this.#ended = true
    this.#schedule()
  }

  /** Sends the headers and whatever was written while the subscription started. */
  activate(): void {
    this.res.writeHead(200, sseHeaders)
    this.res.write(`retry: ${this.options.retryMs}\n\n`)
    this.#open = true
    this.#flush()
  }

  heartbeat(): void {
    if (!this.#open || this.#ended) return
    if (this.#wroteSince) {
      this.#wroteSince = false
      return
    }
    this.res.write(sseHeartbeat)
  }

  #schedule(): void {
    if (this.#scheduled || !this.#open) return
    this.#scheduled = true
    setImmediate(() => this.#flush())
  }

  #flush(): void {
    this.#scheduled = false
    if (this.res.destroyed) return
    if (this.#pending !== '') {
      this.res.write(this.#pending)
      this.#pending = ''
      this.#wroteSince = true
    }
    if (this.#ended) {
      this.res.end()
      this.onDone()
      return
    }
    if (this.res.writableLength > this.options.maxBufferBytes) this.#closeSlow()
  }

  #closeSlow(): void {
    const bytes = this.res.writableLength
    this.subscription?.close(false)
    this.#ended = true
    const error = new JobwireError('slow_consumer', { bytes })
    this.res.end(encodeSseMessage({ type: 'error', error: error.toBody() }))
    // A reader that stopped reading altogether would hold the socket forever.
    setTimeout(() => this.res.destroy(), 5_000).unref()
    this.onDone()
  }
}

/**
 * The SSE transport: encodes a subscription as `text/event-stream` (`id:` = seq, `event:` = type).
 * It owns no job logic; `open` creates the subscription and may reject before any byte is sent.
 */
export class SseTransport {
  readonly #connections = new Set<SseConnection>()
  readonly #timer: NodeJS.Timeout

  constructor(private readonly options: SseOptions) {
    this.#timer = setInterval(() => {
      for (const connection of this.#connections) connection.heartbeat()
    }, options.heartbeatMs)
    this.#timer.unref()
  }

  get connections(): number {
    return this.#connections.size
  }

  /**
   * Serves one stream on a raw response. Rejections of `open` (unknown job, bad position) are
   * rethrown for the caller to answer as plain HTTP errors, except `position_ahead`, which the
   * spec of the stream answers in band as an `error` event.
   */
  async serve(req: IncomingMessage, res: ServerResponse, open: (sink: StreamSink) => Promise<JobSubscription>): Promise<void> {
    const connection = new SseConnection(res, this.options, () => this.#connections.delete(connection))
    let subscription: JobSubscription
    try {
      subscription = await open(connection)
    } catch (error) {
      if (error instanceof JobwireError && error.code === 'position_ahead') {
        connection.activate()
        connection.write([{ type: 'error', error: error.toBody() }])
        connection.end()
        return
      }
      throw error
    }
    connection.subscription = subscription
    if (req.destroyed || res.destroyed) {
      subscription.close(false)
      return
    }
    res.on('close', () => {
      subscription.close(false)
      this.#connections.delete(connection)
    })
    this.#connections.add(connection)
    connection.activate()
  }

  close(): void {
    clearInterval(this.#timer)
  }
}
