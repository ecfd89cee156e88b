// What a job's items cost each later write: `node bench/item-writes.mjs` (after `npm run build`;
// Redis at REDIS_URL for the Redis row). Part of `npm run bench`.
//
// Per-item progress (an export of 1,000 files, a batch of documents) gives a job many items, each
// updated a few times. BENCH_ITEMS_JOBS (20) jobs get BENCH_ITEMS_COUNTS (0, 100, 1,000: the
// default `--max-items-per-job`) items each, written 50 to a request, then BENCH_ITEMS_ROUNDS (50)
// rounds of one write per job (its own keep-alive connection, all jobs at once), each write one
// item update, cycling through the job's items. The server runs in its own process
// (bench/shape/targets.mjs) on each store; the table shows its CPU per write. A store that
// rewrites only the items a write changed shows the same cost whatever the count.
// BENCH_SERVER_DIST points at another build's packages/server/dist/server.js (A/B runs).
import { postJson } from './lib/measure.mjs'
import { serverCpuUs, startTarget } from './lib/target.mjs'
import { loadavg } from 'node:os'
import { Pool } from 'undici'

const num = (name, fallback) => (process.env[name] ? Number(process.env[name]) : fallback)
const JOBS = num('BENCH_ITEMS_JOBS', 20)
const ROUNDS = num('BENCH_ITEMS_ROUNDS', 50)
const COUNTS = (process.env.BENCH_ITEMS_COUNTS ?? '0,100,1000').split(',').map(Number)
const STORES = (process.env.BENCH_ITEMS_STORES ?? 'memory,sqlite,redis').split(',').filter(Boolean)
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const API_KEY = 'bench-items-admin-key-0123456789'

const item = (i, n) => ({ type: 'item', id: `file-${i}`, status: n % 2 === 0 ? 'running' : 'completed', message: `pass ${n}` })

/** Server CPU µs per single-item write to jobs with `count` items. */
async function perWrite(server, pool, count) {
  const jobs = await Promise.all(Array.from({ length: JOBS }, () => postJson(pool, API_KEY, '/v1/jobs', { type: 'export', dispatch: false })))
  const fill = async (job) => {
    for (let i = 0; i < count; i += 50) {
      await postJson(pool, API_KEY, `/v1/jobs/${job.id}/events`, { events: Array.from({ length: Math.min(50, count - i) }, (_, k) => item(i + k, 0)) })
    }
  }
  await Promise.all(jobs.map(fill))
  const round = (n) => Promise.all(jobs.map((job) => postJson(pool, API_KEY, `/v1/jobs/${job.id}/events`, { events: [item(n % Math.max(count, 1), n)] })))
  for (let n = 0; n < 5; n++) await round(n) // warm-up
  const before = await serverCpuUs(server)
  for (let n = 0; n < ROUNDS; n++) await round(n)
  return ((await serverCpuUs(server)) - before) / (ROUNDS * JOBS)
}

const rows = []
for (const store of STORES) {
  const load = loadavg()[0]
  const target = await startTarget(store, API_KEY, REDIS_URL)
  const { server } = target
  const pool = new Pool(target.url, { connections: JOBS })
  // A pass not counted, so that the first count measured does not pay for the server's warm-up;
  // then twice each, alternated: the machine's background load moves between runs.
  await perWrite(server, pool, 100)
  const costs = COUNTS.map(() => [])
  for (let round = 0; round < 2; round++) for (const [i, count] of COUNTS.entries()) costs[i].push(await perWrite(server, pool, count))
  await pool.close()
  await target.close()
  rows.push({ store, load, costs })
  process.stderr.write(`bench item-writes: ${store} done\n`)
}

const us = (values) => values.map((v) => Math.round(v).toLocaleString('en-US')).join(', ')
const counts = COUNTS.map((count) => count.toLocaleString('en-US'))
console.log(`\n### Server CPU per write of one item update, by the job's number of items (${JOBS} jobs × ${ROUNDS} writes, a connection per job, twice each)\n`)
console.log(`| store | load avg | ${counts.map((count) => `${count} items, µs per write`).join(' | ')} | ${counts.at(-1)} items vs ${counts[0]} |`)
console.log(`|---|---:|${COUNTS.map(() => '---:|').join('')}---:|`)
for (const { store, load, costs } of rows) {
  const ratio = Math.min(...costs.at(-1)) / Math.min(...costs[0])
  console.log(`| ${store} | ${load.toFixed(2)} | ${costs.map(us).join(' | ')} | ${ratio.toFixed(2)}× |`)
}
console.log("\n(the server process's CPU while the writes ran, a request at a time per job; the ratio compares the lower of each pair)")
