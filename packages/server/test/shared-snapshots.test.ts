import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { encodeSseMessage, type JobState, type WsServerMessage } from '@jobwire/protocol'
import { openSse, startTestServer, type SseConnection, type TestServer } from './fixtures.js'
import { openWs, wsUrl, type WsTestClient } from './ws-client.js'
import { stateJson } from '../src/transports/state-json.js'
import { seededRandom } from '../../../test/support/random.js'

/**
 * A snapshot's state is encoded once and shared by every stream that starts from it (late joiners
 * of a popular job). What each watcher receives must be exactly what encoding its own message
 * would have written: the same bytes on SSE, the same message on WebSocket — with text that JSON
 * and SSE both have to escape or split.
 */
let server: TestServer
const opened: { close(): void }[] = []

beforeAll(async () => {
  server = await startTestServer({ storage: 'sqlite' })
})

afterAll(async () => {
  for (const one of opened) one.close()
  await server.close()
})

describe('snapshots shared by many watchers', () => {
  it('SSE, WebSocket and long-poll watchers joining at once each get the exact snapshot, long text, line breaks and all', async () => {
    const created = await server.api.call<JobState>('POST', '/v1/jobs', { type: 'shared', dispatch: false, input: { line: 'a\nb' } })
    const id = created.body.id
    const tricky = 'line one\nline two\r\nthree\rfour \u2028 five \u2029 "quoted" back\\slash \u00e9t\u00e9 \ud83d\ude80 '
    const events = [
      ...Array.from({ length: 10 }, () => ({ type: 'chunk', text: tricky.repeat(200) })),
      { type: 'item', id: 'page-1', status: 'running', message: 'a\nmessage', metadata: { note: 'x\r\ny' } },
      { type: 'progress', stage: 'writing', percent: 40, message: 'half\nway' },
    ]
    expect((await server.api.call('POST', `/v1/jobs/${id}/events`, { events })).status).toBe(200)
    const job = (await server.api.call<JobState>('GET', `/v1/jobs/${id}`)).body
    expect(job.text.length).toBeGreaterThan(100_000)

    const auth = { authorization: `Bearer ${server.key}` }
    const [sse, ws] = await Promise.all([
      Promise.all(Array.from({ length: 4 }, () => openSse(`${server.url}/v1/jobs/${id}/stream`, { headers: auth }))),
      Promise.all(Array.from({ length: 3 }, () => openWs(wsUrl(server.url), { token: server.key }))),
    ])
    opened.push(...sse, ...ws)
    for (const client of ws) client.send({ type: 'subscribe', jobId: id })

    const expected = encodeSseMessage({ type: 'snapshot', job, reset: false, reason: 'initial' })
    await Promise.all(sse.map((stream) => stream.waitFor((connection) => connection.raw.includes(expected))))
    for (const stream of sse) expect(snapshotFrame(stream)).toBe(expected)

    // Long-poll without a position: the same snapshot, and the same bytes as the answer's own JSON.
    const polls = await Promise.all(Array.from({ length: 3 }, () => fetch(`${server.url}/v1/jobs/${id}/events`, { headers: auth })))
    for (const poll of polls) {
      expect(poll.headers.get('content-type')).toBe('application/json; charset=utf-8')
      expect(await poll.text()).toBe(JSON.stringify({ snapshot: { job, reset: false, reason: 'initial' }, events: [], next: job.seq, done: false, more: false }))
    }

    const snapshots = await Promise.all(ws.map((client: WsTestClient) => client.next((m: WsServerMessage) => m.type === 'snapshot' && m.jobId === id)))
    for (const snapshot of snapshots) expect(snapshot).toEqual({ type: 'snapshot', jobId: id, job, reset: false, reason: 'initial' })
  })
})

/** The raw `snapshot` frame of an SSE stream, as received. */
function snapshotFrame(stream: SseConnection): string {
  const start = stream.raw.indexOf('event: snapshot\n')
  const from = stream.raw.lastIndexOf('id: ', start)
  return stream.raw.slice(from, stream.raw.indexOf('\n\n', start) + 2)
}

describe('stateJson', () => {
  const base = { id: 'job_x', seq: 1, status: 'running', text: '' } as unknown as JobState
  const state = (seq: number, characters: number): JobState => ({ ...base, seq, text: String(seq % 10).repeat(characters) })

  it('answers the JSON of the state asked for, again and again, after others turned it out by count', () => {
    const random = seededRandom(41)
    const states = Array.from({ length: 40 }, (_, i) => state(i + 1, 10 + Math.floor(random() * 1_000)))
    for (let step = 0; step < 2_000; step++) {
      const one = states[Math.floor(random() * states.length)] as JobState
      expect(stateJson(one)).toBe(JSON.stringify(one))
    }
  })

  it('turns out older states to stay within its character cap, and encodes them again when asked', () => {
    const small = state(1, 10)
    const first = state(2, 20_000_000)
    const second = state(3, 20_000_000)
    for (const one of [small, first, second]) expect(stateJson(one)).toBe(JSON.stringify(one))
    // `second` did not fit beside `first` (32 M characters at most): both older ones were let go.
    expect(stateJson(first)).toBe(JSON.stringify(first))
    expect(stateJson(small)).toBe(JSON.stringify(small))
    expect(stateJson(second)).toBe(JSON.stringify(second))
  })
})
