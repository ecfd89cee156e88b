import { afterEach, describe, expect, it } from 'vitest'
import { createJobwireClient, JobwireError, type ClientOptions, type JobwireClient, type StateChange } from '@jobwire/client'
import type { WsClientMessage } from '@jobwire/protocol'
import { startFakeServer, type FakeServer, type FakeServerOptions } from './fake-server.js'
import { ManualTimers, recordingWebSocket, settle, until } from './harness.js'

/**
 * The client's timing, on a clock the test moves by hand (the client's injectable `timers` and
 * `now`) against a protocol-level fake server on a real socket: backoff delays and their jitter,
 * `maxRetries` → offline and `reconnect()`, the heartbeat watchdog, the first-message timeout and
 * the fallback it starts, the move back to WebSocket, token refresh in band and at expiry, the
 * linger before an idle socket closes, and the poll interval. Every delay is checked at its edge:
 * nothing happens a millisecond before it is due, and exactly one attempt when it is. Real time
 * only carries bytes over the loopback; it never decides an outcome.
 */

const start = Date.UTC(2026, 0, 1)
let fake: FakeServer | null = null
let client: JobwireClient | null = null
afterEach(async () => {
  client?.close()
  client = null
  await fake?.close()
  fake = null
})

interface Setup {
  fake: FakeServer
  client: JobwireClient
  clock: ManualTimers
  /** Every WebSocket the client constructed (counted on the client's side: no network round trip to wait for). */
  sockets: unknown[]
  /** Each getToken call's answer, in order. */
  tokens: string[]
  /** Every fetch the client made: `path?query`. */
  fetches: string[]
  changes: StateChange[]
}

async function setup(server: FakeServerOptions = {}, options: Partial<ClientOptions> = {}): Promise<Setup> {
  const f = await startFakeServer(server)
  fake = f
  const clock = new ManualTimers(start)
  const ws = recordingWebSocket()
  const tokens: string[] = []
  const fetches: string[] = []
  const c = createJobwireClient({
    url: f.url,
    getToken: () => {
      tokens.push(`token-${tokens.length + 1}`)
      return tokens.at(-1) as string
    },
    WebSocket: ws.WebSocket,
    fetch: (input, init) => {
      const url = new URL(String(input instanceof Request ? input.url : input))
      fetches.push(`${url.pathname}${url.search}`)
      return fetch(input, init)
    },
    timers: clock,
    now: () => clock.now(),
    random: () => 0.5,
    ...options,
  })
  client = c
  const changes: StateChange[] = []
  c.connection.subscribe((change) => changes.push(change))
  return { fake: f, client: c, clock, sockets: ws.sockets, tokens, fetches, changes }
}

const sent = (f: FakeServer, type: WsClientMessage['type']): WsClientMessage[] => f.sockets.flatMap((socket) => socket.received.filter((message) => message.type === type))

describe('WebSocket reconnects on the clock', () => {
  it('backs off with full jitter (half of 500 ms · 2^n at random 0.5, capped), one attempt per retry and none a millisecond early', async () => {
    const { fake: f, client: c, clock, sockets } = await setup({}, { backoff: { minMs: 500, maxMs: 4_000 } })
    f.job('job_a')
    f.down()
    c.watchJob('job_a')
    for (const delay of [250, 500, 1_000, 2_000, 2_000, 2_000]) {
      await until(() => c.nextRetryAt !== null, `a retry after ${delay} ms`)
      expect(c.nextRetryAt).toBe(clock.now() + delay)
      expect(c.connection.state).toBe('reconnecting')
      const before = sockets.length
      await clock.advance(delay - 1)
      expect(sockets).toHaveLength(before)
      await clock.advance(1)
      expect(sockets).toHaveLength(before + 1)
    }
    await until(() => c.nextRetryAt !== null, 'the seventh retry')
    expect(c.attempt).toBe(7)
    // The server is back: the next attempt gets through, and the count starts over.
    f.up()
    await clock.advance(2_000)
    await until(() => c.connection.state === 'live', 'live')
    expect(c.attempt).toBe(0)
    expect(c.nextRetryAt).toBeNull()
  })

  it('with maxRetries stops offline, tries nothing more however long it waits, and reconnect() starts over from one attempt', async () => {
    const { fake: f, client: c, clock, sockets, changes } = await setup({}, { backoff: { minMs: 1_000, maxMs: 60_000 }, maxRetries: 3 })
    f.job('job_a')
    f.down()
    const watch = c.watchJob('job_a')
    for (const delay of [500, 1_000, 2_000]) {
      await until(() => c.nextRetryAt !== null, `retry after ${delay} ms`)
      await clock.advance(delay)
    }
    await until(() => c.connection.state === 'offline', 'offline after three retries')
    expect(c.attempt).toBe(3)
    expect(c.nextRetryAt).toBeNull()
    expect(watch.connection).toBe('offline')
    expect(changes.at(-1)).toMatchObject({ to: 'offline', reason: 'gave up after 3 failed attempts' })
    const attempts = sockets.length
    expect(attempts).toBe(4)
    await clock.advance(60 * 60_000)
    expect(sockets).toHaveLength(attempts)
    expect(c.connection.state).toBe('offline')

    // reconnect() starts over: one attempt at once, counted from zero, then the backoff from its start.
    c.reconnect()
    await until(() => c.nextRetryAt !== null, 'a retry after reconnect()')
    expect(sockets).toHaveLength(attempts + 1)
    expect(c.attempt).toBe(1)
    expect(c.nextRetryAt).toBe(clock.now() + 500)
    expect(c.connection.state).toBe('reconnecting')
    f.up()
    await clock.advance(500)
    await until(() => watch.connection === 'live' && watch.state !== null, 'live once the server is back')
    expect(sockets).toHaveLength(attempts + 2)
    expect(c.attempt).toBe(0)
  })

  it('a dropped socket reconnects after the first backoff delay and resumes from its last seq', async () => {
    const { fake: f, client: c, clock, sockets } = await setup()
    f.job('job_a')
    const watch = c.watchJob('job_a')
    await until(() => watch.connection === 'live' && watch.state !== null, 'live')
    f.append('job_a', [{ type: 'chunk', data: { text: 'one ' } }])
    await until(() => watch.state?.seq === 3, 'the first event')
    f.sockets[0]?.drop()
    await until(() => c.nextRetryAt !== null, 'a retry')
    expect(c.nextRetryAt).toBe(clock.now() + 250)
    f.append('job_a', [{ type: 'chunk', data: { text: 'two' } }])
    await clock.advance(249)
    expect(sockets).toHaveLength(1)
    await clock.advance(1)
    await until(() => watch.state?.text === 'one two', 'the missed event')
    expect(sockets).toHaveLength(2)
    expect(f.sockets[1]?.received[0]).toEqual({ type: 'subscribe', jobId: 'job_a', after: 3 })
    expect(c.attempt).toBe(0)
  })

  it('a socket closed with 1001 (the node is going away) comes back after the jitter of at most 250 ms, not the backoff', async () => {
    const { fake: f, client: c, clock, sockets } = await setup({}, { backoff: { minMs: 60_000, maxMs: 60_000 } })
    f.job('job_a')
    const watch = c.watchJob('job_a')
    await until(() => watch.connection === 'live' && watch.state !== null, 'live')
    f.sockets[0]?.close(1001, 'server shutting down')
    await until(() => c.nextRetryAt !== null, 'the move')
    expect(c.nextRetryAt).toBe(clock.now() + 125)
    await clock.advance(124)
    expect(sockets).toHaveLength(1)
    await clock.advance(1)
    await until(() => f.sockets.length === 2 && watch.connection === 'live', 'the new socket')
    expect(f.sockets[1]?.received[0]).toEqual({ type: 'subscribe', jobId: 'job_a', after: 2 })
  })

  it("abandons a socket that stays silent for twice the server's heartbeat plus 5 s, counted from the last frame", async () => {
    const { fake: f, client: c, clock } = await setup({ heartbeatMs: 1_000 })
    f.job('job_a')
    const watch = c.watchJob('job_a')
    await until(() => watch.connection === 'live' && watch.state !== null, 'live')
    await clock.advance(5_000)
    f.append('job_a', [{ type: 'chunk', data: { text: 'x' } }]) // a frame: the watchdog starts again
    await until(() => watch.state?.seq === 3, 'the event')
    await clock.advance(6_999)
    expect(f.sockets[0]?.closed).toBeNull()
    expect(watch.connection).toBe('live')
    await clock.advance(1)
    await until(() => f.sockets[0]?.closed !== null, 'the client to close the silent socket')
    expect(f.sockets[0]?.closed).toEqual({ code: 4000, reason: 'no heartbeat' })
    expect(c.connection.state).toBe('reconnecting')
    expect(c.attempt).toBe(1)
  })

  it('a socket that opens but says no welcome within firstMessageTimeoutMs is given up, and the client falls back to SSE', async () => {
    const { fake: f, client: c, clock, fetches } = await setup({ onSocket: () => 'hold' }, { firstMessageTimeoutMs: 3_000 })
    f.job('job_a')
    const watch = c.watchJob('job_a')
    await until(() => f.sockets.length === 1, 'the socket')
    await clock.advance(2_999)
    expect(f.sockets[0]?.closed).toBeNull()
    expect(c.transport).toBe('ws')
    await clock.advance(1)
    await until(() => watch.connection === 'live' && watch.state !== null, 'the SSE stream')
    expect(f.sockets[0]?.closed).toEqual({ code: 4000, reason: 'no welcome within 3000 ms' })
    expect(c.transport).toBe('sse')
    expect(fetches).toEqual(['/healthz', '/v1/jobs/job_a/stream'])
  })

  it('moves back to WebSocket upgradeIntervalMs after falling back (±25 % jitter, here exactly), resuming without a gap', async () => {
    const { fake: f, client: c, clock } = await setup({ websocket: false }, { upgradeIntervalMs: 30_000 })
    f.job('job_a')
    const watch = c.watchJob('job_a')
    await until(() => c.transport === 'sse' && watch.connection === 'live' && watch.state !== null, 'the SSE fallback')
    f.append('job_a', [{ type: 'chunk', data: { text: 'a' } }])
    await until(() => watch.state?.text === 'a', 'an event over SSE')
    f.websocket = true
    await clock.advance(29_999)
    expect(f.sockets).toHaveLength(0)
    await clock.advance(1)
    await until(() => c.transport === 'ws' && sent(f, 'subscribe').length === 1, 'the move back to WebSocket')
    expect(sent(f, 'subscribe')).toEqual([{ type: 'subscribe', jobId: 'job_a', after: 3 }])
    f.append('job_a', [{ type: 'chunk', data: { text: 'b' } }])
    await until(() => watch.state?.text === 'ab', 'an event over WebSocket')
    await until(() => f.streams[0]?.ended === true, 'the SSE stream to be let go')
  })
})

describe('credentials on the clock', () => {
  it('token_expiring: one getToken, refresh_token on the same socket, nothing reconnects', async () => {
    const { fake: f, client: c, tokens } = await setup()
    f.job('job_a')
    const watch = c.watchJob('job_a')
    await until(() => watch.connection === 'live' && watch.state !== null, 'live')
    expect(tokens).toEqual(['token-1'])
    expect(f.sockets[0]?.token).toBe('token-1')
    f.broadcast({ type: 'token_expiring', expiresAt: new Date(start + 30_000).toISOString() })
    await until(() => sent(f, 'refresh_token').length === 1, 'the refresh')
    expect(sent(f, 'refresh_token')).toEqual([{ type: 'refresh_token', token: 'token-2', ref: '1' }])
    f.append('job_a', [{ type: 'chunk', data: { text: 'after the refresh' } }])
    await until(() => watch.state?.text === 'after the refresh', 'the next event')
    expect(f.sockets).toHaveLength(1)
    expect(tokens).toEqual(['token-1', 'token-2'])
  })

  it('an unanswered refresh times out after 10 s without harm; the close with token_expired reconnects at once with a fresh token from the position', async () => {
    const { fake: f, client: c, clock, tokens } = await setup({ onMessage: (_socket, message) => (message.type === 'refresh_token' ? 'hold' : 'default') })
    f.job('job_a')
    const watch = c.watchJob('job_a')
    await until(() => watch.connection === 'live' && watch.state !== null, 'live')
    f.broadcast({ type: 'token_expiring', expiresAt: new Date(start + 30_000).toISOString() })
    await until(() => sent(f, 'refresh_token').length === 1, 'the refresh')
    await clock.advance(10_000) // the request times out: not fatal
    expect(c.error).toBeNull()
    expect(watch.connection).toBe('live')
    f.sockets[0]?.close(4401, 'token_expired')
    await until(() => c.nextRetryAt !== null, 'the reconnect')
    expect(c.nextRetryAt).toBe(clock.now())
    await clock.advance(0)
    await until(() => f.sockets.length === 2 && watch.connection === 'live', 'the new socket')
    expect(f.sockets[1]?.token).toBe('token-3')
    expect(tokens).toEqual(['token-1', 'token-2', 'token-3'])
    expect(f.sockets[1]?.received[0]).toEqual({ type: 'subscribe', jobId: 'job_a', after: 2 })
  })

  it('getToken refusing at token_expiring ends every watch with unauthorized; nothing is retried, however long it waits', async () => {
    let refuse = false
    const { fake: f, client: c, clock } = await setup({}, {
      getToken: () => {
        if (refuse) throw new JobwireError('unauthorized')
        return 'token-ok'
      },
    })
    f.job('job_a')
    let ended: JobwireError | null = null
    const watch = c.watchJob('job_a', { onEnd: (error) => (ended = error) })
    await until(() => watch.connection === 'live', 'live')
    refuse = true
    f.broadcast({ type: 'token_expiring', expiresAt: new Date(start + 30_000).toISOString() })
    await until(() => ended !== null, 'the end')
    expect((ended as JobwireError | null)?.code).toBe('unauthorized')
    await clock.advance(60 * 60_000)
    expect(f.sockets).toHaveLength(1)
    expect(sent(f, 'refresh_token')).toEqual([])
    expect(c.connection.state).toBe('closed')
  })
})

describe('idle sockets on the clock', () => {
  it('a stopped watch lets its job go after lingerMs, and the socket closes lingerMs later: idle until the next watch', async () => {
    const { fake: f, client: c, clock, changes } = await setup({}, { lingerMs: 1_000 })
    f.job('job_a')
    const watch = c.watchJob('job_a')
    await until(() => watch.connection === 'live' && watch.state !== null, 'live')
    watch.stop()
    await clock.advance(999)
    expect(sent(f, 'unsubscribe')).toEqual([])
    await clock.advance(1)
    await until(() => sent(f, 'unsubscribe').length === 1, 'the unsubscribe')
    await clock.advance(999)
    expect(f.sockets[0]?.closed).toBeNull()
    expect(c.connection.state).toBe('live')
    await clock.advance(1)
    await until(() => f.sockets[0]?.closed !== null, 'the socket to close')
    expect(f.sockets[0]?.closed).toEqual({ code: 1000, reason: 'nothing to watch' })
    expect(c.connection.state).toBe('idle')
    expect(changes.at(-1)).toEqual({ from: 'live', to: 'idle', reason: 'nothing to watch' })
    // Idle: no retry, no socket, however long.
    await clock.advance(60 * 60_000)
    expect(f.sockets).toHaveLength(1)
    const again = c.watchJob('job_a')
    await until(() => again.connection === 'live', 'live again')
    expect(f.sockets).toHaveLength(2)
  })

  it('a watch started again within the linger keeps the socket and the job: no unsubscribe, no new socket', async () => {
    const { fake: f, client: c, clock } = await setup({}, { lingerMs: 1_000 })
    f.job('job_a')
    const first = c.watchJob('job_a')
    await until(() => first.connection === 'live' && first.state !== null, 'live')
    first.stop()
    await clock.advance(999)
    const second = c.watchJob('job_a')
    expect(second.state?.seq).toBe(2)
    await clock.advance(10_000)
    expect(sent(f, 'unsubscribe')).toEqual([])
    expect(sent(f, 'subscribe')).toHaveLength(1)
    expect(f.sockets).toHaveLength(1)
    expect(f.sockets[0]?.closed).toBeNull()
  })
})

describe('SSE and polling on the clock', () => {
  it('a stream that sends nothing within firstMessageTimeoutMs (a buffering proxy) moves to polling, every pollIntervalMs, never after the end', async () => {
    const { fake: f, client: c, clock, fetches } = await setup({ onStream: () => 'hold' }, { transports: ['sse', 'poll'], firstMessageTimeoutMs: 2_000, pollIntervalMs: 1_000 })
    f.job('job_a')
    const watch = c.watchJob('job_a')
    await until(() => f.streams.length === 1, 'the stream')
    await clock.advance(1_999)
    expect(f.polls).toHaveLength(0)
    await clock.advance(1)
    await until(() => f.polls.length === 1 && watch.state !== null, 'the first poll')
    expect(c.transport).toBe('poll')
    expect(watch.connection).toBe('polling')
    await clock.advance(999)
    expect(f.polls).toHaveLength(1)
    f.append('job_a', [{ type: 'chunk', data: { text: 'polled' } }, { type: 'completed', data: { result: 7 } }])
    await clock.advance(1)
    await until(() => watch.done, 'the terminal event by polling')
    expect(watch.state?.result).toBe(7)
    expect(f.polls.map((poll) => poll.after)).toEqual([null, 2])
    await clock.advance(60 * 60_000)
    expect(fetches.filter((path) => path.includes('/events'))).toHaveLength(2)
  })

  it('an SSE stream that ends with token_expired reconnects at once with a fresh token, from its position', async () => {
    const { fake: f, client: c, clock, tokens } = await setup({}, { transports: ['sse'] })
    f.job('job_a')
    const watch = c.watchJob('job_a')
    await until(() => watch.connection === 'live' && watch.state !== null, 'live')
    f.append('job_a', [{ type: 'chunk', data: { text: 'before ' } }])
    await until(() => watch.state?.seq === 3, 'the event')
    const first = f.streams[0]
    first?.send({ type: 'error', error: new JobwireError('token_expired').toBody() })
    first?.end()
    await until(() => c.nextRetryAt !== null, 'the reconnect')
    expect(c.nextRetryAt).toBe(clock.now())
    await clock.advance(0)
    await until(() => f.streams.length === 2 && watch.connection === 'live', 'the second stream')
    expect(f.streams[1]).toMatchObject({ after: 3, token: 'token-2' })
    expect(tokens).toEqual(['token-1', 'token-2'])
    f.append('job_a', [{ type: 'chunk', data: { text: 'after' } }])
    await until(() => watch.state?.text === 'before after', 'the next event')
  })

  it('a dropped SSE stream backs off like a socket and resumes from its position', async () => {
    const { fake: f, client: c, clock } = await setup({}, { transports: ['sse'] })
    f.job('job_a')
    const watch = c.watchJob('job_a')
    await until(() => watch.connection === 'live' && watch.state !== null, 'live')
    f.streams[0]?.end()
    await until(() => c.nextRetryAt !== null, 'a retry')
    expect(c.nextRetryAt).toBe(clock.now() + 250)
    await clock.advance(249)
    expect(f.streams).toHaveLength(1)
    await clock.advance(1)
    await until(() => f.streams.length === 2 && watch.connection === 'live', 'the second stream')
    expect(f.streams[1]?.after).toBe(2)
    expect(c.attempt).toBe(0)
  })

  it('a poll refused with a retryable error backs off 250, 500, 1000 ms before polling again', async () => {
    const { fake: f, client: c, clock } = await setup({ onPoll: () => ({ error: 'unavailable', details: { reason: 'scripted' } }) }, { transports: ['poll'], pollIntervalMs: 5_000 })
    f.job('job_a')
    c.watchJob('job_a')
    await until(() => f.polls.length === 1, 'the first poll')
    for (const delay of [250, 500, 1_000]) {
      await until(() => c.nextRetryAt !== null, `a retry after ${delay} ms`)
      expect(c.nextRetryAt).toBe(clock.now() + delay)
      const before = f.polls.length
      await clock.advance(delay - 1)
      expect(f.polls).toHaveLength(before)
      await clock.advance(1)
      await until(() => f.polls.length === before + 1, 'the next poll')
    }
    await until(() => c.nextRetryAt !== null, 'the fourth retry')
    expect(c.attempt).toBe(4)
    expect(c.nextRetryAt).toBe(clock.now() + 2_000)
  })
})

describe('online and offline on the clock', () => {
  it('waits while offline, however long, and connects at once when the device is back', async () => {
    let online = true
    const listeners = new Set<(online: boolean) => void>()
    const { fake: f, client: c, clock, sockets } = await setup({}, {
      online: {
        isOnline: () => online,
        subscribe: (listener) => (listeners.add(listener), () => listeners.delete(listener)),
      },
    })
    f.job('job_a')
    const watch = c.watchJob('job_a')
    await until(() => watch.connection === 'live' && watch.state !== null, 'live')
    online = false
    for (const listener of [...listeners]) listener(false)
    await until(() => watch.connection === 'reconnecting', 'reconnecting while offline')
    f.append('job_a', [{ type: 'chunk', data: { text: 'while away' } }])
    await clock.advance(60 * 60_000)
    expect(sockets).toHaveLength(1)
    expect(c.nextRetryAt).toBeNull()
    online = true
    for (const listener of [...listeners]) listener(true)
    await settle()
    expect(sockets).toHaveLength(2)
    await until(() => watch.state?.text === 'while away', 'the missed event')
  })
})
