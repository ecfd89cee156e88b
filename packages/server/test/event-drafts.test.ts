/**
 * The hand-written reading of producer events (`quickDraft`) and of a worker's lease and batch
 * (`quickWriteMeta`) against the schema they shortcut: over seeded, generated events — valid ones,
 * and ones with every field at, past and beside its limits — whatever the quick reading accepts,
 * the schema accepts with the same draft, key order included; the rest go to the schema. And the
 * quick reading takes the usual events (else the shortcut would be dead code passing this test).
 */
import { isDeepStrictEqual } from 'node:util'
import { describe, expect, it } from 'vitest'
import { JobwireError } from '@jobwire/protocol'
import {
  bulkWriteBySchema,
  eventDraftBySchema,
  parseProducerEvents,
  quickBulkWrite,
  quickDraft,
  quickWriteMeta,
  writeMetaBySchema,
} from '../src/http/schemas.js'
import { seededRandom } from './fixtures.js'

const random = seededRandom(Number(process.env.JOBWIRE_FUZZ_SEED ?? 2026))
const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T

const limits = { maxEventBytes: 65_536, maxBatchEvents: 100 }
const long = (n: number): string => 'x'.repeat(n)
const texts = ['', 'a', ' token 7', 'é ü', '😀', 'a\ud800', '\udc00', 'x\ud83d', long(100), long(101), long(200), long(201), long(500), long(501), long(2000), long(2001)]
const numbers = [-1, -0, 0, 0.25, 0.5, 1, 1.5, 50, 99.9, 100, 100.0001, 1e300, Number.NaN, Number.POSITIVE_INFINITY]
/** A value of any kind, for a field: mostly of the field's own kind. */
const anyValue = (): unknown =>
  pick<() => unknown>([() => pick(texts), () => pick(numbers), () => null, () => true, () => [], () => ({}), () => ({ k: 1 }), () => undefined])()

/** A field's value: usually one that kind of field takes, sometimes anything. */
function field(kind: 'text' | 'number' | 'status' | 'any'): unknown {
  if (random() < 0.25) return anyValue()
  if (kind === 'text') return pick(texts)
  if (kind === 'number') return pick(numbers)
  if (kind === 'status') return pick(['pending', 'running', 'completed', 'failed', 'skipped', 'done', 'Running'])
  return pick<unknown>([null, 1, 'x', { a: [1, 2] }, [1], false])
}

const shapes: Record<string, Record<string, 'text' | 'number' | 'status' | 'any'>> = {
  chunk: { text: 'text' },
  progress: { stage: 'text', percent: 'number', message: 'text', fraction: 'number' },
  item: { id: 'text', label: 'text', status: 'status', percent: 'number', message: 'text' },
  completed: { result: 'any' },
  started: { worker: 'text' },
  checkpoint: { data: 'any' },
  failed: { code: 'text', message: 'text', retryable: 'any' },
}

/** An event of `type`: each of its fields present or not, in a shuffled order; now and then metadata or a stranger key. */
function generate(type: string): Record<string, unknown> {
  const entries: [string, unknown][] = [['type', type]]
  for (const [name, kind] of Object.entries(shapes[type] ?? {})) if (random() < 0.6) entries.push([name, field(kind)])
  if (random() < 0.05) entries.push(['metadata', pick([{ a: 1 }, {}, [], null])])
  if (random() < 0.05) entries.push([pick(['extra', 'Type', 'data', 'lease']), 1])
  for (let i = entries.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[entries[i], entries[j]] = [entries[j]!, entries[i]!]
  }
  return Object.fromEntries(entries)
}

/** Whatever a reading gives: its value, or the error it throws (as the body a client gets). */
function outcome(read: () => unknown): { value?: unknown; error?: unknown } {
  try {
    return { value: read() }
  } catch (error) {
    if (!(error instanceof JobwireError)) throw error
    return { error: error.toBody() }
  }
}

/** Equal, key order and keys holding undefined included. */
function same(a: unknown, b: unknown): boolean {
  return isDeepStrictEqual(a, b) && JSON.stringify(a) === JSON.stringify(b) && keyOrder(a) === keyOrder(b)
}
function keyOrder(value: unknown): string {
  if (typeof value !== 'object' || value === null) return ''
  return Object.entries(value)
    .map(([key, inner]) => `${key}(${keyOrder(inner)})`)
    .join(',')
}

describe('producer events read by hand', () => {
  it('accept only what the schema accepts, as the schema reads it', () => {
    const taken: Record<string, number> = {}
    for (let i = 0; i < 20_000; i++) {
      const type = pick(Object.keys(shapes))
      const raw = generate(type)
      const schema = outcome(() => eventDraftBySchema(raw, 'events.0'))
      const quick = quickDraft(raw, type)
      if (quick !== undefined) {
        taken[type] = (taken[type] ?? 0) + 1
        if (!('value' in schema) || !same(quick, schema.value)) {
          expect({ raw, quick }).toEqual({ raw, quick: schema })
        }
      }
      // The route's reading (quick, else the schema) is the schema's, errors included.
      const route = outcome(() => parseProducerEvents({ events: [raw] }, limits).events[0])
      if (!same(route, schema)) expect({ raw, route }).toEqual({ raw, route: schema })
    }
    // The usual events are taken by hand (checkpoint and failed are the schema's).
    for (const type of ['chunk', 'progress', 'item', 'completed', 'started']) expect(taken[type] ?? 0).toBeGreaterThan(100)
    expect(taken.checkpoint ?? 0).toBe(0)
  })

  it('read the usual events without the schema', () => {
    expect(quickDraft({ type: 'chunk', text: ' token 3' }, 'chunk')).toEqual({ type: 'chunk', data: { text: ' token 3' } })
    expect(quickDraft({ percent: 40, type: 'progress', message: 'working', stage: 'Reading' }, 'progress')).toEqual({
      type: 'progress',
      data: { stage: 'Reading', percent: 40, message: 'working' },
    })
    expect(quickDraft({ type: 'completed' }, 'completed')).toEqual({ type: 'completed', data: { result: null } })
    // Lone surrogates, metadata and unknown keys are left to the schema.
    expect(quickDraft({ type: 'chunk', text: 'a\ud800' }, 'chunk')).toBeUndefined()
    expect(quickDraft({ type: 'progress', metadata: { a: 1 } }, 'progress')).toBeUndefined()
    expect(quickDraft({ type: 'item', id: 'a', extra: 1 }, 'item')).toBeUndefined()
  })
})

const leases = [undefined, '', 'l', long(200), long(201), 5, null, ['l']]
const batches = [undefined, 0, 1, 2, 1.5, -1, Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER + 1, 1e300, '1', null, Number.NaN]

describe("a worker's lease and batch read by hand", () => {
  it('accept only what the schema accepts, as the schema reads it', () => {
    let taken = 0
    for (const lease of leases) {
      for (const batch of batches) {
        const schema = outcome(() => writeMetaBySchema(lease, batch))
        const quick = quickWriteMeta(lease, batch)
        if (quick === undefined) continue
        taken++
        if (!('value' in schema) || !same(quick, schema.value)) expect({ lease, batch, quick }).toEqual({ lease, batch, quick: schema })
      }
    }
    expect(taken).toBeGreaterThanOrEqual(12)
  })
})

describe('the writes of a bulk request read by hand', () => {
  it('accept only what the schema accepts, as the schema reads it', () => {
    const jobIds = [undefined, '', 'j', long(100), long(101), 5, null]
    const eventLists = [undefined, [], [{ type: 'chunk', text: 'a' }], [1, 'x'], 'events', {}]
    let taken = 0
    for (let i = 0; i < 5_000; i++) {
      const entries: [string, unknown][] = []
      if (random() < 0.95) entries.push(['jobId', pick(jobIds.slice(random() < 0.8 ? 2 : 0))])
      if (random() < 0.95) entries.push(['events', pick(eventLists.slice(random() < 0.8 ? 2 : 0))])
      if (random() < 0.5) entries.push(['lease', pick(leases)])
      if (random() < 0.5) entries.push(['batch', pick(batches)])
      if (random() < 0.05) entries.push([pick(['extra', 'job', 'Events']), 1])
      entries.sort(() => random() - 0.5)
      const raw = random() < 0.02 ? pick<unknown>([null, [], 'w', 3]) : Object.fromEntries(entries)
      const schema = outcome(() => bulkWriteBySchema(raw))
      const quick = quickBulkWrite(raw)
      if (quick === undefined) continue
      taken++
      if (!('value' in schema) || !same(quick, schema.value)) expect({ raw, quick }).toEqual({ raw, quick: schema })
    }
    expect(taken).toBeGreaterThan(200)
  })
})
