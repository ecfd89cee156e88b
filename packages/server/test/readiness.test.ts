import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { JobwireError } from '@jobwire/protocol'
import type { Store } from '../src/core/store.js'
import { startServer, type RunningServer } from '../src/server.js'
import { SqliteStore } from '../src/stores/sqlite-store.js'
import { makeTempDir, sleep, testApiKey } from './fixtures.js'
import { expectDocumentedAnswer } from './openapi-check.js'

type Outage = 'up' | 'down' | 'stalled'

/**
 * A real SQLite store behind a switch, as a store across a network behaves: `down` fails every
 * call with `unavailable` (the link is gone); `stalled` holds every call but `ping` until the
 * switch goes back `up` (a lock or a stuck connection: the store answers pings, work does not
 * finish); `up` is the store itself again.
 */
function switchableStore(store: SqliteStore): { store: Store; set(state: Outage): void } {
  let state: Outage = 'up'
  const held: (() => void)[] = []
  const passThrough = new Set(['kind', 'subscribe', 'subscribeQueue', 'subscribeOwner', 'close'])
  const proxy = new Proxy(store, {
    get(target, property, receiver) {
      const value: unknown = Reflect.get(target, property, receiver)
      if (typeof value !== 'function') return value
      const method = (value as (...args: unknown[]) => unknown).bind(target)
      if (passThrough.has(String(property))) return method
      return (...args: unknown[]) => {
        if (state === 'down') return Promise.reject(new JobwireError('unavailable', { reason: 'the store is unreachable' }))
        if (state === 'stalled' && property !== 'ping') return new Promise((resolve) => held.push(() => resolve(method(...args))))
        return method(...args)
      }
    },
  })
  const set = (next: Outage): void => {
    state = next
    if (next !== 'stalled') for (const release of held.splice(0)) release()
  }
  return { store: proxy, set }
}

let server: RunningServer | null = null
let removeDir: (() => Promise<void>) | null = null

afterEach(async () => {
  await server?.close()
  await removeDir?.()
  server = null
  removeDir = null
})

async function start(): Promise<{ set(state: Outage): void }> {
  const dir = await makeTempDir()
  removeDir = dir.remove
  const switchable = switchableStore(new SqliteStore({ path: join(dir.path, 'jobwire.db') }))
  server = await startServer({
    logger: false,
    store: switchable.store,
    config: { apiKey: testApiKey, port: 0, dataDir: dir.path, sweepInterval: 100, leaseSweepInterval: 100 },
  })
  return switchable
}

async function readiness(): Promise<{ status: number; body: { ok: boolean; reason?: string } }> {
  const response = await fetch(`${server?.url}/readyz`)
  const body = (await response.json()) as { ok: boolean; reason?: string }
  expectDocumentedAnswer({ method: 'GET', url: '/readyz', status: response.status, contentType: response.headers.get('content-type') ?? undefined, body })
  return { status: response.status, body }
}

/** Polls /readyz until it answers `status` (it changes on the next sweep, not at once). */
async function until(status: number): Promise<{ status: number; body: { ok: boolean; reason?: string } }> {
  for (let tries = 0; ; tries++) {
    const answer = await readiness()
    if (answer.status === status || tries >= 100) return answer
    await sleep(100)
  }
}

describe('readiness', () => {
  it('turns red while the SQLite store is unreachable and green again once it is back', async () => {
    const store = await start()
    expect(await readiness()).toEqual({ status: 200, body: { ok: true, store: 'sqlite' } })
    store.set('down')
    expect(await readiness()).toMatchObject({ status: 503, body: { ok: false, store: 'sqlite' } })
    // Calls fail cleanly meanwhile, and the process keeps serving.
    const create = await fetch(`${server?.url}/v1/jobs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${testApiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ type: 'x' }),
    })
    expect(create.status).toBe(503)
    expectDocumentedAnswer({ method: 'POST', url: '/v1/jobs', status: create.status, contentType: create.headers.get('content-type') ?? undefined, body: await create.json() })
    store.set('up')
    expect(await until(200)).toMatchObject({ status: 200, body: { ok: true } })
  })

  it('turns red when the sweeps stop completing, and green once they run again', async () => {
    const store = await start()
    expect((await readiness()).status).toBe(200)
    store.set('stalled')
    const red = await until(503)
    expect(red.status).toBe(503)
    expect(red.body.reason).toMatch(/sweep has not completed for \d+ s/)
    store.set('up')
    expect(await until(200)).toMatchObject({ status: 200, body: { ok: true } })
  })
})
