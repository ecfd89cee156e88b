import type { WebSocket, RawData } from 'ws'
import {
  closeCodeOf,
  isLatestWinsEvent,
  JobwireError,
  wsCloseCodes,
  type JobEvent,
  type JobEventOf,
  type LatestWinsType,
  type WsServerMessage,
} from '@jobwire/protocol'
import { CoalescedRun } from './ws-coalesce.js'
import { snapshotJson } from './state-json.js'
import { destroyWhenStalled, PendingRun, PerBatch, stallTimeoutMs, TickFlusher, type DeliveryObserver } from './tick-flush.js'

/** What a connection needs to know about flow control (see config: `ws*`). */
export interface WsFlowSettings {
  /** Largest client message; a larger one is answered `message_too_large` and the socket closes with 1009. */
  maxMessageBytes: number
  /** Silence after which a `heartbeat` message is sent; also the ping interval for dead-peer detection. */
  heartbeatMs: number
  /** Unsent + in-flight bytes past which the reader is cut off with `slow_consumer`. */
  maxBufferBytes: number
  /** In-flight bytes past which latest-wins events are coalesced and sending waits for the socket to drain. */
  coalesceAfterBytes: number
  /** Client messages per second (average) and per burst. */
  messageRate: number
  messageBurst: number
  /** Called when a reader is cut off with `slow_consumer` (metrics). */
  onSlowConsumer?: () => void
  /** Hears the publish→deliver latency of live events, once per flush (metrics). */
  onDelivered?: DeliveryObserver
}

/** Receives each client message (one line of a text frame) that passed the flood check. */
export type LineHandler = (line: string) => void

function frameOf(event: JobEvent): string {
  return `{"type":"event","event":${JSON.stringify(event)}}`
}

// Events sent one by one (replays, readers that fell behind) are encoded once, however many
// sockets they go to. Live batches are encoded as a whole instead (encodedBatches), and do not
// fill this: a cache entry lives as long as its event, which the job's log keeps.
const encodedEvents = new WeakMap<JobEvent, string>()
function encodeEvent(event: JobEvent): string {
  let text = encodedEvents.get(event)
  if (text === undefined) {
    text = frameOf(event)
    encodedEvents.set(event, text)
  }
  return text
}

/** A live batch, encoded once whoever it goes to, and the stage it leaves the job in (undefined: unchanged). */
interface EncodedBatch {
  text: string
  stage: string | null | undefined
}
const encodedBatches = new PerBatch<EncodedBatch>((batch) => {
  let stage: string | null | undefined
  for (const event of batch) if (event.type === 'progress' && event.data.stage !== undefined) stage = event.data.stage
  return { text: batch.length === 1 ? frameOf(batch[0] as JobEvent) : batch.map(frameOf).join('\n'), stage }
})

const flusher = new TickFlusher<WsConnection>()

/**
 * One message waiting to be sent. A latest-wins event keeps what a later one of its job may merge
 * into while the reader is slow: first just the event, then the run it grew into.
 */
interface Outgoing {
  /** The encoding, or null while a run's is not yet built (it is, once, at flush). */
  text: string | null
  chars: number
  latest: { event: JobEventOf<LatestWinsType>; stageBefore: string | null | undefined } | null
  run: CoalescedRun | null
}

function encodeRun(run: CoalescedRun): string {
  const message = run.toMessage()
  return message.type === 'event' ? encodeEvent(message.event) : JSON.stringify(message)
}

const textOf = (entry: Outgoing): string => entry.text ?? encodeRun(entry.run as CoalescedRun)

/**
 * One WebSocket's framing and flow control: coalesced per-tick writes, backpressure (latest-wins
 * coalescing, then `slow_consumer`), heartbeats and dead-peer pings, and the inbound flood check.
 * It knows nothing of jobs beyond what coalescing needs.
 */
export class WsConnection {
  #pending: Outgoing[] = []
  #pendingChars = 0
  /** Bytes handed to the socket whose write has not completed. */
  #inflight = 0
  /** Whether #pending is exactly a run of one job's events, unmerged. */
  readonly #run = new PendingRun()
  /** Per job: its last pending entry when that is a latest-wins event (or run), so later ones can merge. */
  readonly #mergeable = new Map<string, Outgoing>()
  /** Per job: the stage in effect after everything queued so far (undefined: unknown). */
  readonly #stages = new Map<string, string | null | undefined>()
  #wroteSince = false
  /** Fan-out time of the oldest live event in #pending (0: none). */
  #publishedAt = 0
  #missedPongs = 0
  #closed = false
  #tokens: number
  #tokensAt = Date.now()
  /** Latest-wins events merged away for this reader (for tests and metrics). */
  coalesced = 0
  readonly closedPromise: Promise<void>

  constructor(
    private readonly socket: WebSocket,
    private readonly settings: WsFlowSettings,
    onLine: LineHandler,
  ) {
    this.#tokens = settings.messageBurst
    this.closedPromise = new Promise((resolve) => socket.once('close', () => resolve()))
    socket.on('close', () => {
      this.#closed = true
      flusher.forget(this)
      this.#pending = []
      this.#mergeable.clear()
    })
    // Errors (a reset peer, a protocol violation ws already answered with a close code) end the socket; never the process.
    socket.on('error', () => undefined)
    socket.on('pong', () => (this.#missedPongs = 0))
    socket.on('message', (data: RawData, isBinary: boolean) => this.#receive(data, isBinary, onLine))
  }

  get closed(): boolean {
    return this.#closed
  }

  /** Bytes this reader is behind: queued here plus handed to the socket and not yet written. */
  get lagBytes(): number {
    return this.#pendingChars + this.#inflight
  }

  send(messages: readonly WsServerMessage[], publishedAt?: number): void {
    if (this.#closed) return
    if (publishedAt !== undefined && this.#publishedAt === 0) this.#publishedAt = publishedAt
    for (const message of messages) {
      if (message.type === 'event') {
        this.#pushEvent(message.event)
        continue
      }
      this.#run.end()
      switch (message.type) {
        case 'subscribed':
          this.#mergeable.delete(message.jobId)
          if (message.recovered) this.#stages.set(message.jobId, undefined)
          break
        case 'snapshot':
          this.#mergeable.delete(message.jobId)
          this.#stages.set(message.jobId, message.job.progress.stage)
          break
        case 'error':
          if (message.jobId !== undefined) this.#mergeable.delete(message.jobId)
          break
        default:
          break
      }
      // A snapshot's state is encoded once however many sockets start from it (state-json.ts).
      const text =
        message.type === 'snapshot'
          ? `{"type":"snapshot","jobId":${JSON.stringify(message.jobId)},${snapshotJson(message.job, message.reset, message.reason).slice(1)}`
          : JSON.stringify(message)
      this.#push({ text, chars: text.length, latest: null, run: null })
    }
    this.#queued()
  }

  /** After queueing: a reader too far behind is cut off, else the flush of this turn takes what is pending. */
  #queued(): void {
    if (this.lagBytes > this.settings.maxBufferBytes && this.#inflight > this.settings.coalesceAfterBytes) {
      this.#slowConsumer()
      return
    }
    flusher.schedule(this)
  }

  /**
   * Sends consecutive events of one job (see `StreamSink.events`). While the reader keeps up, the
   * batch is queued as one entry with the encoding every subscriber shares; when it would take the
   * reader past `coalesceAfterBytes`, event by event, so latest-wins ones merge.
   */
  sendEvents(batch: readonly JobEvent[], publishedAt?: number): void {
    const first = batch[0]
    const last = batch[batch.length - 1]
    if (this.#closed || first === undefined || last === undefined) return
    if (publishedAt !== undefined && this.#publishedAt === 0) this.#publishedAt = publishedAt
    const encoded = encodedBatches.get(batch)
    if (this.lagBytes + encoded.text.length > this.settings.coalesceAfterBytes) {
      for (const event of batch) this.#pushEvent(event)
    } else {
      const { jobId } = first
      // Later events of the job must not merge into an entry queued before this batch.
      if (this.#mergeable.size > 0) this.#mergeable.delete(jobId)
      if (encoded.stage !== undefined) this.#stages.set(jobId, encoded.stage)
      this.#run.extend(this.#pending.length === 0, jobId, first.seq, last.seq)
      this.#push({ text: encoded.text, chars: encoded.text.length, latest: null, run: null })
    }
    this.#queued()
  }

  /** Forgets what coalescing kept about a job whose stream ended. */
  forgetJob(jobId: string): void {
    this.#mergeable.delete(jobId)
    this.#stages.delete(jobId)
  }

  #pushEvent(event: JobEvent): void {
    const text = encodeEvent(event)
    if (!isLatestWinsEvent(event)) {
      this.#mergeable.delete(event.jobId)
    } else {
      const open = this.#mergeable.get(event.jobId)
      // Unsent bytes, queued or in flight, past the threshold: the reader is behind, latest wins.
      if (open !== undefined && this.lagBytes > this.settings.coalesceAfterBytes && this.#merge(open, event, text.length)) {
        this.#run.end()
        this.coalesced++
        this.#trackStage(event)
        return
      }
    }
    const entry: Outgoing = {
      text,
      chars: text.length,
      latest: isLatestWinsEvent(event) ? { event, stageBefore: this.#stages.get(event.jobId) } : null,
      run: null,
    }
    if (entry.latest !== null) this.#mergeable.set(event.jobId, entry)
    this.#trackStage(event)
    this.#run.extend(this.#pending.length === 0, event.jobId, event.seq, event.seq)
    this.#push(entry)
  }

  /** Merges a latest-wins event into the job's pending entry, turning it into a run if need be. */
  #merge(entry: Outgoing, event: JobEvent, chars: number): boolean {
    if (entry.run === null) {
      if (entry.latest === null) return false
      entry.run = new CoalescedRun(entry.latest.event, entry.chars, entry.latest.stageBefore)
      entry.latest = null
    }
    if (!entry.run.add(event, chars)) return false
    entry.text = null
    this.#pendingChars += entry.run.chars - entry.chars
    entry.chars = entry.run.chars
    return true
  }

  #trackStage(event: JobEvent): void {
    if (event.type === 'progress' && event.data.stage !== undefined) this.#stages.set(event.jobId, event.data.stage)
  }

  #push(entry: Outgoing): void {
    this.#pending.push(entry)
    this.#pendingChars += entry.chars
  }

  /** Sends what is pending as one frame, unless the socket is still busy with earlier ones. */
  flush(): void {
    flusher.forget(this)
    if (this.#closed || this.#pending.length === 0) return
    if (this.#inflight > this.settings.coalesceAfterBytes) {
      // Congested: wait for the socket to drain (the write callback reschedules); meanwhile
      // latest-wins events merge in #pending instead of piling up.
      if (this.lagBytes > this.settings.maxBufferBytes) this.#slowConsumer()
      return
    }
    const pending = this.#pending
    const bytes = flusher.bytesOf(this.#run, () => (pending.length === 1 ? textOf(pending[0] as Outgoing) : pending.map(textOf).join('\n')))
    // Emptied in place, as is the map below (when it holds anything): a new array or table per flush
    // would live until the reader's next event, long enough to be promoted to the old generation —
    // with a watcher per job written every ~100 ms, that was several percent of the bytes the server
    // promoted at light load (heap sampling), and old-generation garbage is paid in mark-compact pauses.
    pending.length = 0
    this.#pendingChars = 0
    if (this.#mergeable.size > 0) this.#mergeable.clear()
    this.#run.end()
    this.#inflight += bytes.length
    this.#wroteSince = true
    if (this.#publishedAt !== 0) {
      if (this.settings.onDelivered !== undefined) flusher.delivered(this.settings.onDelivered, this.#publishedAt)
      this.#publishedAt = 0
    }
    this.socket.send(bytes, { binary: false }, () => {
      this.#inflight -= bytes.length
      if (this.#pending.length > 0 && this.#inflight <= this.settings.coalesceAfterBytes) flusher.schedule(this)
    })
  }

  /** Called every heartbeat interval: a `heartbeat` after silence, and a ping to find dead peers. */
  tick(): void {
    if (this.#closed) return
    if (this.#missedPongs >= 3) {
      this.socket.terminate()
      return
    }
    this.#missedPongs++
    this.socket.ping()
    if (!this.#wroteSince && this.#pending.length === 0) this.send([{ type: 'heartbeat' }])
    this.#wroteSince = false
  }

  /** Sends what is pending and an `error`, however congested, and closes with the error's close code. */
  fail(error: JobwireError): void {
    if (this.#closed) return
    const texts = this.#pending.map(textOf)
    texts.push(JSON.stringify({ type: 'error', error: error.toBody() } satisfies WsServerMessage))
    this.socket.send(texts.join('\n'))
    this.close(closeCodeOf(error.code), error.code, stallTimeoutMs, true)
  }

  /**
   * Closes politely; a peer that does not answer the close within `terminateAfterMs` is cut off —
   * or, `whileReading`, one that has not read any of the bytes still queued for it in that time
   * (so that a slow reader still gets the error sent before the close).
   */
  close(code: number = wsCloseCodes.normal, reason = '', terminateAfterMs = 5_000, whileReading = false): void {
    if (this.#closed) return
    this.#closed = true
    flusher.forget(this)
    this.#pending = []
    this.#mergeable.clear()
    this.socket.close(code, reason)
    // A reader that stopped reading never completes the closing handshake.
    const socket = this.socket
    if (whileReading) {
      const closing = { get destroyed() { return socket.readyState === socket.CLOSED }, destroy: () => socket.terminate() }
      destroyWhenStalled(closing, () => socket.bufferedAmount, terminateAfterMs)
    } else setTimeout(() => socket.terminate(), terminateAfterMs).unref()
  }

  #slowConsumer(): void {
    this.settings.onSlowConsumer?.()
    const error = new JobwireError('slow_consumer', { bytes: this.lagBytes })
    // What is pending is dropped: the reader resumes from the last seq it applied.
    this.#pending = []
    this.#pendingChars = 0
    this.socket.send(JSON.stringify({ type: 'error', error: error.toBody() } satisfies WsServerMessage))
    this.close(closeCodeOf('slow_consumer'), 'slow_consumer', stallTimeoutMs, true)
  }

  #receive(data: RawData, isBinary: boolean, onLine: LineHandler): void {
    if (this.#closed) return
    if (isBinary) {
      this.send([{ type: 'error', error: new JobwireError('malformed_message', { reason: 'binary frames are not accepted' }).toBody() }])
      return
    }
    const size = Buffer.isBuffer(data) ? data.length : Array.isArray(data) ? data.reduce((sum, part) => sum + part.length, 0) : data.byteLength
    if (size > this.settings.maxMessageBytes) {
      this.fail(new JobwireError('message_too_large', { limit: this.settings.maxMessageBytes }))
      return
    }
    const text = Buffer.isBuffer(data) ? data.toString('utf8') : Array.isArray(data) ? Buffer.concat(data).toString('utf8') : Buffer.from(data).toString('utf8')
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue
      if (!this.#takeToken()) {
        const { messageRate, messageBurst } = this.settings
        this.fail(
          new JobwireError('rate_limited', { limit: 'messages', max: messageBurst, window: `burst (${messageRate} per second sustained)`, retryAfter: 1 }),
        )
        return
      }
      onLine(line)
      if (this.#closed) return
    }
  }

  #takeToken(): boolean {
    const now = Date.now()
    const { messageRate, messageBurst } = this.settings
    this.#tokens = Math.min(messageBurst, this.#tokens + ((now - this.#tokensAt) / 1000) * messageRate)
    this.#tokensAt = now
    if (this.#tokens < 1) return false
    this.#tokens -= 1
    return true
  }
}
