import { afterEach, describe, expect, it } from 'vitest'
import { createJobwireClient, type JobState, type JobwireClient } from '@jobwire/client'
import { startTestServer, type TestServer } from '../../../packages/server/test/fixtures.js'
import { JobListStore } from '../src/job-list-store.js'
import { noFilters, type ListFilters } from '../src/route.js'

/** The dashboard's list data against a real server: pages, refreshes and live notes. */
let server: TestServer | null = null
let client: JobwireClient | null = null
const stops: (() => void)[] = []
afterEach(async () => {
  for (const stop of stops.splice(0)) stop()
  client?.close()
  client = null
  await server?.close()
  server = null
})

async function setUp(): Promise<{ s: TestServer; create(body?: Record<string, unknown>): Promise<JobState>; list(filters?: ListFilters): JobListStore }> {
  const s = await startTestServer()
  server = s
  const c = createJobwireClient({ url: s.url, getToken: () => s.key, transports: ['poll'] })
  client = c
  return {
    s,
    create: async (body = {}) => (await s.api.call<JobState>('POST', '/v1/jobs', { type: 'export', dispatch: false, ...body })).body,
    list: (filters = noFilters) => {
      const store = new JobListStore(c, filters, { pageSize: 3, refreshMs: 50, visibility: alwaysVisible })
      stops.push(store.subscribe(() => {}))
      return store
    },
  }
}

async function until(predicate: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

const alwaysVisible = { visible: () => true, subscribe: () => () => {} }
const ids = (store: JobListStore) => store.getSnapshot().rows.map((row) => row.id)

describe('JobListStore', () => {
  it('lists newest first a page at a time, and a job created later joins at the top', async () => {
    const { create, list } = await setUp()
    const jobs: JobState[] = []
    for (let i = 0; i < 7; i++) jobs.push(await create())
    const newestFirst = jobs.map((job) => job.id).reverse()
    const store = list()
    await until(() => store.getSnapshot().phase === 'ready', 'the first page')
    expect(ids(store)).toEqual(newestFirst.slice(0, 3))
    expect(store.getSnapshot().hasMore).toBe(true)
    await store.loadMore()
    await store.loadMore()
    expect(ids(store)).toEqual(newestFirst)
    expect(store.getSnapshot().hasMore).toBe(false)
    const later = await create()
    await until(() => ids(store)[0] === later.id, 'the new job at the top')
    expect(ids(store)).toEqual([later.id, ...newestFirst])
  })

  it('takes a newer state for a row but never an older one, and adds only jobs that belong', async () => {
    const { s, create, list } = await setUp()
    const old = await create({ type: 'import' })
    for (let i = 0; i < 4; i++) await create()
    const store = list({ ...noFilters, type: 'export' })
    await until(() => store.getSnapshot().phase === 'ready', 'the first page')
    expect(store.getSnapshot().hasMore).toBe(true)
    const [top] = store.getSnapshot().rows
    if (top === undefined) throw new Error('no rows')
    await s.api.call('POST', `/v1/jobs/${top.id}/events`, { type: 'progress', stage: 'writing', percent: 50 })
    const running = (await s.api.call<JobState>('GET', `/v1/jobs/${top.id}`)).body
    store.note(running)
    await until(() => store.row(top.id)?.status === 'running', 'the newer state')
    store.note(top)
    expect(store.row(top.id)?.progress.percent).toBe(50)
    // Not an export: filtered out. An export older than the loaded pages: it comes with "load more".
    store.note({ ...old, createdAt: new Date().toISOString() })
    store.note({ ...top, id: 'job_older', createdAt: '2000-01-01T00:00:00.000Z' })
    await new Promise((resolve) => setTimeout(resolve, 20))
    expect(store.row(old.id)).toBeUndefined()
    expect(store.row('job_older')).toBeUndefined()
    expect(ids(store)).toHaveLength(3)
  })
})
