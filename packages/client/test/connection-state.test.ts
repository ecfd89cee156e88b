import { afterEach, describe, expect, it } from 'vitest'
import { createJobwireClient, type JobState, type JobwireClient, type StateChange, type Timers } from '@jobwire/client'
import { recordingWebSocket, startTestServer, until, type TestServer } from './harness.js'

/**
 * What the client says about its connection: `idle` once nothing is watched and the socket has
 * closed, the retry count and the next retry's time, and `offline` after `maxRetries`. Timing runs
 * on a clock the test advances (the client's injectable timers); the sockets and servers are real.
 */

let server: TestServer | null = null
let client: JobwireClient | null = null
afterEach(async () => {
  client?.close()
  client = null
  await server?.close()
  server = null
})

/** Timers that fire only when the test advances the clock. */
function manualClock(start = 1_700_000_000_000) {
  let now = start
  let nextId = 1
  const pending = new Map<number, { at: number; run: () => void }>()
  const timers: Timers = {
    setTimeout(run, ms) {
      const id = nextId++
      pending.set(id, { at: now + ms, run })
      return id
    },
    clearTimeout(handle) {
      pending.delete(handle as number)
    },
  }
  return {
    timers,
    now: () => now,
    /** Moves the clock on by `ms`, running every timer that falls due, in order. */
    advance(ms: number): void {
      const until = now + ms
      for (;;) {
        const due = [...pending.entries()].filter(([, timer]) => timer.at <= until).sort((a, b) => a[1].at - b[1].at)[0]
        if (due === undefined) break
        pending.delete(due[0])
        now = Math.max(now, due[1].at)
        due[1].run()
      }
      now = until
    },
  }
}

describe('connection state', () => {
  it('says idle, not live, once the last watch stopped and the socket closed after the linger', async () => {
    server = await startTestServer()
    const s = server
    const job = (await s.api.call<JobState>('POST', '/v1/jobs', { type: 'test', dispatch: false })).body
    const clock = manualClock()
    const ws = recordingWebSocket()
    const changes: StateChange[] = []
    client = createJobwireClient({ url: s.url, getToken: () => s.key, WebSocket: ws.WebSocket, timers: clock.timers, now: clock.now, lingerMs: 1_000 })
    client.connection.subscribe((change) => changes.push(change))
    const watch = client.watchJob(job.id)
    await until(() => watch.connection === 'live' && watch.state !== null, 'live')
    watch.stop()
    clock.advance(1_000) // the job's linger: it is let go
    clock.advance(1_000) // the socket's linger: it closes
    await until(() => ws.sockets[0]?.readyState === ws.sockets[0]?.CLOSED, 'the socket to close')
    expect(client.connection.state).toBe('idle')
    expect(changes.at(-1)).toEqual({ from: 'live', to: 'idle', reason: 'nothing to watch' })

    // The next watch opens a socket again.
    const again = client.watchJob(job.id)
    await until(() => again.connection === 'live', 'live again')
    expect(client.connection.state).toBe('live')
    expect(ws.sockets).toHaveLength(2)
  })

  it('exposes attempt and nextRetryAt while retrying, and with maxRetries ends offline until reconnect()', async () => {
    // A server that is gone: its port refuses connections.
    const gone = await startTestServer()
    const url = gone.url
    await gone.close()
    const clock = manualClock()
    const changes: StateChange[] = []
    client = createJobwireClient({
      url,
      getToken: () => 'jwk_unused',
      WebSocket: recordingWebSocket().WebSocket,
      timers: clock.timers,
      now: clock.now,
      random: () => 0.5,
      backoff: { minMs: 1_000, maxMs: 60_000 },
      maxRetries: 3,
    })
    client.connection.subscribe((change) => changes.push(change))
    const watch = client.watchJob('job_anything')
    expect(client.attempt).toBe(0)
    const c = client
    for (const [attempt, delay] of [[1, 500], [2, 1_000], [3, 2_000]] as const) {
      await until(() => c.nextRetryAt !== null, `retry ${attempt} to be scheduled`)
      expect(c.attempt).toBe(attempt)
      expect(c.nextRetryAt).toBe(clock.now() + delay) // full jitter at random 0.5: half of 1 s · 2^(attempt - 1)
      expect(c.connection.state).toBe('reconnecting')
      clock.advance(delay)
    }
    await until(() => c.connection.state === 'offline', 'offline after three retries')
    expect(c.attempt).toBe(3)
    expect(c.nextRetryAt).toBeNull()
    expect(watch.connection).toBe('offline')
    expect(changes.at(-1)).toMatchObject({ to: 'offline', reason: 'gave up after 3 failed attempts' })

    // reconnect() starts over: one new attempt, counted from zero.
    c.reconnect()
    await until(() => c.nextRetryAt !== null, 'a retry after reconnect()')
    expect(c.attempt).toBe(1)
    expect(c.connection.state).toBe('reconnecting')
  })
})
