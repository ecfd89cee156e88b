// What a large job input costs each later write: `node bench/large-input.mjs` (after `npm run
// build`; Redis at REDIS_URL for the Redis row). Part of `npm run bench`.
//
// A job is created with no input and with a BENCH_INPUT_BYTES (500,000) document — an AI
// analysis's source text, say — and then takes BENCH_INPUT_WRITES (300) progress ticks, one request
// at a time. The server runs in its own process (bench/shape/targets.mjs) on each store; the table
// shows its CPU per write for each input. The input never changes after the job is created, so a
// store that keeps it out of the state it rewrites on every write shows the same cost for both.
// BENCH_SERVER_DIST points at another build's packages/server/dist/server.js (A/B runs).
import { postJson } from './lib/measure.mjs'
import { serverCpuUs, startTarget } from './lib/target.mjs'
import { loadavg } from 'node:os'
import { Pool } from 'undici'

const num = (name, fallback) => (process.env[name] ? Number(process.env[name]) : fallback)
const BYTES = num('BENCH_INPUT_BYTES', 500_000)
const WRITES = num('BENCH_INPUT_WRITES', 300)
const STORES = (process.env.BENCH_INPUT_STORES ?? 'memory,sqlite,redis').split(',').filter(Boolean)
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const API_KEY = 'bench-input-admin-key-0123456789'

/** Server CPU µs per progress write to a job created with `input`. */
async function perWrite(server, pool, input) {
  const job = await postJson(pool, API_KEY, '/v1/jobs', { type: 'analyze', dispatch: false, input })
  const write = (i) => postJson(pool, API_KEY, `/v1/jobs/${job.id}/events`, { type: 'progress', percent: i % 100 })
  for (let i = 0; i < 20; i++) await write(i) // warm-up
  const before = await serverCpuUs(server)
  for (let i = 0; i < WRITES; i++) await write(i)
  return ((await serverCpuUs(server)) - before) / WRITES
}

const rows = []
for (const store of STORES) {
  const load = loadavg()[0]
  const target = await startTarget(store, API_KEY, REDIS_URL)
  const { server } = target
  const pool = new Pool(target.url, { connections: 1 })
  const document = { title: 'source', body: 'lorem ipsum dolor sit amet '.repeat(Math.ceil(BYTES / 27)).slice(0, BYTES) }
  // Alternated, twice each: the machine's background load moves between runs.
  const none = [await perWrite(server, pool, null)]
  const large = [await perWrite(server, pool, document)]
  none.push(await perWrite(server, pool, null))
  large.push(await perWrite(server, pool, document))
  await pool.close()
  await target.close()
  rows.push({ store, load, none, large })
  process.stderr.write(`bench large-input: ${store} done\n`)
}

const us = (values) => values.map((v) => Math.round(v).toLocaleString('en-US')).join(', ')
console.log(`\n### Server CPU per progress write, by the job's input (${WRITES} writes, one at a time, twice each)\n`)
console.log(`| store | load avg | no input, µs per write | ${(BYTES / 1000).toLocaleString('en-US')} KB input, µs per write | ratio |`)
console.log('|---|---:|---:|---:|---:|')
for (const { store, load, none, large } of rows) {
  const ratio = Math.min(...large) / Math.min(...none)
  console.log(`| ${store} | ${load.toFixed(2)} | ${us(none)} | ${us(large)} | ${ratio.toFixed(2)}× |`)
}
console.log('\n(the server process\'s CPU while the writes ran, sequential requests on one keep-alive connection; the ratio compares the lower of each pair)')
