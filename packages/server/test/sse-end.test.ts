import type { IncomingMessage } from 'node:http'
import { existsSync } from 'node:fs'
import { EventSource } from 'eventsource'
import { chromium } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { JobState } from '@jobwire/protocol'
import { collect, openSse, startTestServer, type TestServer } from './fixtures.js'

/**
 * A finished job's stream ends for good: a standard EventSource reconnects at most once after the
 * end, and that reconnect is answered 204 (or, for a position ahead of the log, 409), which the
 * HTML spec says ends reconnection. The SSE `retry:` is 20 ms here, so an EventSource that kept
 * reconnecting would have made dozens of requests by the time the test looks.
 */
const retryMs = 20
let t: TestServer
/** Stream requests the server received, per job id. */
const streamRequests = new Map<string, number>()

beforeAll(async () => {
  t = await startTestServer({ sseRetry: retryMs, heartbeat: 1000 })
  t.server.app.server.on('request', (request: IncomingMessage) => {
    const match = /^\/v1\/jobs\/([^/?]+)\/stream/.exec(request.url ?? '')
    if (match?.[1] !== undefined) streamRequests.set(match[1], (streamRequests.get(match[1]) ?? 0) + 1)
  })
})

afterAll(async () => {
  await t.close()
})

async function createJob(): Promise<JobState> {
  const answer = await t.api.call<JobState>('POST', '/v1/jobs', { type: 'sse-end', dispatch: false })
  expect(answer.status).toBe(201)
  return answer.body
}

async function append(jobId: string, events: unknown[]): Promise<void> {
  const answer = await t.api.call('POST', `/v1/jobs/${jobId}/events`, { events })
  expect(answer.status).toBe(200)
}

async function finishedJob(): Promise<JobState> {
  const job = await createJob()
  await append(job.id, [{ type: 'progress', percent: 50 }, { type: 'completed', result: { ok: true } }])
  return (await t.api.call<JobState>('GET', `/v1/jobs/${job.id}`)).body
}

const streamUrl = (jobId: string, query = ''): string => `${t.url}/v1/jobs/${jobId}/stream?access_token=${t.key}${query}`

/** Resolves once `predicate` holds, checking every 10 ms. */
async function until(predicate: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 20_000
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

describe('the stream of a finished job over plain HTTP', () => {
  it('answers 204 No Content to a resume from the last seq of a finished job', async () => {
    const job = await finishedJob()
    const connection = await openSse(streamUrl(job.id), { headers: { 'last-event-id': String(job.seq) } })
    expect(connection.status).toBe(204)
    expect(connection.body).toBe('')
    const byQuery = await openSse(streamUrl(job.id, `&after=${job.seq}`))
    expect(byQuery.status).toBe(204)
  })

  it('answers a position ahead of the log with a 409 position_ahead JSON error, not a stream', async () => {
    const job = await createJob()
    const connection = await openSse(streamUrl(job.id), { headers: { 'last-event-id': '99' } })
    expect(connection.status).toBe(409)
    expect(connection.headers['content-type']).toMatch(/^application\/json/)
    expect(JSON.parse(connection.body)).toMatchObject({ error: { code: 'position_ahead', details: { position: 99, seq: 1 } } })
  })

  it('still sends a finished job opened without a position its snapshot, then ends', async () => {
    const job = await finishedJob()
    const messages = await collect((await openSse(streamUrl(job.id))).messages())
    expect(messages).toEqual([{ type: 'snapshot', reset: false, reason: 'initial', job: expect.objectContaining({ status: 'completed', seq: job.seq }) }])
  })

  it('replays what follows an earlier position of a finished job, then ends', async () => {
    const job = await finishedJob()
    const messages = await collect((await openSse(streamUrl(job.id), { headers: { 'last-event-id': '1' } })).messages())
    expect(messages.map((m) => (m.type === 'event' ? m.event.type : m.type))).toEqual(['recovered', 'started', 'progress', 'completed'])
  })
})

describe('the eventsource npm package', () => {
  /** Opens an EventSource and resolves when it has stopped for good (readyState CLOSED). */
  function watchUntilClosed(url: string, onMessage: (type: string) => void = () => {}): Promise<EventSource> {
    const source = new EventSource(url)
    for (const type of ['snapshot', 'recovered', 'started', 'progress', 'completed']) source.addEventListener(type, () => onMessage(type))
    return new Promise((resolve) => {
      source.onerror = () => {
        if (source.readyState === EventSource.CLOSED) resolve(source)
      }
    })
  }

  it('makes at most one request after the job it watches completes', async () => {
    const job = await createJob()
    const seen: string[] = []
    const closed = watchUntilClosed(streamUrl(job.id), (type) => seen.push(type))
    await until(() => seen.includes('snapshot'), 'the snapshot')
    const before = streamRequests.get(job.id)
    expect(before).toBe(1)
    await append(job.id, [{ type: 'completed', result: null }])
    const source = await closed
    expect(seen).toEqual(['snapshot', 'started', 'completed'])
    // The reconnect after the end got 204; a closed EventSource never connects again.
    expect(source.readyState).toBe(EventSource.CLOSED)
    expect(streamRequests.get(job.id)).toBe(2)
  })

  it('opens an already finished job once for its snapshot and once more to hear it ended', async () => {
    const job = await finishedJob()
    const seen: string[] = []
    await watchUntilClosed(streamUrl(job.id), (type) => seen.push(type))
    expect(seen).toEqual(['snapshot'])
    expect(streamRequests.get(job.id)).toBe(2)
  })

  it('stops at once on a position ahead of the log', async () => {
    const job = await createJob()
    await watchUntilClosed(streamUrl(job.id, '&after=50'))
    expect(streamRequests.get(job.id)).toBe(1)
  })
})

const chromiumPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const inCi = process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== 'false'

describe.skipIf(!existsSync(chromiumPath) && !inCi)("Chromium's native EventSource", () => {
  it('makes at most one request after the job ends, for a watched job and for one opened finished', async () => {
    const browser = await chromium.launch({
      executablePath: chromiumPath,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
    })
    try {
      const page = await browser.newPage()
      await page.goto(`${t.url}/healthz`)
      const watched = await createJob()
      const finished = await finishedJob()
      const ahead = await createJob()
      // Each EventSource records the message types it got and resolves once the browser closed it for good.
      await page.evaluate((urls) => {
        const w = window as unknown as { seen: Record<string, string[]>; stopped: Record<string, Promise<void>> }
        w.seen = {}
        w.stopped = {}
        for (const [name, url] of Object.entries(urls)) {
          const seen: string[] = (w.seen[name] = [])
          // The browser's own EventSource (the name alone means the imported package here).
          const source = new (window as unknown as { EventSource: typeof globalThis.EventSource }).EventSource(url)
          for (const type of ['snapshot', 'started', 'completed']) source.addEventListener(type, () => seen.push(type))
          w.stopped[name] = new Promise((resolve) => {
            source.onerror = () => {
              if (source.readyState === 2) resolve()
            }
          })
        }
      }, {
        watched: streamUrl(watched.id).slice(t.url.length),
        finished: streamUrl(finished.id).slice(t.url.length),
        ahead: streamUrl(ahead.id, '&after=50').slice(t.url.length),
      })
      await page.waitForFunction(() => (window as unknown as { seen: Record<string, string[]> }).seen.watched?.includes('snapshot'))
      await append(watched.id, [{ type: 'completed', result: null }])
      const seen = await page.evaluate(async () => {
        const w = window as unknown as { seen: Record<string, string[]>; stopped: Record<string, Promise<void>> }
        await Promise.all(Object.values(w.stopped))
        return w.seen
      })
      expect(seen).toEqual({ watched: ['snapshot', 'started', 'completed'], finished: ['snapshot'], ahead: [] })
      expect(streamRequests.get(watched.id)).toBe(2)
      expect(streamRequests.get(finished.id)).toBe(2)
      expect(streamRequests.get(ahead.id)).toBe(1)
    } finally {
      await browser.close()
    }
  }, 60_000)
})
