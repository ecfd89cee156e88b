/**
 * A reader cut off for falling behind gets its `slow_consumer` error after the bytes already
 * queued for it, also when it comes back to reading only after a while: the server waits for a
 * reader that reads nothing for 30 s before dropping the socket, not 5 s after the cut.
 */
import { afterAll, describe, expect, it } from 'vitest'
import type { JobState } from '@jobwire/protocol'
import { collect, openSse, sleep, startTestServer, type TestServer } from './fixtures.js'
import { openWs, wsUrl } from './ws-client.js'

const servers: TestServer[] = []
afterAll(async () => {
  for (const server of servers) await server.close()
})

/** How many readers the server has cut off for falling behind, from its own metrics. */
async function slowConsumerCloses(server: TestServer, transport: 'sse' | 'ws'): Promise<number> {
  const response = await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${server.key}` } })
  const line = (await response.text()).split('\n').find((l) => l.startsWith(`jobwire_slow_consumer_closes_total{transport="${transport}"}`))
  return line === undefined ? 0 : Number(line.split(' ').at(-1))
}

// Longer than the 5 s after which the server used to drop a cut reader's socket, error unsent.
const pausedForMs = 6_500

describe('a reader cut off as a slow consumer', () => {
  it('over SSE, paused for longer than 5 s after the cut, still reads everything queued and then its slow_consumer event', async () => {
    const server = await startTestServer({ sseMaxBuffer: 4 * 1024 * 1024, maxBodyBytes: 8 * 1024 * 1024, maxEventsPerJob: 100 })
    servers.push(server)
    const job = (await server.api.call<JobState>('POST', '/v1/jobs', { type: 'flood', dispatch: false })).body
    const reader = await openSse(`${server.url}/v1/jobs/${job.id}/stream`, { headers: { authorization: `Bearer ${server.key}` } })
    reader.pause()
    // ~60 MB while the reader reads nothing: past what the kernel's socket buffers take on loopback
    // (tens of MB), so that the cut leaves bytes — and the error — in the server's own buffer.
    const events = Array.from({ length: 1000 }, (_, i) => ({ type: 'progress', percent: i % 100, message: 'm'.repeat(1900) }))
    for (let batch = 0; batch < 30 && (await slowConsumerCloses(server, 'sse')) === 0; batch++) {
      expect((await server.api.call('POST', `/v1/jobs/${job.id}/events`, { events })).status).toBe(200)
    }
    expect(await slowConsumerCloses(server, 'sse')).toBe(1)
    await sleep(pausedForMs)
    reader.resume()
    const messages = await collect(reader.messages())
    expect(messages.at(-1)).toMatchObject({ type: 'error', error: { code: 'slow_consumer' } })
  }, 60_000)

  it('over WebSocket, paused for longer than 5 s after the cut, still gets its slow_consumer error before the close', async () => {
    const server = await startTestServer({ wsCoalesceAfter: 64 * 1024, wsMaxBuffer: 4 * 1024 * 1024, maxBodyBytes: 8 * 1024 * 1024, maxEventsPerJob: 100_000, maxTextLength: 64 * 1024 * 1024 })
    servers.push(server)
    const job = (await server.api.call<JobState>('POST', '/v1/jobs', { type: 'flood', dispatch: false })).body
    const client = await openWs(wsUrl(server.url), { token: server.key })
    client.send({ type: 'subscribe', jobId: job.id })
    await client.next((m) => m.type === 'snapshot')
    client.pause()
    const events = Array.from({ length: 1000 }, () => ({ type: 'chunk', text: 'c'.repeat(1900) }))
    for (let batch = 0; batch < 30 && (await slowConsumerCloses(server, 'ws')) === 0; batch++) {
      expect((await server.api.call('POST', `/v1/jobs/${job.id}/events`, { events })).status).toBe(200)
    }
    expect(await slowConsumerCloses(server, 'ws')).toBe(1)
    await sleep(pausedForMs)
    client.resume()
    expect(await client.closed).toEqual({ code: 4503, reason: 'slow_consumer' })
    expect(client.received.at(-1)).toMatchObject({ type: 'error', error: { code: 'slow_consumer' } })
  }, 60_000)
})
