import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { EventDraft } from '@jobwire/protocol'
import { defaultCoreLimits, Dispatcher, JobService, SqliteStore, type Store } from '@jobwire/server'
import { adminClient, deleteKeys, openRedisStore, redisReachable, testPrefix } from './redis-fixtures/redis.js'

/** A durable store with its cache of parsed states in view (the `jobwire_state_cache_*` gauges read it). */
type CachingStore = Store & { readonly stateCache: { jobs: number; bytes: number } }

/** The byte budget the stores get here: a few of the jobs below weigh more than all of it. */
const budget = 1024 ** 2
const jobs = 12
const rounds = 6
/** Characters per chunk: each round adds 100,000 to a job (~200 KB of weight at 2 bytes a character). */
const chunkLength = 50_000

/**
 * Long texts on many jobs, written in turn so that each write finds its job pushed out of the
 * cache by the others' (a byte budget of 1 MiB against ~1.2 MB per job at the end): every write
 * reads its job back first. What a watcher and a reader get must be exactly what was written —
 * the text in order, the items, a checkpoint's text length, and a release that rolls the text back
 * to it — and the cache must stay within about twice its budget plus one job.
 */
async function writeLongTexts(store: CachingStore): Promise<void> {
  const service = new JobService(store, defaultCoreLimits)
  const dispatcher = new Dispatcher(service)
  const ids: string[] = []
  for (let i = 0; i < jobs; i++) ids.push((await service.createJob({ type: 'long-text' })).job.id)
  const claims = await dispatcher.claimMany({ types: ['long-text'], worker: 'w', leaseMs: 600_000, waitMs: 0, max: jobs })
  expect(claims).toHaveLength(jobs)
  const leases = new Map(claims.map((claim) => [claim.job.id, claim.lease.token]))
  const expected = new Map(ids.map((id) => [id, '']))
  const batches = new Map(ids.map((id) => [id, 0]))
  const write = async (id: string, events: EventDraft[]) => {
    const batch = (batches.get(id) ?? 0) + 1
    batches.set(id, batch)
    return service.appendEvents(id, events, { lease: leases.get(id), batch })
  }
  let heaviest = 0
  for (let round = 0; round < rounds; round++) {
    for (const [n, id] of ids.entries()) {
      const letter = String.fromCharCode(97 + ((n + round) % 26))
      const chunks = [letter.repeat(chunkLength), `${round}:${n}|`.padEnd(chunkLength, letter.toUpperCase())]
      const events: EventDraft[] = [
        ...chunks.map((text): EventDraft => ({ type: 'chunk', data: { text } })),
        { type: 'item', data: { id: `part-${round}`, status: 'completed', label: `round ${round}` } },
        { type: 'progress', data: { percent: Math.round(((round + 1) / rounds) * 100) } },
      ]
      // Halfway, a checkpoint: the release below rolls each job's text back to it.
      if (round === rounds / 2 - 1) events.push({ type: 'checkpoint', data: { data: { round } } })
      const result = await write(id, events)
      expected.set(id, (expected.get(id) ?? '') + chunks.join(''))
      expect(result.job.text.length).toBe((expected.get(id) ?? '').length)
      heaviest = Math.max(heaviest, 2 * result.job.text.length + 64 * 1024)
      expect(store.stateCache.bytes).toBeLessThanOrEqual(2 * (budget + heaviest))
    }
  }
  // The cache let most jobs go: it is bounded by bytes, not by its count of entries.
  expect(store.stateCache.jobs).toBeLessThan(jobs)
  for (const id of ids) {
    const job = await service.getJob(id)
    expect(job.text).toBe(expected.get(id))
    expect(job.items.map((item) => item.id)).toEqual(Array.from({ length: rounds }, (_, round) => `part-${round}`))
    expect(job.progress.percent).toBe(100)
  }
  // A release rolls each job's text back to its checkpoint, read back for a job the cache let go.
  const atCheckpoint = (rounds / 2) * 2 * chunkLength
  for (const id of ids) {
    const released = await dispatcher.release(id, leases.get(id) ?? '', 'handing over')
    expect(released.job).toMatchObject({ status: 'queued', checkpoint: { round: rounds / 2 - 1 } })
    expect(released.job.text).toBe((expected.get(id) ?? '').slice(0, atCheckpoint))
  }
  for (const id of ids) expect((await service.getJob(id)).text).toBe((expected.get(id) ?? '').slice(0, atCheckpoint))
  const log = await store.readLog(ids[0] ?? '', 0, 1000)
  expect(log?.events.map((event) => event.seq)).toEqual(Array.from({ length: log?.head ?? 0 }, (_, i) => i + 1))
}

/**
 * Items are weighed too: 8 jobs of 200 items, each with a 2,000-character message and 3 KB of
 * metadata (~2 MB of state a job, no text), do not fit a budget of 1 MiB. Counted at a flat size
 * per item they would have (~0.8 MB in all), and the cache would have kept every one.
 */
async function writeHeavyItems(store: CachingStore): Promise<void> {
  const service = new JobService(store, defaultCoreLimits)
  const heavyJobs = 8
  const ids: string[] = []
  for (let i = 0; i < heavyJobs; i++) ids.push((await service.createJob({ type: 'heavy-items', dispatch: false })).job.id)
  for (let round = 0; round < 4; round++) {
    for (const [n, id] of ids.entries()) {
      const events = Array.from({ length: 50 }, (_, i): EventDraft => ({
        type: 'item',
        data: { id: `page-${round * 50 + i}`, status: 'completed', message: `${n}:${round}:${i} `.padEnd(2_000, 'm'), metadata: { notes: 'n'.repeat(3_000) } },
      }))
      await service.appendEvents(id, events)
    }
  }
  expect(store.stateCache.jobs).toBeLessThan(heavyJobs)
  expect(store.stateCache.bytes).toBeGreaterThan(budget / 2)
  for (const [n, id] of ids.entries()) {
    const job = await service.getJob(id)
    expect(job.items).toHaveLength(200)
    expect(job.items[199]).toMatchObject({ id: 'page-199', message: `${n}:3:49 `.padEnd(2_000, 'm'), metadata: { notes: 'n'.repeat(3_000) } })
  }
}

/** What both stores must do with a budget of 1 MiB. */
const scenarios = [
  ['long texts on more jobs than the budget holds are written and read back exactly', writeLongTexts],
  ['jobs with many heavy items are weighed by them', writeHeavyItems],
] as const

/** Runs `scenario` on a store `open` makes, and closes it. */
async function onStore(open: () => Promise<CachingStore> | CachingStore, scenario: (store: CachingStore) => Promise<void>): Promise<void> {
  const store = await open()
  try {
    await scenario(store)
  } finally {
    await store.close()
  }
}

describe('The parsed states a SQLite node keeps', () => {
  let dir = ''
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'jobwire-state-cache-'))
  })
  afterAll(() => rm(dir, { recursive: true, force: true }))

  describe('are bounded by bytes (--state-cache-bytes)', () => {
    for (const [[what, scenario], n] of scenarios.map((one, n) => [one, n] as const)) {
      it(`SQLite: ${what}`, () => onStore(() => new SqliteStore({ path: join(dir, `scenario-${n}.db`), cacheBytes: budget }), scenario))
    }
  })

  describe('are those of its last 50,000 small jobs', () => {
    // A queue drains oldest first: when a node kept the states of its last 10,000 jobs (and at most
    // twice as many), a backlog of 20,000 had every one read back from its row and parsed as it was claimed.
    it('SQLite: a backlog of 20,000 small queued jobs stays parsed while it is claimed', () =>
      onStore(
        () => new SqliteStore({ path: join(dir, 'backlog.db') }),
        async (store) => {
          const service = new JobService(store, defaultCoreLimits)
          const dispatcher = new Dispatcher(service)
          const backlog = 20_000
          for (let i = 0; i < backlog; i += 500) await Promise.all(Array.from({ length: 500 }, () => service.createJob({ type: 'backlog' })))
          expect(store.stateCache.jobs).toBe(backlog)
          const claimed = new Set<string>()
          for (;;) {
            const claims = await dispatcher.claimMany({ types: ['backlog'], worker: 'w', leaseMs: 60_000, waitMs: 0, max: 256 })
            if (claims.length === 0) break
            for (const claim of claims) claimed.add(claim.job.id)
          }
          dispatcher.close()
          expect(claimed.size).toBe(backlog)
          expect(store.stateCache.jobs).toBe(backlog)
        },
      ))
  })
})

if (redisReachable('The parsed states a Redis node keeps')) {
  describe('The parsed states a Redis node keeps', () => {
    const prefix = testPrefix('state-cache')
    const admin = adminClient()
    afterAll(async () => {
      await deleteKeys(admin, prefix)
      await admin.quit()
    })

    describe('are bounded by bytes (--state-cache-bytes)', () => {
      for (const [[what, scenario], n] of scenarios.map((one, n) => [one, n] as const)) {
        it(`Redis: ${what}`, () => onStore(() => openRedisStore({ prefix: `${prefix}:${n}`, cacheBytes: budget }), scenario))
      }
    })

    describe('are those of its last 50,000 small jobs', () => {
      // When a node kept the records of only its last 10,000 jobs (and at most twice as many), a
      // producer writing to 20,000 live jobs in turn had every write read its job first.
      it('Redis: a node writing to 20,000 small live jobs in turn keeps the record of every one', () =>
        onStore(
          () => openRedisStore({ prefix: `${prefix}:live` }),
          async (store) => {
            const service = new JobService(store, defaultCoreLimits)
            const live = 20_000
            const ids: string[] = []
            for (let i = 0; i < live; i += 500) {
              ids.push(...(await Promise.all(Array.from({ length: 500 }, async () => (await service.createJob({ type: 'live', dispatch: false })).job.id))))
            }
            for (let i = 0; i < live; i += 500) {
              await Promise.all(ids.slice(i, i + 500).map((id) => service.appendEvents(id, [{ type: 'progress', data: { percent: 50 } }])))
            }
            expect(store.stateCache.jobs).toBe(live)
            const job = await service.getJob(ids[0] ?? '')
            expect(job).toMatchObject({ status: 'running', progress: { percent: 50 } })
          },
        ))
    })
  })
}
