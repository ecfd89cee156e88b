// What the JSON depth/width check costs on the write path: `node bench/json-shape.mjs` (after
// `npm run build`). Every JSON body is scanned once for nesting and width before JSON.parse reads
// it (packages/server/src/core/json-shape.ts). For bodies a producer really sends — one event, a
// worker's batch, a bulk write, a large job input — this prints the time of the scan next to the
// time of JSON.parse on the same text, per body and as a share of the parse. Each row is the median
// of BENCH_ROUNDS (15) rounds of enough repetitions to take ~20 ms.
import { checkJsonShape, defaultJsonShapeLimits } from '../packages/server/dist/core/json-shape.js'
import { median, timePerCall } from './lib/measure.mjs'

const rounds = Number(process.env.BENCH_ROUNDS ?? 15)

const progress = (i) => ({ type: 'progress', stage: 'render', percent: i % 100, message: `frame ${i} of 1000` })
const bodies = [
  ['one progress event', JSON.stringify(progress(1))],
  ['batch of 20 events (worker flush)', JSON.stringify({ events: Array.from({ length: 20 }, (_, i) => progress(i)), lease: 'l'.repeat(32), batch: 7 })],
  ['bulk write, 50 jobs × 10 events', JSON.stringify({ writes: Array.from({ length: 50 }, (_, j) => ({ jobId: `job_${j}`, events: Array.from({ length: 10 }, (_, i) => progress(i)) })) })],
  ['batch of 1,000 chunk events (64 KiB text)', JSON.stringify({ events: Array.from({ length: 1000 }, () => ({ type: 'chunk', text: 'lorem ipsum dolor sit amet, '.repeat(2) + '"quoted" \\ text' })) })],
  ['job input: 1 MiB of nested records', JSON.stringify({ type: 'import', input: { rows: Array.from({ length: 5000 }, (_, i) => ({ id: i, name: `row ${i}`, tags: ['a', 'b', 'c'], meta: { created: '2026-12-04T00:00:00Z', score: i / 7, nested: { deep: [1, 2, { x: 'y' }] } } })) } })],
]


const rows = []
for (const [name, text] of bodies) {
  const scan = []
  const parse = []
  for (let r = 0; r < rounds; r++) {
    scan.push(timePerCall(() => checkJsonShape(text, defaultJsonShapeLimits)))
    parse.push(timePerCall(() => JSON.parse(text)))
  }
  const s = median(scan)
  const p = median(parse)
  rows.push({ body: name, bytes: Buffer.byteLength(text), scanUs: s / 1000, parseUs: p / 1000, share: s / p })
}

const fmt = (n) => (n < 10 ? n.toFixed(2) : n < 100 ? n.toFixed(1) : n.toFixed(0))
console.log(`JSON shape check vs JSON.parse (node ${process.version}, median of ${rounds} rounds)\n`)
console.log('| body | bytes | scan µs | JSON.parse µs | scan / parse |')
console.log('|---|---:|---:|---:|---:|')
for (const row of rows) console.log(`| ${row.body} | ${row.bytes.toLocaleString('en')} | ${fmt(row.scanUs)} | ${fmt(row.parseUs)} | ${(row.share * 100).toFixed(0)} % |`)
