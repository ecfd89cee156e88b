import { describe, expect, it } from 'vitest'
import type { ProducerEvent } from '@jobwire/protocol'
import { WorkerRequestError } from '../src/api.js'
import { failureOf, JobAbortedError, JobFailure, RetryableError } from '../src/errors.js'
import { defaultLimits, fitText, Outbox, type BatchLimits, type OutboxOptions } from '../src/outbox.js'
import { ManualTimers, settle } from './harness.js'
import { LazyAbort } from '../src/timing.js'

interface Sent {
  batch: number
  events: ProducerEvent[]
}

/** An outbox whose requests go to `answer` (default: applied at once), on manual timers. */
function makeOutbox(options: Partial<OutboxOptions> & { answer?: (sent: Sent) => Promise<unknown> } = {}) {
  const timers = new ManualTimers()
  const sent: Sent[] = []
  const ends: { reason: string; error: unknown }[] = []
  const retries: unknown[] = []
  const outbox = new Outbox({
    throttleMs: 100,
    stage: null,
    limits: defaultLimits,
    timers,
    random: () => 0.5,
    backoff: { baseMs: 10, maxMs: 100 },
    send: (batch, events) => {
      const record = { batch, events: structuredClone(events) }
      sent.push(record)
      return options.answer === undefined ? Promise.resolve({}) : options.answer(record)
    },
    onRetry: (error) => retries.push(error),
    onEnd: (reason, error) => ends.push({ reason, error }),
    ...options,
  })
  const events = (): ProducerEvent[] => sent.flatMap((s) => s.events)
  return { outbox, timers, sent, ends, retries, events }
}

const httpError = (status: number, code: string, details?: Record<string, unknown>) =>
  new WorkerRequestError('events', status, code, code, details)

describe('throttling and coalescing', () => {
  it('sends the first progress at once and coalesces a burst into one later update with the latest values', async () => {
    const { outbox, timers, events } = makeOutbox()
    for (let i = 0; i <= 1000; i++) outbox.progress({ percent: i / 10, message: `step ${i}` })
    await settle()
    expect(events()).toEqual([{ type: 'progress', percent: 0, message: 'step 0' }])
    await timers.advance(99)
    expect(events()).toHaveLength(1)
    await timers.advance(1)
    expect(events()).toEqual([
      { type: 'progress', percent: 0, message: 'step 0' },
      { type: 'progress', percent: 100, message: 'step 1000' },
    ])
  })

  it('keeps fields of a coalesced progress that later updates left out', async () => {
    const { outbox, timers, events } = makeOutbox()
    outbox.progress({ percent: 1 })
    outbox.progress({ message: 'loading' })
    outbox.progress({ percent: 5 })
    await timers.advance(100)
    expect(events().at(-1)).toEqual({ type: 'progress', message: 'loading', percent: 5 })
  })

  it('sends a stage change at once, after the last pending progress of the previous stage', async () => {
    const { outbox, events } = makeOutbox()
    outbox.progress({ stage: 'decoding', percent: 0 })
    outbox.progress({ percent: 50 })
    outbox.progress({ percent: 99 })
    outbox.progress({ stage: 'transcribing', percent: 0 })
    outbox.progress({ stage: 'synthesizing' })
    await settle()
    expect(events()).toEqual([
      { type: 'progress', stage: 'decoding', percent: 0 },
      { type: 'progress', percent: 99 },
      { type: 'progress', stage: 'transcribing', percent: 0 },
      { type: 'progress', stage: 'synthesizing' },
    ])
  })

  it('does not treat the stage the job already had (a resumed job) as a change', async () => {
    const { outbox, events } = makeOutbox({ stage: 'decoding' })
    outbox.progress({ percent: 1 })
    outbox.progress({ stage: 'decoding', percent: 2 })
    await settle()
    expect(events()).toEqual([{ type: 'progress', percent: 1 }])
  })

  it('coalesces item updates per id, merging fields, latest wins', async () => {
    const { outbox, timers, events } = makeOutbox()
    outbox.progress({ percent: 1 }) // opens a throttle window
    outbox.item('a', { label: 'a.mp3', status: 'running', percent: 10 })
    outbox.item('b', { label: 'b.mp3' })
    outbox.item('a', { percent: 60 })
    outbox.item('a', { status: 'completed', percent: 100 })
    outbox.item('b', { status: 'failed', message: 'bad codec' })
    await timers.advance(100)
    expect(events().slice(1)).toEqual([
      { type: 'item', id: 'a', label: 'a.mp3', status: 'completed', percent: 100 },
      { type: 'item', id: 'b', label: 'b.mp3', status: 'failed', message: 'bad codec' },
    ])
  })

  it('concatenates text into one chunk per send, in order', async () => {
    const { outbox, timers, events } = makeOutbox()
    outbox.chunk('a')
    outbox.chunk('b')
    outbox.chunk('')
    outbox.chunk('c')
    await timers.advance(100)
    expect(events()).toEqual([{ type: 'chunk', text: 'a' }, { type: 'chunk', text: 'bc' }])
  })

  it('sends everything pending before a checkpoint and resolves it only once the server applied it', async () => {
    let release: () => void = () => {}
    const { outbox, events, sent } = makeOutbox({
      answer: (s) => (s.batch === 1 ? new Promise<unknown>((resolve) => (release = () => resolve({}))) : Promise.resolve({})),
    })
    outbox.chunk('one ')
    outbox.chunk('two ')
    outbox.progress({ percent: 30 })
    let durable = false
    const checkpoint = outbox.checkpoint({ at: 2 }, 20).then(() => (durable = true))
    await settle()
    expect(sent).toHaveLength(1)
    expect(durable).toBe(false)
    release()
    await checkpoint
    expect(events()).toEqual([
      { type: 'chunk', text: 'one ' },
      { type: 'progress', percent: 30 },
      { type: 'chunk', text: 'two ' },
      { type: 'checkpoint', data: { at: 2 } },
    ])
  })

  it('keeps only the last of several checkpoints that end up in one batch, resolving them all', async () => {
    let release: () => void = () => {}
    const { outbox, sent } = makeOutbox({
      answer: (s) => (s.batch === 1 ? new Promise<unknown>((resolve) => (release = () => resolve({}))) : Promise.resolve({})),
    })
    outbox.chunk('x')
    await settle()
    const first = outbox.checkpoint({ n: 1 }, 10)
    outbox.chunk('y')
    const second = outbox.checkpoint({ n: 2 }, 10)
    release()
    await Promise.all([first, second])
    expect(sent[1]?.events).toEqual([{ type: 'chunk', text: 'y' }, { type: 'checkpoint', data: { n: 2 } }])
  })
})

describe('batches on the wire', () => {
  it('splits long text by JSON bytes without breaking characters, within batch limits', async () => {
    const limits: BatchLimits = { maxBatchEvents: 3, maxEventBytes: 300, maxBatchBytes: 700, maxValueBytes: 10_000 }
    const { outbox, sent, events } = makeOutbox({ limits, throttleMs: 0 })
    const text = 'ascii "quoted" \\ é — 😀 \u0001 '.repeat(200) + '\ud800 lone'
    outbox.chunk(text)
    await outbox.flush()
    expect(events().map((e) => (e.type === 'chunk' ? e.text : '')).join('')).toBe(text)
    for (const batch of sent) {
      expect(batch.events.length).toBeLessThanOrEqual(3)
      const sizes = batch.events.map((e) => Buffer.byteLength(JSON.stringify(e)))
      for (const size of sizes) expect(size).toBeLessThanOrEqual(300)
      expect(sizes.reduce((a, b) => a + b + 1, 0)).toBeLessThanOrEqual(700)
    }
    expect(sent.map((s) => s.batch)).toEqual(sent.map((_, i) => i + 1))
  })

  it('measures text exactly as JSON.stringify encodes it', () => {
    for (const text of ['plain', 'é', '😀', '"\\', '\n\t', '\u0001', '\ud800', '\udc00x', 'a😀b']) {
      const { end, size } = fitText(text, 10_000)
      expect(end).toBe(text.length)
      expect(size).toBe(Buffer.byteLength(JSON.stringify(text)) - 2)
    }
    expect(fitText('a😀', 4).end).toBe(1) // never half a surrogate pair
  })

  it('sends at most 1,000 events per batch by default', async () => {
    const { outbox, sent, timers } = makeOutbox({ throttleMs: 0 })
    const blocked = outbox.checkpoint(0, 10) // batch 1 in flight while the rest queue up
    for (let i = 0; i < 2500; i++) {
      outbox.item(`item-${i}`, { percent: 1 })
      await timers.advance(0)
    }
    await Promise.all([blocked, outbox.flush()])
    expect(Math.max(...sent.map((s) => s.events.length))).toBeLessThanOrEqual(1000)
    expect(sent.flatMap((s) => s.events).filter((e) => e.type === 'item')).toHaveLength(2500)
  })
})

describe('failures', () => {
  it('retries a failed request with the same batch number and the same events', async () => {
    let calls = 0
    const { outbox, sent, retries, timers } = makeOutbox({
      answer: () => (++calls <= 2 ? Promise.reject(new WorkerRequestError('events', 503, 'unavailable', 'down')) : Promise.resolve({})),
    })
    outbox.chunk('abc')
    const done = outbox.flush()
    await timers.advance(1_000)
    await done
    expect(sent.map((s) => s.batch)).toEqual([1, 1, 1])
    expect(new Set(sent.map((s) => JSON.stringify(s.events))).size).toBe(1)
    expect(retries).toHaveLength(2)
  })

  it("waits at least the server's Retry-After before sending again (an overloaded node's 1 s, not its own 5 ms backoff); at most a minute", async () => {
    for (const [retryAfter, waitMs] of [
      [1, 1_000],
      [3_600, 60_000],
    ] as const) {
      let calls = 0
      const { outbox, sent, timers } = makeOutbox({
        answer: () => (++calls === 1 ? Promise.reject(httpError(503, 'overloaded', { bytes: 1, size: 70_000, limit: 65_536, retryAfter })) : Promise.resolve({})),
      })
      outbox.chunk('abc')
      const done = outbox.flush()
      await timers.advance(waitMs - 1)
      expect(sent, `Retry-After ${retryAfter} s`).toHaveLength(1)
      await timers.advance(1)
      await done
      expect(sent, `Retry-After ${retryAfter} s`).toHaveLength(2)
    }
  })

  it('stops on lease_lost: drops what is queued and rejects waiting checkpoints', async () => {
    const { outbox, ends } = makeOutbox({ answer: () => Promise.reject(httpError(409, 'lease_lost')) })
    const checkpoint = outbox.checkpoint({ n: 1 }, 10)
    await expect(checkpoint).rejects.toBeInstanceOf(JobAbortedError)
    expect(ends.map((e) => e.reason)).toEqual(['lease_lost'])
    expect(outbox.accepting).toBe(false)
  })

  it('tells a cancelled job from one finished otherwise', async () => {
    const cancelled = makeOutbox({ answer: () => Promise.reject(httpError(409, 'job_finished', { status: 'cancelled' })) })
    cancelled.outbox.chunk('x')
    await cancelled.outbox.flush().catch(() => {})
    const finished = makeOutbox({ answer: () => Promise.reject(httpError(409, 'job_finished', { status: 'completed' })) })
    finished.outbox.chunk('x')
    await finished.outbox.flush().catch(() => {})
    expect([cancelled.ends[0]?.reason, finished.ends[0]?.reason]).toEqual(['cancelled', 'finished'])
  })

  it('replaces a refused batch and everything after it with a failed that reuses its batch number', async () => {
    const { outbox, sent, ends } = makeOutbox({
      answer: (s) => (s.events[0]?.type === 'failed' ? Promise.resolve({}) : Promise.reject(httpError(413, 'text_limit_exceeded'))),
    })
    outbox.chunk('too much')
    await outbox.finish({ type: 'completed', result: 1 })
    expect(sent.map((s) => [s.batch, s.events.map((e) => e.type)])).toEqual([
      [1, ['chunk']],
      [1, ['failed']],
    ])
    expect(sent[1]?.events[0]).toMatchObject({ code: 'text_limit_exceeded', retryable: false })
    expect(ends.map((e) => e.reason)).toEqual(['rejected'])
  })

  it('ignores reports after kill and never leaves an unhandled rejection behind', async () => {
    const { outbox, sent, timers } = makeOutbox()
    void outbox.checkpoint({ fireAndForget: true }, 10)
    outbox.kill('cancelled')
    outbox.progress({ percent: 5 })
    outbox.chunk('late')
    await timers.advance(1_000)
    expect(sent.flatMap((s) => s.events).filter((e) => e.type !== 'checkpoint')).toEqual([])
    expect(timers.scheduled).toBe(0)
  })
})

describe('what a throw becomes', () => {
  it('maps errors to failed events', () => {
    expect(failureOf(new Error('boom'))).toEqual({ code: 'handler_error', message: 'boom', retryable: false })
    expect(failureOf(Object.assign(new Error('no such file'), { code: 'ENOENT' }))).toEqual({
      code: 'ENOENT',
      message: 'no such file',
      retryable: false,
    })
    expect(failureOf(new JobFailure('bad_codec', 'b.mp3 uses an unknown codec'))).toEqual({
      code: 'bad_codec',
      message: 'b.mp3 uses an unknown codec',
      retryable: false,
    })
    expect(failureOf(new RetryableError('upstream 503'))).toEqual({ code: 'handler_error', message: 'upstream 503', retryable: true })
    expect(failureOf(new RetryableError('rate limited', { code: 'rate_limited' })).code).toBe('rate_limited')
    expect(failureOf('a string')).toEqual({ code: 'handler_error', message: 'a string', retryable: false })
    expect(failureOf(new Error('x'.repeat(5_000))).message).toHaveLength(2_000)
  })
})

describe('LazyAbort (the signal of a run, made when first asked for)', () => {
  it('asked for after the abort: already aborted, with the first reason', () => {
    const abort = new LazyAbort()
    expect(abort.aborted).toBe(false)
    abort.abort('first')
    abort.abort('second')
    expect(abort.aborted).toBe(true)
    expect(abort.signal.aborted).toBe(true)
    expect(abort.signal.reason).toBe('first')
  })

  it('asked for before: the same live signal, aborted later once', () => {
    const abort = new LazyAbort()
    const signal = abort.signal
    expect(abort.signal).toBe(signal)
    const heard: unknown[] = []
    signal.addEventListener('abort', () => heard.push(signal.reason))
    abort.abort('cancelled')
    abort.abort('again')
    expect(heard).toEqual(['cancelled'])
  })
})
