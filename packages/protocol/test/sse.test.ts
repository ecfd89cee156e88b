import { describe, expect, it } from 'vitest'
import {
  applyEvent,
  createSseParser,
  decodeSseMessage,
  encodeSseFrame,
  encodeSseMessage,
  errorMessage,
  eventTypes,
  jobStatuses,
  JobwireError,
  sseEventNames,
  sseHeartbeat,
  type EventDraft,
  type EventType,
  type JobEvent,
  type JobState,
  type JobStatus,
  type SseFrame,
  type StreamMessage,
} from '@jobwire/protocol'

const jobId = 'job_AAAAAAAAAAAAAAAAAAAAAA'

function event(seq: number, draft: EventDraft): JobEvent {
  return { jobId, seq, at: new Date(Date.UTC(2025, 0, 1, 0, 0, seq)).toISOString(), ...draft } as JobEvent
}

/** One event of every type, with text that exercises escaping (newlines, CR, quotes, non-ASCII). */
const events: JobEvent[] = [
  event(1, { type: 'created', data: { type: 'agent', input: { prompt: 'line 1\nline 2' }, owner: { tenant: 't', user: 'ü' }, dispatch: false, maxAttempts: 1 } }),
  event(2, { type: 'started', data: { attempt: 1, worker: 'w-1' } }),
  event(3, { type: 'progress', data: { stage: 'thinking', percent: 12.5, message: 'step "one"' } }),
  event(4, { type: 'item', data: { id: 'file:1', label: 'naïve.txt', status: 'completed', percent: 100 } }),
  event(5, { type: 'chunk', data: { text: 'Hello\r\nwörld 😀\n\n' } }),
  event(6, { type: 'checkpoint', data: { data: { cursor: [1, 2, 3] } } }),
  event(7, { type: 'failed', data: { code: 'oops', message: 'data: not a field', retryable: true } }),
  event(8, { type: 'requeued', data: { reason: 'retry', attempt: 1, retryAt: null } }),
  event(9, { type: 'cancelled', data: { reason: null } }),
  event(10, { type: 'completed', data: { result: { ok: true, text: 'id: 7\n\nevent: x' } } }),
]

const snapshotJob: JobState = events.slice(0, 6).reduce<JobState | null>((state, e) => applyEvent(state, e), null) as JobState

const messages: StreamMessage[] = [
  { type: 'snapshot', job: snapshotJob, reset: false, reason: 'initial' },
  { type: 'recovered', after: 6 },
  ...events.map((e): StreamMessage => ({ type: 'event', event: e })),
  { type: 'queue', position: 3 },
  { type: 'snapshot', job: snapshotJob, reset: true, reason: 'trimmed' },
  errorMessage(new JobwireError('slow_consumer', { bytes: 1048576 }).toBody()),
]

function parseAll(chunks: readonly string[]): { frames: SseFrame[]; comments: string[]; lastEventId: string | undefined } {
  const frames: SseFrame[] = []
  const comments: string[] = []
  const parser = createSseParser((frame) => frames.push(frame), (text) => comments.push(text))
  for (const chunk of chunks) parser.push(chunk)
  return { frames, comments, lastEventId: parser.lastEventId }
}

function decodeAll(frames: readonly SseFrame[]): (StreamMessage | null)[] {
  return frames.map((frame) => decodeSseMessage(frame))
}

const stream = messages.map((m) => encodeSseMessage(m)).join(sseHeartbeat)

describe('SSE: encode then parse gives back every stream message', () => {
  it.each(messages.map((m) => [m.type === 'event' ? `event ${m.event.type}` : m.type, m] as const))('%s round-trips', (_name, message) => {
    const { frames } = parseAll([encodeSseMessage(message)])
    expect(frames).toHaveLength(1)
    expect(decodeSseMessage(frames[0] as SseFrame)).toEqual(message)
  })

  it('covers every StreamMessage kind, every event type and both snapshot reasons', () => {
    // A Record needs every kind: a kind added to StreamMessage fails to compile here until listed.
    const kinds: Record<StreamMessage['type'], true> = { snapshot: true, recovered: true, event: true, queue: true, error: true }
    expect(new Set(messages.map((m) => m.type))).toEqual(new Set(Object.keys(kinds)))
    expect(new Set(events.map((e) => e.type))).toEqual(new Set(eventTypes))
    const reasons = messages.flatMap((m) => (m.type === 'snapshot' ? [m.reason] : []))
    expect(new Set(reasons)).toEqual(new Set(['initial', 'trimmed']))
  })

  it('job events and snapshots carry id = seq and event = type; recovered and error carry no id', () => {
    const { frames } = parseAll(messages.map((m) => encodeSseMessage(m)))
    const ids = frames.map((f) => [f.event, f.id])
    expect(ids[0]).toEqual(['snapshot', '6'])
    expect(ids[2]).toEqual(['created', '1'])
    expect(ids[11]).toEqual(['completed', '10'])
    expect(encodeSseMessage({ type: 'recovered', after: 3 })).not.toMatch(/^id:/m)
    expect(encodeSseMessage(messages.at(-1) as StreamMessage)).not.toMatch(/^id:/m)
  })

  it('a stream of all messages with heartbeats in between parses back in order', () => {
    const { frames, comments, lastEventId } = parseAll([stream])
    expect(decodeAll(frames)).toEqual(messages)
    expect(comments).toEqual(Array(messages.length - 1).fill('heartbeat'))
    // The last id seen was the trimmed snapshot's (recovered and error frames carry none).
    expect(lastEventId).toBe(String(snapshotJob.seq))
  })
})

/** `true` when `Listed` covers the union `All`; otherwise the members it lacks (so assigning `true` fails to compile). */
type Covers<All, Listed> = [Exclude<All, Listed>] extends [never] ? true : Exclude<All, Listed>

describe('protocol lists: every member of their unions, and what an EventSource must listen for', () => {
  it('eventTypes and jobStatuses list every member of their types (a member added to a type fails to compile here)', () => {
    const everyEventType: Covers<EventType, (typeof eventTypes)[number]> = true
    const everyStatus: Covers<JobStatus, (typeof jobStatuses)[number]> = true
    expect([everyEventType, everyStatus]).toEqual([true, true])
    expect(new Set(eventTypes).size).toBe(eventTypes.length)
    expect(new Set(jobStatuses).size).toBe(jobStatuses.length)
  })

  it('sseEventNames is exactly the set of names the encoder sends, so a listener for each hears every message', () => {
    const { frames } = parseAll(messages.map((m) => encodeSseMessage(m)))
    expect(new Set(frames.map((f) => f.event))).toEqual(new Set(sseEventNames))
    expect(sseEventNames).toHaveLength(new Set(sseEventNames).size)
  })
})

describe('SSE parser: chunk boundaries', () => {
  const expected = decodeAll(parseAll([stream]).frames)

  it('gives the same messages when the stream is split in two at every character', () => {
    for (let i = 0; i <= stream.length; i++) {
      expect(decodeAll(parseAll([stream.slice(0, i), stream.slice(i)]).frames), `split at ${i}`).toEqual(expected)
    }
  })

  it('gives the same messages when fed one character at a time', () => {
    expect(decodeAll(parseAll([...stream.split('')]).frames)).toEqual(expected)
  })

  it('gives the same messages when the UTF-8 bytes are split at every byte and decoded with a streaming TextDecoder', () => {
    const bytes = new TextEncoder().encode(stream)
    expect(bytes.length).toBeGreaterThan(stream.length) // the stream holds multi-byte characters
    for (let i = 0; i <= bytes.length; i++) {
      const decoder = new TextDecoder()
      const chunks = [decoder.decode(bytes.subarray(0, i), { stream: true }), decoder.decode(bytes.subarray(i), { stream: true }), decoder.decode()]
      expect(decodeAll(parseAll(chunks).frames), `split at byte ${i}`).toEqual(expected)
    }
    const decoder = new TextDecoder()
    const byteChunks = [...bytes].map((b) => decoder.decode(Uint8Array.of(b), { stream: true }))
    expect(decodeAll(parseAll(byteChunks).frames)).toEqual(expected)
  })
})

describe('SSE parser: line endings', () => {
  const lf = 'id: 1\nevent: chunk\ndata: first\ndata: second\n\nid: 2\ndata: third\n\n'
  const variants = {
    '\\n': lf,
    '\\r\\n': lf.replaceAll('\n', '\r\n'),
    '\\r': lf.replaceAll('\n', '\r'),
  }
  const want: SseFrame[] = [
    { id: '1', event: 'chunk', data: 'first\nsecond' },
    { id: '2', data: 'third' },
  ]

  it.each(Object.entries(variants))('parses %s line endings, whole and split at every character', (_name, text) => {
    expect(parseAll([text]).frames).toEqual(want)
    for (let i = 0; i <= text.length; i++) {
      expect(parseAll([text.slice(0, i), text.slice(i)]).frames, `split at ${i}`).toEqual(want)
    }
    expect(parseAll(text.split('')).frames).toEqual(want)
  })

  it('parses a stream that mixes \\r\\n, \\r and \\n', () => {
    expect(parseAll(['id: 1\r\nevent: chunk\rdata: first\ndata: second\r\n\rid: 2\rdata: third\n\r\n']).frames).toEqual(want)
  })

  it('dispatches an event that ends in \\r\\r as soon as it arrives, without waiting for more bytes', () => {
    // A stream may close right after a terminal event; with CR line endings nothing else will follow.
    expect(parseAll(['data: done\r\r']).frames).toEqual([{ data: 'done' }])
    expect(parseAll(['data: done\r', '\r']).frames).toEqual([{ data: 'done' }])
  })

  it('treats \\r then \\n in the next chunk as one line break, not two', () => {
    // Two breaks would end the frame early and split "a" and "b" into separate frames.
    expect(parseAll(['data: a\r', '\ndata: b\r\n\r\n']).frames).toEqual([{ data: 'a\nb' }])
  })
})

describe('SSE parser: the rest of the WHATWG rules', () => {
  it('skips a leading byte-order mark, even in a chunk of its own', () => {
    expect(parseAll(['\uFEFFdata: x\n\n']).frames).toEqual([{ data: 'x' }])
    expect(parseAll(['\uFEFF', 'data: x\n\n']).frames).toEqual([{ data: 'x' }])
    expect(parseAll(['', '\uFEFFdata: x\n\n']).frames).toEqual([{ data: 'x' }])
  })

  it('skips only the first byte-order mark: a later one is part of a field name', () => {
    expect(parseAll(['\uFEFF\uFEFFdata: x\n\ndata: y\n\n']).frames).toEqual([{ data: 'y' }])
  })

  it('reports comments and never turns them into frames', () => {
    const { frames, comments } = parseAll([': heartbeat\n\n:no space\n: a: b\ndata: x\n\n'])
    expect(frames).toEqual([{ data: 'x' }])
    expect(comments).toEqual(['heartbeat', 'no space', 'a: b'])
  })

  it('joins several data lines with \\n and keeps empty ones', () => {
    expect(parseAll(['data: a\ndata:\ndata\ndata:  b\n\n']).frames).toEqual([{ data: 'a\n\n\n b' }])
  })

  it('encodes multi-line data as several data lines that parse back to the same text', () => {
    const frame = encodeSseFrame({ event: 'note', data: 'one\ntwo\n\nthree\n' })
    expect(frame).toBe('event: note\ndata: one\ndata: two\ndata: \ndata: three\ndata: \n\n')
    expect(parseAll([frame]).frames).toEqual([{ event: 'note', data: 'one\ntwo\n\nthree\n' }])
  })

  it('normalises \\r\\n and \\r inside data to \\n', () => {
    expect(parseAll([encodeSseFrame({ data: 'a\r\nb\rc' })]).frames).toEqual([{ data: 'a\nb\nc' }])
  })

  it('reads a numeric retry and ignores one that is not all digits', () => {
    const text = encodeSseFrame({ retry: 2500, data: 'x' }) + 'retry: 1e3\ndata: y\n\n' + 'retry: -5\ndata: z\n\n'
    expect(encodeSseFrame({ retry: 2500, data: 'x' })).toBe('retry: 2500\ndata: x\n\n')
    expect(parseAll([text]).frames).toEqual([{ retry: 2500, data: 'x' }, { data: 'y' }, { data: 'z' }])
  })

  it('does not dispatch a frame with no data lines, and resets its event name', () => {
    expect(parseAll(['event: lonely\n\ndata: x\n\n']).frames).toEqual([{ data: 'x' }])
  })

  it('drops a trailing frame that never got its blank line', () => {
    expect(parseAll(['data: x\n\ndata: unfinished\n']).frames).toEqual([{ data: 'x' }])
  })

  it('keeps the last id for later frames and for Last-Event-ID, and ignores an id containing NUL', () => {
    const { frames, lastEventId } = parseAll(['id: 7\ndata: a\n\ndata: b\n\nid: 8\0\ndata: c\n\n'])
    expect(frames).toEqual([
      { id: '7', data: 'a' },
      { id: '7', data: 'b' },
      { id: '7', data: 'c' },
    ])
    expect(lastEventId).toBe('7')
  })

  it('accepts an empty id, which resets Last-Event-ID', () => {
    expect(parseAll(['id: 3\ndata: a\n\nid\ndata: b\n\n']).lastEventId).toBe('')
  })

  it('ignores unknown fields and strips exactly one space after the colon', () => {
    expect(parseAll(['foo: bar\nevent:  spaced\ndata:x\n\n']).frames).toEqual([{ event: ' spaced', data: 'x' }])
  })

  it('decodes frames Jobwire never sends (no event name, or "message") to null', () => {
    expect(decodeSseMessage({ data: 'x' })).toBeNull()
    expect(decodeSseMessage({ event: 'message', data: 'x' })).toBeNull()
  })

  it('the heartbeat is a comment that produces no frame', () => {
    expect(parseAll([sseHeartbeat, sseHeartbeat]).frames).toEqual([])
  })
})
