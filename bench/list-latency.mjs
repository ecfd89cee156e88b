// How long a page of the job list takes: `node bench/list-latency.mjs` (after `npm run build`;
// Redis at REDIS_URL for the Redis row). Part of `npm run bench`.
//
// BENCH_LIST_JOBS (1,000) jobs are created on each store, then `GET /v1/jobs?limit=`
// BENCH_LIST_LIMIT (100) is asked BENCH_LIST_PAGES (100) times, one request at a time, as the
// dashboard asks for its first page; then again once each job on that page has streamed
// BENCH_LIST_TEXT_KB (100) KB of text (a transcription's), which a list shows only the length of.
// The server runs in its own process (bench/shape/targets.mjs). On Redis a page reads each listed
// job's fields and items, as one pipeline. BENCH_SERVER_DIST points at another build's
// packages/server/dist/server.js (A/B runs).
import { postJson } from './lib/measure.mjs'
import { startTarget } from './lib/target.mjs'
import { loadavg } from 'node:os'
import { performance } from 'node:perf_hooks'
import { Pool } from 'undici'

const num = (name, fallback) => (process.env[name] ? Number(process.env[name]) : fallback)
const JOBS = num('BENCH_LIST_JOBS', 1000)
const LIMIT = num('BENCH_LIST_LIMIT', 100)
const PAGES = num('BENCH_LIST_PAGES', 100)
const TEXT_KB = num('BENCH_LIST_TEXT_KB', 100)
const STORES = (process.env.BENCH_LIST_STORES ?? 'memory,sqlite,redis').split(',').filter(Boolean)
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const API_KEY = 'bench-list-admin-key-0123456789'

async function page(pool) {
  const { statusCode, body } = await pool.request({ method: 'GET', path: `/v1/jobs?limit=${LIMIT}`, headers: { authorization: `Bearer ${API_KEY}` } })
  const answer = await body.json()
  if (statusCode !== 200 || answer.jobs.length !== Math.min(LIMIT, JOBS)) throw new Error(`list answered ${statusCode} with ${answer.jobs?.length} jobs`)
}

/** The `p`th percentile of `values` (nearest rank). */
const nth = (values, p) => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.ceil((p / 100) * values.length) - 1)]

const rows = []
for (const store of STORES) {
  const load = loadavg()[0]
  const target = await startTarget(store, API_KEY, REDIS_URL)
  const pool = new Pool(target.url, { connections: 8 })
  for (let i = 0; i < JOBS; i += 50) {
    await Promise.all(Array.from({ length: Math.min(50, JOBS - i) }, (_, j) => postJson(pool, API_KEY, '/v1/jobs', { type: 'listed', dispatch: false, input: { n: i + j } })))
  }
  const pages = async () => {
    for (let i = 0; i < 10; i++) await page(pool) // warm-up
    const ms = []
    for (let i = 0; i < PAGES; i++) {
      const started = performance.now()
      await page(pool)
      ms.push(performance.now() - started)
    }
    return ms
  }
  const bare = await pages()
  const { jobs } = await (await pool.request({ method: 'GET', path: `/v1/jobs?limit=${LIMIT}`, headers: { authorization: `Bearer ${API_KEY}` } })).body.json()
  const kb = 'lorem ipsum dolor sit amet, '.repeat(37).slice(0, 1024)
  for (const job of jobs) {
    for (let k = 0; k < TEXT_KB; k += 50) await postJson(pool, API_KEY, `/v1/jobs/${job.id}/events`, { events: Array.from({ length: Math.min(50, TEXT_KB - k) }, () => ({ type: 'chunk', text: kb })) })
  }
  const texts = await pages()
  await pool.close()
  await target.close()
  rows.push({ store, load, p50: nth(bare, 50), p90: nth(bare, 90), textP50: nth(texts, 50), textP90: nth(texts, 90) })
  process.stderr.write(`bench list-latency: ${store} done\n`)
}

console.log(`\n### A page of ${LIMIT} jobs out of ${JOBS.toLocaleString('en-US')} (\`GET /v1/jobs?limit=${LIMIT}\`, ${PAGES} pages one at a time)\n`)
console.log(`| store | load avg | p50 ms | p90 ms | p50 / p90 ms, each listed job with ${TEXT_KB} KB of text |`)
console.log('|---|---:|---:|---:|---:|')
for (const { store, load, p50, p90, textP50, textP90 } of rows) {
  console.log(`| ${store} | ${load.toFixed(2)} | ${p50.toFixed(2)} | ${p90.toFixed(2)} | ${textP50.toFixed(2)} / ${textP90.toFixed(2)} |`)
}
