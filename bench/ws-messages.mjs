// What reading one WebSocket client message costs: `node bench/ws-messages.mjs` (after `npm run
// build`). parseClientMessage (packages/server/src/transports/ws-messages.ts) turns one line of a
// client frame into a typed message or a refusal: the JSON shape check, JSON.parse and the
// message's schema. Clients send few messages (subscribe, refresh_token, ping…), so microseconds
// are fine. Each row is the median of BENCH_ROUNDS (15) rounds of enough repetitions to take ~20 ms.
import { parseClientMessage } from '../packages/server/dist/transports/ws-messages.js'
import { median, timePerCall } from './lib/measure.mjs'

const rounds = Number(process.env.BENCH_ROUNDS ?? 15)
const limits = { maxPositions: 1000, jsonShape: { maxDepth: 64, maxWidth: 10_000 } }
const token = 'eyJhbGciOiJIUzI1NiJ9.' + 'x'.repeat(300) + '.' + 'y'.repeat(43)
const messages = [
  ['ping', { type: 'ping', ref: '17' }],
  ['subscribe with after and token', { type: 'subscribe', jobId: 'job_0123456789abcdefghij', after: 42, token }],
  ['cancel with reason and ref', { type: 'cancel', jobId: 'job_0123456789abcdefghij', reason: 'the user closed the tab', ref: 'c1' }],
  ['refresh_token', { type: 'refresh_token', token, ref: 'r1' }],
  ['subscribe_user, owner, 100 positions', { type: 'subscribe_user', owner: { tenant: 'acme', user: 'ann' }, positions: Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`job_${String(i).padStart(22, '0')}`, i])), since: '2026-12-04T10:00:00.000Z' }],
  ['refused: unknown field', { type: 'subscribe', jobId: 'job_a', colour: 'red' }],
  ['refused: bad position', { type: 'subscribe', jobId: 'job_a', after: -1 }],
].map(([name, message]) => [name, JSON.stringify(message)])

const read = (line) => {
  try {
    parseClientMessage(line, limits)
  } catch {
    // a refusal: its cost counts the same
  }
}

const rows = []
for (const [name, line] of messages) {
  const times = []
  const parseOnly = []
  for (let r = 0; r < rounds; r++) {
    times.push(timePerCall(() => read(line)))
    parseOnly.push(timePerCall(() => JSON.parse(line)))
  }
  rows.push({ message: name, bytes: line.length, 'µs per message': (median(times) / 1000).toFixed(2), 'µs of it JSON.parse': (median(parseOnly) / 1000).toFixed(2) })
}
console.table(rows)
