import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { JobEvent, StreamMessage } from '@jobwire/protocol'
import { defaultCoreLimits, JobService, MemoryStore, SqliteStore, type Store, type StreamSink } from '@jobwire/server'

/** A sink that records what a subscription hands it, in the shape it was handed. */
function recorder(withBatches: boolean) {
  const batches: (readonly JobEvent[])[] = []
  const messages: StreamMessage[] = []
  let ended = false
  const sink: StreamSink = {
    write: (m) => void messages.push(...m),
    end: () => void (ended = true),
    ...(withBatches ? { events: (batch: readonly JobEvent[]) => void batches.push(batch) } : {}),
  }
  const seqs = (): number[] => [
    ...messages.flatMap((m) => (m.type === 'event' ? [m.event.seq] : [])),
    ...batches.flatMap((batch) => batch.map((event) => event.seq)),
  ]
  return { sink, batches, messages, seqs, ended: () => ended }
}

let dir: string
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'jobwire-subscription-'))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

/**
 * A real store whose reads wait a moment before they read, as over a network: live events
 * published meanwhile are both buffered by the subscription and in what the read returns, so the
 * hand-off has overlaps to drop.
 */
function withSlowReads(store: Store): Store {
  const delayed = new Set(['readLog', 'getJob'])
  return new Proxy(store, {
    get(target, name) {
      const value: unknown = Reflect.get(target, name, target)
      if (typeof value !== 'function') return value
      const method = value.bind(target) as (...args: unknown[]) => unknown
      if (!delayed.has(String(name))) return method
      return async (...args: unknown[]) => {
        await new Promise((resolve) => setTimeout(resolve, 1))
        return method(...args)
      }
    },
  })
}

const stores: [string, () => Store][] = [
  ['memory', () => new MemoryStore()],
  ['memory, reads that wait', () => withSlowReads(new MemoryStore())],
  ['SQLite', () => new SqliteStore({ path: join(dir, `${Math.random().toString(36).slice(2)}.db`) })],
]

describe.each(stores)('JobSubscription on %s', (_, open) => {
  it('hands every subscriber of a job the one array the store published, so a transport encodes it once', async () => {
    const store = open()
    const service = new JobService(store, defaultCoreLimits)
    const { job } = await service.createJob({ type: 'export' })
    const a = recorder(true)
    const b = recorder(true)
    const subscriptions = [await service.subscribe(job.id, undefined, a.sink), await service.subscribe(job.id, undefined, b.sink)]
    await service.appendEvents(job.id, [
      { type: 'progress', data: { percent: 10 } },
      { type: 'progress', data: { percent: 20 } },
      { type: 'item', data: { id: 'f1', status: 'completed' } },
    ])
    expect(a.batches).toHaveLength(1)
    expect(b.batches[0]).toBe(a.batches[0])
    // The implicit `started`, then the three events, each the next seq.
    expect(a.seqs()).toEqual([2, 3, 4, 5])
    expect(a.messages.map((m) => m.type)).toEqual(['snapshot'])
    for (const subscription of subscriptions) subscription.close()
    await store.close()
  })

  it('gives a sink without events() the same events as event messages, and ends every sink at the terminal event', async () => {
    const store = open()
    const service = new JobService(store, defaultCoreLimits)
    const { job } = await service.createJob({ type: 'export' })
    const plain = recorder(false)
    const batched = recorder(true)
    const subscriptions = [await service.subscribe(job.id, undefined, plain.sink), await service.subscribe(job.id, undefined, batched.sink)]
    await service.appendEvents(job.id, [{ type: 'chunk', data: { text: 'a' } }])
    await service.appendEvents(job.id, [{ type: 'chunk', data: { text: 'b' } }, { type: 'completed', data: { result: 'ok' } }])
    expect(plain.messages.filter((m) => m.type === 'event').map((m) => (m.type === 'event' ? m.event.type : ''))).toEqual(['started', 'chunk', 'chunk', 'completed'])
    expect(batched.seqs()).toEqual(plain.seqs())
    expect(plain.ended() && batched.ended()).toBe(true)
    expect(subscriptions.every((subscription) => subscription.closed)).toBe(true)
    await store.close()
  })

  it('while a producer appends as fast as it can, subscribers starting at any position get exactly the seqs after it, once each, in order', async () => {
    const store = open()
    const service = new JobService(store, defaultCoreLimits)
    const { job } = await service.createJob({ type: 'chat' })
    const total = 2_000
    const watchers: { after: number | undefined; record: ReturnType<typeof recorder> }[] = []
    let appended = 1
    const producer = (async () => {
      while (appended < total) {
        const size = 1 + (appended % 7)
        const events = Array.from({ length: Math.min(size, total - appended) }, () => ({ type: 'chunk' as const, data: { text: '.' } }))
        const outcome = await service.appendEvents(job.id, events)
        appended = outcome.job.seq
      }
    })()
    const subscriptions = []
    for (let i = 0; i < 40; i++) {
      // Every other one resumes from a position already in the log, the others start from a snapshot.
      const after = i % 2 === 0 ? Math.max(1, appended - (i % 5) * 3) : undefined
      const record = recorder(i % 3 !== 0)
      watchers.push({ after, record })
      subscriptions.push(await service.subscribe(job.id, after, record.sink))
      await new Promise((resolve) => setImmediate(resolve))
    }
    await producer
    await service.appendEvents(job.id, [{ type: 'completed', data: { result: null } }])
    for (const { after, record } of watchers) {
      // A position the log no longer holds (it keeps 1,000 events) gets a reset snapshot instead.
      const snapshot = record.messages.find((m) => m.type === 'snapshot')
      const from = snapshot?.type === 'snapshot' ? snapshot.job.seq : (after ?? 0)
      expect(snapshot === undefined || snapshot.type !== 'snapshot' || snapshot.reset === (after !== undefined)).toBe(true)
      expect(from).toBeGreaterThan(0)
      expect(record.seqs()).toEqual(Array.from({ length: total + 1 - from }, (_, i) => from + 1 + i))
      expect(record.ended()).toBe(true)
    }
    for (const subscription of subscriptions) subscription.close()
    await store.close()
  })
})
