import { afterEach, describe, expect, it } from 'vitest'
import type { JobEventOf } from '@jobwire/protocol'
import type { NewJob, Store } from '../src/core/store.js'
import { MemoryStore } from '../src/stores/memory-store.js'
import { SqliteStore } from '../src/stores/sqlite-store.js'
import { makeTempDir } from './fixtures.js'

/**
 * `Store.subscribeOwner`, the per-owner fan-out behind the WebSocket user feed. (To fold into the
 * conformance suite once every backend implements it.)
 */
const backends: [string, () => Promise<{ store: Store; dispose(): Promise<void> }>][] = [
  ['memory', async () => ({ store: new MemoryStore(), dispose: async () => {} })],
  [
    'sqlite',
    async () => {
      const dir = await makeTempDir()
      const store = new SqliteStore({ path: `${dir.path}/jobwire.db` })
      return { store, dispose: async () => (await store.close(), await dir.remove()) }
    },
  ],
]

let disposers: (() => Promise<void>)[] = []
afterEach(async () => {
  for (const dispose of disposers) await dispose()
  disposers = []
})

let counter = 0
const newJob = (owner: NewJob['owner'], idempotencyKey: string | null = null): NewJob => ({
  id: `job_owner_${++counter}`,
  type: 't',
  input: null,
  owner,
  idempotencyKey,
  dispatch: true,
  maxAttempts: 1,
  at: new Date().toISOString(),
})

describe.each(backends)('%s store: subscribeOwner', (_name, open) => {
  it('hears of each new job of that owner once, and of nobody else\'s, until unsubscribed', async () => {
    const { store, dispose } = await open()
    disposers.push(dispose)
    const heard: JobEventOf<'created'>[] = []
    const stop = store.subscribeOwner?.({ tenant: 'acme', user: 'ann' }, (created) => heard.push(created))
    expect(stop).toBeDefined()
    const mine = await store.createJob(newJob({ tenant: 'acme', user: 'ann' }, 'k1'))
    await store.createJob(newJob({ tenant: 'acme', user: 'bob' }))
    await store.createJob(newJob({ tenant: 'other', user: 'ann' }))
    await store.createJob(newJob(null))
    // An idempotent repeat creates nothing, so announces nothing.
    await store.createJob(newJob({ tenant: 'acme', user: 'ann' }, 'k1'))
    expect(heard.map((event) => [event.jobId, event.seq, event.type])).toEqual([[mine.job.id, 1, 'created']])
    expect(heard[0]?.data.owner).toEqual({ tenant: 'acme', user: 'ann' })
    stop?.()
    await store.createJob(newJob({ tenant: 'acme', user: 'ann' }))
    expect(heard).toHaveLength(1)
  })
})
