import { afterEach, expect, it } from 'vitest'
import { createJobwireClient, type JobState, type JobwireClient } from '@jobwire/client'
import { createJsonClient, makeTempDir, recordingWebSocket, startServer, testApiKey, until } from './harness.js'

/**
 * A node that shuts down closes its WebSockets with 1001 ("going away"): the client moves
 * elsewhere at once (a load balancer sends it to a live node) instead of waiting out its
 * reconnect backoff, and resumes from its last seq. The backoff here is a minute, so only the
 * going-away path can reconnect within the test.
 */
const cleanups: (() => unknown)[] = []
let client: JobwireClient | null = null
afterEach(async () => {
  client?.close()
  client = null
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

it('a WebSocket closed with 1001 by a node shutting down reconnects at once (not after the backoff) and resumes exactly', async () => {
  const dir = await makeTempDir()
  cleanups.push(() => dir.remove())
  const config = { apiKey: testApiKey, host: '127.0.0.1', dataDir: dir.path, memory: false }
  let node = await startServer({ logger: false, config: { ...config, port: 0 } })
  cleanups.push(() => node.close())
  const port = node.port
  let api = createJsonClient(node.url, testApiKey)
  cleanups.push(() => api.close())
  const ws = recordingWebSocket()
  client = createJobwireClient({
    url: node.url,
    getToken: () => testApiKey,
    WebSocket: ws.WebSocket,
    backoff: { minMs: 60_000, maxMs: 60_000 },
    random: () => 0.5,
  })
  const job = (await api.call<JobState>('POST', '/v1/jobs', { type: 'test', dispatch: false })).body
  const applied: number[] = []
  let ended = false
  const watch = client.watchJob(job.id, {
    onUpdate: (_state, update) => {
      if (update.event !== undefined) applied.push(update.event.seq)
    },
    onEnd: () => (ended = true),
  })
  await until(() => watch.state !== null && client?.transport === 'ws', 'the first snapshot over WebSocket')
  await api.call('POST', `/v1/jobs/${job.id}/events`, { events: [{ type: 'progress', stage: 'one' }, { type: 'chunk', text: 'before ' }] })
  await until(() => watch.state?.seq === 4, 'the events before the shutdown')
  const socketsBefore = ws.sockets.length
  // A graceful shutdown: the node says 1001 to its sockets, then the next node takes the port.
  await node.close()
  await api.close()
  node = await startServer({ logger: false, config: { ...config, port } })
  api = createJsonClient(node.url, testApiKey)
  await api.call('POST', `/v1/jobs/${job.id}/events`, { events: [{ type: 'chunk', text: 'after' }, { type: 'completed' }] })
  await until(() => ended, 'the terminal event through the new node', 20_000)
  expect(applied).toEqual([2, 3, 4, 5, 6])
  expect(watch.state?.text).toBe('before after')
  expect(ws.sockets.length).toBeGreaterThan(socketsBefore)
  expect(client.transport).toBe('ws')
})
