import { describe, expect, it } from 'vitest'
import { wsClientMessageTypes, type WsClientMessage } from '@jobwire/protocol'
import { parseClientMessage, RefusedMessage } from '../src/transports/ws-messages.js'

// The JSON shape limits are the server's defaults (--max-json-depth, --max-json-width).
const limits = { maxPositions: 3, jsonShape: { maxDepth: 64, maxWidth: 10_000 } }

/** What a refused message answers: its code, details and where the answer goes. */
function refusal(line: string): { code: string; details: unknown; target: unknown } {
  try {
    parseClientMessage(line, limits)
  } catch (error) {
    if (!(error instanceof RefusedMessage)) throw error
    return { code: error.error.code, details: error.error.details, target: error.target }
  }
  throw new Error(`accepted: ${line}`)
}

const parse = (message: unknown): WsClientMessage => parseClientMessage(JSON.stringify(message), limits)
const refused = (message: unknown) => refusal(JSON.stringify(message))
const field = (name: string, reason: string) => ({ code: 'invalid_request', details: { field: name, reason: `${name}: ${reason}` } })

describe('WebSocket client messages: what is accepted', () => {
  it('reads each type with exactly the fields it was sent, and nothing else', () => {
    const accepted: WsClientMessage[] = [
      { type: 'subscribe', jobId: 'job_a' },
      { type: 'subscribe', jobId: 'job_a', after: 0 },
      { type: 'subscribe', jobId: 'job_a', after: Number.MAX_SAFE_INTEGER, token: 't'.repeat(16_384) },
      { type: 'unsubscribe', jobId: 'j'.repeat(100) },
      { type: 'subscribe_user' },
      { type: 'subscribe_user', owner: { tenant: 'acme', user: 'u'.repeat(200) }, positions: { job_a: 0, job_b: 7, job_c: 9 }, since: '2026-12-04T10:00:00.000Z' },
      { type: 'subscribe_user', positions: {} },
      { type: 'unsubscribe_user' },
      { type: 'cancel', jobId: 'job_a' },
      { type: 'cancel', jobId: 'job_a', reason: 'r'.repeat(2000), ref: 'x'.repeat(100) },
      { type: 'refresh_token', token: 'a.b.c' },
      { type: 'refresh_token', token: 'a.b.c', jobId: 'job_a', ref: '1' },
      { type: 'ping' },
      { type: 'ping', ref: 'p' },
    ]
    for (const message of accepted) expect(parse(message)).toStrictEqual(message)
    expect(new Set(accepted.map((m) => m.type))).toEqual(new Set(wsClientMessageTypes))
  })
})

describe('WebSocket client messages: what is refused, and how', () => {
  it('malformed_message for what is no JSON object with a string type, with no target', () => {
    expect(refusal('not json')).toEqual({ code: 'malformed_message', details: { reason: 'it is not valid JSON' }, target: {} })
    for (const line of ['[1]', '"text"', 'null', '3']) {
      expect(refusal(line)).toEqual({ code: 'malformed_message', details: { reason: 'it is not a JSON object' }, target: {} })
    }
    expect(refused({ ref: 'r', jobId: 'job_a' })).toEqual({ code: 'malformed_message', details: { reason: 'it has no string "type"' }, target: { ref: 'r', jobId: 'job_a' } })
    expect(refused({ type: 1 })).toMatchObject({ code: 'malformed_message', target: {} })
  })

  it('unknown_message_type names the type (cut to 100 characters) and the allowed ones', () => {
    for (const type of ['teleport', '__proto__', 'constructor', 'x'.repeat(300)]) {
      expect(refused({ type, ref: 'r1' })).toEqual({
        code: 'unknown_message_type',
        details: { type: type.slice(0, 100), allowed: wsClientMessageTypes },
        target: { ref: 'r1' },
      })
    }
  })

  it('invalid_position for a bad `after`, answered to the job', () => {
    for (const after of [-1, 1.5, 'one', null, 2 ** 53]) {
      expect(refused({ type: 'subscribe', jobId: 'job_a', after })).toEqual({
        code: 'invalid_position',
        details: { position: String(JSON.parse(JSON.stringify({ after })).after) },
        target: { jobId: 'job_a' },
      })
    }
  })

  it('invalid_position for a number JSON cannot hold', () => {
    expect(refusal('{"type":"subscribe","jobId":"job_a","after":1e400}')).toEqual({ code: 'invalid_position', details: { position: 'Infinity' }, target: { jobId: 'job_a' } })
  })

  it('invalid_request naming the first field that is wrong: unknown fields first, then ref, then the type’s own in order', () => {
    const cases: [unknown, ReturnType<typeof field>, object][] = [
      [{ type: 'subscribe', jobId: 'job_a', colour: 'red' }, field('colour', 'unknown field for a "subscribe" message'), { jobId: 'job_a' }],
      [{ type: 'subscribe', jobId: 'job_a', ref: 'r' }, field('ref', 'unknown field for a "subscribe" message'), { ref: 'r', jobId: 'job_a' }],
      [{ type: 'ping', ref: 'r', extra: 1, jobId: 'job_a' }, field('extra', 'unknown field for a "ping" message'), { ref: 'r', jobId: 'job_a' }],
      [{ type: 'subscribe' }, field('jobId', 'expected a string of 1 to 100 characters'), {}],
      [{ type: 'subscribe', jobId: '' }, field('jobId', 'expected a string of 1 to 100 characters'), {}],
      [{ type: 'subscribe', jobId: 'j'.repeat(101) }, field('jobId', 'expected a string of 1 to 100 characters'), {}],
      [{ type: 'subscribe', jobId: ['job_a'] }, field('jobId', 'expected a string of 1 to 100 characters'), {}],
      [{ type: 'subscribe', jobId: 'job_a', token: '' }, field('token', 'expected a string of 1 to 16384 characters'), { jobId: 'job_a' }],
      [{ type: 'subscribe', jobId: 'job_a', token: 7, after: -1 }, field('token', 'expected a string of 1 to 16384 characters'), { jobId: 'job_a' }],
      [{ type: 'unsubscribe', jobId: 3 }, field('jobId', 'expected a string of 1 to 100 characters'), {}],
      [{ type: 'cancel', ref: 'r2' }, field('jobId', 'expected a string of 1 to 100 characters'), { ref: 'r2' }],
      [{ type: 'cancel', jobId: 'job_a', ref: '' }, field('ref', 'expected a string of 1 to 100 characters'), { ref: '', jobId: 'job_a' }],
      [{ type: 'cancel', jobId: 5, ref: 'x'.repeat(101) }, field('ref', 'expected a string of 1 to 100 characters'), {}],
      [{ type: 'cancel', jobId: 'job_a', reason: 'r'.repeat(2001) }, field('reason', 'expected a string of 1 to 2000 characters'), { jobId: 'job_a' }],
      [{ type: 'refresh_token', jobId: 'job_a' }, field('token', 'expected a string of 1 to 16384 characters'), { jobId: 'job_a' }],
      [{ type: 'refresh_token', token: 't', jobId: '' }, field('jobId', 'expected a string of 1 to 100 characters'), {}],
      [{ type: 'ping', ref: 9 }, field('ref', 'expected a string of 1 to 100 characters'), {}],
      [{ type: 'subscribe_user', owner: 'me' }, field('owner', 'expected {tenant, user}'), {}],
      [{ type: 'subscribe_user', owner: null }, field('owner', 'expected {tenant, user}'), {}],
      [{ type: 'subscribe_user', owner: { tenant: 'a', user: 'b', role: 'admin' } }, field('owner', 'expected only tenant and user'), {}],
      [{ type: 'subscribe_user', owner: { tenant: '', user: 'b' } }, field('owner', 'tenant: expected 1 to 200 characters'), {}],
      [{ type: 'subscribe_user', owner: { tenant: 'a' } }, field('owner', 'user: expected 1 to 200 characters'), {}],
      [{ type: 'subscribe_user', owner: { tenant: 'a', user: 'u'.repeat(201) } }, field('owner', 'user: expected 1 to 200 characters'), {}],
      // As HTTP takes owners: an owner key is tenant:user, so a tenant holds no ":" (and neither holds a control character).
      [{ type: 'subscribe_user', owner: { tenant: 'acme:ann', user: 'b' } }, field('owner', 'tenant: no control characters or ":"'), {}],
      [{ type: 'subscribe_user', owner: { tenant: 'acme', user: 'ann\nbob' } }, field('owner', 'user: no control characters'), {}],
      [{ type: 'subscribe_user', owner: 'me', positions: 'all' }, field('owner', 'expected {tenant, user}'), {}],
      [{ type: 'subscribe_user', positions: 'all' }, field('positions', 'expected {jobId: seq}'), {}],
      [{ type: 'subscribe_user', positions: [1, 2] }, field('positions', 'expected {jobId: seq}'), {}],
      [{ type: 'subscribe_user', positions: null }, field('positions', 'expected {jobId: seq}'), {}],
      [{ type: 'subscribe_user', positions: { a: 1, b: 2, c: 3, d: 4 } }, field('positions', 'at most 3 jobs'), {}],
      [{ type: 'subscribe_user', positions: { '': 1 } }, field('positions', 'job ids are 1 to 100 characters'), {}],
      [{ type: 'subscribe_user', positions: { ['j'.repeat(101)]: 1 } }, field('positions', 'job ids are 1 to 100 characters'), {}],
      [{ type: 'subscribe_user', positions: { job_a: 1, job_b: 'b' } }, field('positions', 'job_b: expected a seq >= 0'), {}],
      [{ type: 'subscribe_user', positions: { job_a: -1 } }, field('positions', 'job_a: expected a seq >= 0'), {}],
      [{ type: 'subscribe_user', positions: { job_a: 0.5 } }, field('positions', 'job_a: expected a seq >= 0'), {}],
      [{ type: 'subscribe_user', since: 'yesterday' }, field('since', 'expected an ISO date'), {}],
      [{ type: 'subscribe_user', since: 20261204 }, field('since', 'expected an ISO date'), {}],
      [{ type: 'subscribe_user', since: `2026-12-04T10:00:00.000Z${' '.repeat(30)}` }, field('since', 'expected an ISO date'), {}],
      [{ type: 'subscribe_user', positions: { a: 'x' }, since: 'no' }, field('positions', 'a: expected a seq >= 0'), {}],
    ]
    for (const [message, expected, target] of cases) {
      expect(refused(message), JSON.stringify(message).slice(0, 200)).toEqual({ ...expected, target })
    }
  })

  it('refuses a message nested or wide past the JSON shape limits before reading it', () => {
    expect(refusal(`{"type":"ping","ref":${'['.repeat(100)}${']'.repeat(100)}}`)).toMatchObject({ code: 'invalid_request', target: {} })
  })
})
