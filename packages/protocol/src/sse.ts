import type { ErrorBody } from './errors.js'
import { eventTypes, type JobEvent } from './events.js'
import type { StreamMessage } from './stream.js'

/** One Server-Sent Events frame. */
export interface SseFrame {
  id?: string
  event?: string
  data: string
  retry?: number
}

/** Encodes one frame. Multi-line data becomes several `data:` lines, as the spec wants. */
export function encodeSseFrame(frame: SseFrame): string {
  let out = ''
  if (frame.id !== undefined) out += `id: ${frame.id}\n`
  if (frame.event !== undefined) out += `event: ${frame.event}\n`
  if (frame.retry !== undefined) out += `retry: ${frame.retry}\n`
  const data = frame.data
  out += data.includes('\n') || data.includes('\r')
    ? data.split(/\r\n|\r|\n/).map((line) => `data: ${line}\n`).join('')
    : `data: ${data}\n`
  return out + '\n'
}

/** The stream messages other than events, each sent as an SSE event of its own name. */
const messageEvents: Record<Exclude<StreamMessage['type'], 'event'>, true> = { snapshot: true, recovered: true, queue: true, error: true }

/**
 * Every SSE `event:` name a Jobwire stream sends: the stream messages, then one per event type.
 * An EventSource hears only the names it listens for: listen for each of these.
 */
export const sseEventNames: readonly string[] = [...Object.keys(messageEvents), ...eventTypes]

/** A comment line: ignored by EventSource, keeps proxies and the client's liveness check happy. */
export const sseHeartbeat = ': heartbeat\n\n'

export function encodeSseEvent(event: JobEvent): string {
  return `id: ${event.seq}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`
}

/** Encodes any stream message. Job events and snapshots carry `id:` = seq so EventSource resumes by itself. */
export function encodeSseMessage(message: StreamMessage): string {
  switch (message.type) {
    case 'event':
      return encodeSseEvent(message.event)
    case 'snapshot':
      return encodeSseFrame({
        id: String(message.job.seq),
        event: 'snapshot',
        data: JSON.stringify({ job: message.job, reset: message.reset, reason: message.reason }),
      })
    case 'recovered':
      return encodeSseFrame({ event: 'recovered', data: JSON.stringify({ after: message.after }) })
    case 'queue':
      return encodeSseFrame({ event: 'queue', data: JSON.stringify({ position: message.position }) })
    case 'error':
      return encodeSseFrame({ event: 'error', data: JSON.stringify(message.error) })
    default:
      return assertNever(message)
  }
}

/** Turns a parsed frame back into a stream message; `null` for frames Jobwire does not send. */
export function decodeSseMessage(frame: SseFrame): StreamMessage | null {
  switch (frame.event) {
    case undefined:
    case 'message':
      return null
    case 'snapshot': {
      const body = JSON.parse(frame.data) as Omit<Extract<StreamMessage, { type: 'snapshot' }>, 'type'>
      return { type: 'snapshot', ...body }
    }
    case 'recovered':
      return { type: 'recovered', after: (JSON.parse(frame.data) as { after: number }).after }
    case 'queue':
      return { type: 'queue', position: (JSON.parse(frame.data) as { position: number | null }).position }
    case 'error':
      return { type: 'error', error: JSON.parse(frame.data) as ErrorBody }
    default:
      return { type: 'event', event: JSON.parse(frame.data) as JobEvent }
  }
}

/**
 * An incremental SSE parser (WHATWG rules: any line ending, a leading BOM, comments, multi-line
 * data, `id` without NUL). Feed it chunks as they arrive; it calls `onFrame` per dispatched frame.
 */
export function createSseParser(onFrame: (frame: SseFrame) => void, onComment?: (text: string) => void) {
  let buffer = ''
  let first = true
  let data: string[] = []
  let event: string | undefined
  let id: string | undefined
  let retry: number | undefined
  // A chunk ended in \r: its line is already handled; a \n opening the next chunk completes that \r\n.
  let skipLf = false

  function line(text: string): void {
    if (text === '') {
      if (data.length > 0) {
        const frame: SseFrame = { data: data.join('\n') }
        if (event !== undefined) frame.event = event
        if (id !== undefined) frame.id = id
        if (retry !== undefined) frame.retry = retry
        onFrame(frame)
      }
      data = []
      event = undefined
      retry = undefined
      return
    }
    if (text.startsWith(':')) {
      onComment?.(text.slice(1).trimStart())
      return
    }
    const colon = text.indexOf(':')
    const field = colon === -1 ? text : text.slice(0, colon)
    let value = colon === -1 ? '' : text.slice(colon + 1)
    if (value.startsWith(' ')) value = value.slice(1)
    if (field === 'data') data.push(value)
    else if (field === 'event') event = value
    else if (field === 'id' && !value.includes('\0')) id = value
    else if (field === 'retry' && /^\d+$/.test(value)) retry = Number(value)
  }

  return {
    push(chunk: string): void {
      buffer += chunk
      if (first && buffer.length > 0) {
        if (buffer.charCodeAt(0) === 0xfeff) buffer = buffer.slice(1)
        first = false
      }
      let start = 0
      if (skipLf && buffer.length > 0) {
        if (buffer.charCodeAt(0) === 10) start = 1
        skipLf = false
      }
      for (let i = start; i < buffer.length; i++) {
        const c = buffer.charCodeAt(i)
        if (c !== 10 && c !== 13) continue
        // End the line at once: with \r line endings, waiting for a possible \n would hold back
        // the last frame until more bytes arrive, or forever if the stream closes.
        line(buffer.slice(start, i))
        if (c === 13) {
          if (i === buffer.length - 1) skipLf = true
          else if (buffer.charCodeAt(i + 1) === 10) i++
        }
        start = i + 1
      }
      buffer = buffer.slice(start)
    },
    /** The last `id:` seen: what a client sends as Last-Event-ID. */
    get lastEventId(): string | undefined {
      return id
    },
  }
}

export function errorMessage(error: ErrorBody): StreamMessage {
  return { type: 'error', error }
}

function assertNever(value: never): never {
  throw new Error(`unhandled stream message ${JSON.stringify(value)}`)
}
