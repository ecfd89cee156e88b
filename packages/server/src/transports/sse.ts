import type { IncomingMessage, ServerResponse } from 'node:http'
import { encodeSseEvent, encodeSseFrame, encodeSseMessage, JobwireError, sseHeartbeat, type JobEvent, type StreamMessage } from '@jobwire/protocol'
import type { JobSubscription, StreamSink } from '../core/subscription.js'
import { SpreadTicker } from './spread-ticker.js'
import { snapshotJson } from './state-json.js'
import { destroyWhenStalled, PendingRun, PerBatch, stallTimeoutMs, TickFlusher, type DeliveryObserver } from './tick-flush.js'

export interface SseOptions {
  /** Interval of `: heartbeat` comments, which keep proxies from timing out and let clients detect a dead link. */
  heartbeatMs: number
  /** `retry:` reconnect hint sent first. */
  retryMs: number
  /** Bytes a reader may fall behind before it is closed with `slow_consumer`. */
  maxBufferBytes: number
  /** Called when a reader is closed with `slow_consumer` (metrics). */
  onSlowConsumer?: () => void
  /** Hears the publish→deliver latency of live events, once per flush (metrics). */
  onDelivered?: DeliveryObserver
}

const sseHeaders = {
  'Content-Type': 'text/event-stream; charset=utf-8',
  'Cache-Control': 'no-cache, no-transform',
  Connection: 'keep-alive',
  'X-Accel-Buffering': 'no',
} as const

// Events written one by one (replays) are encoded once, however many subscribers they go to. Live
// batches are encoded as a whole instead (batchFrames), and do not fill this: an entry lives as long
// as its event, which the job's log keeps.
const encoded = new WeakMap<JobEvent, string>()
function encodeOnce(event: JobEvent): string {
  let frame = encoded.get(event)
  if (frame === undefined) {
    frame = encodeSseEvent(event)
    encoded.set(event, frame)
  }
  return frame
}

// A live batch is encoded once, whoever it goes to: the frames of its events, back to back.
const batchFrames = new PerBatch<string>((batch) => (batch.length === 1 ? encodeSseEvent(batch[0] as JobEvent) : batch.map(encodeSseEvent).join('')))

const flusher = new TickFlusher<SseConnection>()

/** One open SSE response. Writes made in one turn of the event loop go out as one socket write. */
class SseConnection implements StreamSink {
  #pending = ''
  /** Whether #pending holds exactly the frames of a run of one job's events. */
  readonly #run = new PendingRun()
  #open = false
  #ended = false
  #wroteSince = false
  /** Fan-out time of the oldest live event in #pending (0: none). */
  #publishedAt = 0
  subscription: JobSubscription | null = null

  constructor(
    private readonly res: ServerResponse,
    private readonly options: SseOptions,
    private readonly onDone: () => void,
  ) {}

  write(messages: readonly StreamMessage[], publishedAt?: number): void {
    if (publishedAt !== undefined && this.#publishedAt === 0) this.#publishedAt = publishedAt
    for (const message of messages) {
      if (message.type !== 'event') {
        this.#run.end()
        // A snapshot as encodeSseMessage writes it, around the state's shared JSON (state-json.ts).
        this.#pending +=
          message.type === 'snapshot'
            ? encodeSseFrame({ id: String(message.job.seq), event: 'snapshot', data: snapshotJson(message.job, message.reset, message.reason) })
            : encodeSseMessage(message)
        continue
      }
      const event = message.event
      const frame = encodeOnce(event)
      this.#run.extend(this.#pending === '', event.jobId, event.seq, event.seq)
      this.#pending += frame
    }
    this.#schedule()
  }

  events(batch: readonly JobEvent[], publishedAt?: number): void {
    const first = batch[0]
    const last = batch[batch.length - 1]
    if (first === undefined || last === undefined) return
    // Encoded before anything changes: an event that cannot be encoded leaves this connection as it was.
    const frames = batchFrames.get(batch)
    if (publishedAt !== undefined && this.#publishedAt === 0) this.#publishedAt = publishedAt
    this.#run.extend(this.#pending === '', first.jobId, first.seq, last.seq)
    this.#pending += frames
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
    this.flush()
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
    if (this.#open) flusher.schedule(this)
  }

  /** Writes what is pending (called by the shared flush, or directly on activation). */
  flush(): void {
    flusher.forget(this)
    if (this.res.destroyed || this.res.writableEnded) return
    if (this.#pending !== '') {
      this.res.write(this.#run.active ? flusher.bytesOf(this.#run, () => this.#pending) : this.#pending)
      this.#pending = ''
      this.#wroteSince = true
      if (this.#publishedAt !== 0) {
        if (this.options.onDelivered !== undefined) flusher.delivered(this.options.onDelivered, this.#publishedAt)
        this.#publishedAt = 0
      }
    }
    if (this.#ended) {
      this.res.end()
      this.onDone()
      return
    }
    if (this.res.writableLength > this.options.maxBufferBytes) this.#closeSlow()
  }

  #closeSlow(): void {
    this.options.onSlowConsumer?.()
    this.fail(new JobwireError('slow_consumer', { bytes: this.res.writableLength }))
  }

  /**
   * Ends the stream for a node shutdown: what is pending goes out, then a short `retry:` so the
   * client reconnects (to this node once it is back, or another) and resumes from its last seq.
   */
  handOff(retryMs: number): void {
    if (this.#ended || this.res.destroyed) return
    flusher.forget(this)
    this.subscription?.close(false)
    this.#ended = true
    this.res.end(`${this.#pending}retry: ${retryMs}\n\n`)
    this.#pending = ''
    this.onDone()
  }

  /** Ends the stream with an in-band error (expired token, revoked key, slow reader). */
  fail(error: JobwireError): void {
    if (this.#ended || this.res.destroyed) return
    flusher.forget(this)
    this.subscription?.close(false)
    this.#ended = true
    this.res.end(this.#pending + encodeSseMessage({ type: 'error', error: error.toBody() }))
    this.#pending = ''
    // The error frame goes out after what the reader has not read yet; it gets it as long as it
    // keeps reading. One that takes nothing for `stallTimeoutMs` would hold the socket forever.
    destroyWhenStalled(this.res, () => this.res.writableLength, stallTimeoutMs)
    this.onDone()
  }
}

/** A served stream, for whoever must end it early or learn when it ends. */
export interface SseStream {
  fail(error: JobwireError): void
  /** Resolves when the connection is gone, whoever ended it. */
  readonly closed: Promise<void>
}

/**
 * The SSE transport: encodes a subscription as `text/event-stream` (`id:` = seq, `event:` = type).
 * It owns no job logic; `open` creates the subscription and may reject before any byte is sent.
 */
export class SseTransport {
  /** The open streams, each heartbeated in its own slot of the interval (not all at once). */
  readonly #connections: SpreadTicker<SseConnection>
  /** Set by shutdown(): the `retry:` a stream that finishes opening afterwards is handed off with. */
  #handOffRetryMs: number | null = null

  constructor(private readonly options: SseOptions) {
    this.#connections = new SpreadTicker(options.heartbeatMs, (connection) => connection.heartbeat())
  }

  get connections(): number {
    return this.#connections.size
  }

  /**
   * Serves one stream on a raw response. Rejections of `open` (unknown job, `position_ahead`) are
   * rethrown before any byte is sent, for the caller to answer as plain HTTP errors: a non-200
   * answer is what stops an EventSource from reconnecting.
   */
  async serve(req: IncomingMessage, res: ServerResponse, open: (sink: StreamSink) => Promise<JobSubscription>): Promise<SseStream> {
    const connection = new SseConnection(res, this.options, () => this.#connections.delete(connection))
    // A client that went away before this (while its job was read, its stream slots taken) closed its
    // response already, and no 'close' comes again: waited for, that stream's slots were never given back.
    const closed = req.destroyed || res.destroyed ? Promise.resolve() : new Promise<void>((resolve) => res.once('close', () => resolve()))
    const stream: SseStream = { fail: (error) => connection.fail(error), closed }
    const subscription = await open(connection)
    connection.subscription = subscription
    if (req.destroyed || res.destroyed) {
      subscription.close(false)
      return stream
    }
    res.on('close', () => {
      subscription.close(false)
      this.#connections.delete(connection)
    })
    this.#connections.add(connection)
    connection.activate()
    // It was still opening when the node began shutting down: it goes the way of the others.
    if (this.#handOffRetryMs !== null) connection.handOff(this.#handOffRetryMs)
    return stream
  }

  /** Node shutdown: every open stream is told to reconnect soon (it loses nothing: it resumes by seq). */
  shutdown(retryMs = 250): void {
    this.#handOffRetryMs = retryMs
    for (const connection of [...this.#connections]) connection.handOff(retryMs)
  }

  close(): void {
    this.#connections.close()
  }
}
