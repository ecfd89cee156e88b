// Cancel latency (issue 16): how long from `POST /v1/jobs/:id/cancel` to the handler's
// `ctx.signal` aborting, for a quiet job and for jobs that write every 10 ms, and how many signals
// long-polls the worker sends per second meanwhile. Needs a built tree (npm run build); run it
// directly: `node bench/cancel-latency.mjs`. One in-memory server and one worker in this process.
//
//   BENCH_CANCEL_TRIALS   cancels per row (default 100)
//   BENCH_CANCEL_WARMUP   ms a job writes before it is cancelled (default 300)
//   BENCH_CANCEL_STEADY   ms of the steady phase that counts signals requests per second (default 5000)
//   BENCH_SERVER_DIST     another server build to compare against (e.g. main's packages/server/dist/server.js)
import { Pool } from 'undici'
import { createWorker } from '../packages/worker/dist/index.js'
import { startJobwire } from './lib/jobwire.mjs'
import { postJson } from './lib/measure.mjs'

const num = (name, fallback) => (process.env[name] ? Number(process.env[name]) : fallback)
const TRIALS = num('BENCH_CANCEL_TRIALS', 100)
const WARMUP_MS = num('BENCH_CANCEL_WARMUP', 300)
const STEADY_MS = num('BENCH_CANCEL_STEADY', 5000)
const API_KEY = 'bench-admin-key-0123456789'

/** Each row: what the handler does every `everyMs` until its signal aborts, and the worker's send throttle. */
const rows = [
  { name: 'quiet job (writes nothing)', everyMs: null, throttleMs: 100, busyNeighbour: false },
  { name: 'progress + text every 10 ms, worker throttle 10 ms', everyMs: 10, throttleMs: 10, busyNeighbour: false },
  { name: 'progress + text every 10 ms, default throttle (100 ms)', everyMs: 10, throttleMs: 100, busyNeighbour: false },
  // The cancelled job is quiet, so no refused write can tell its worker: only the signals long-poll can.
  { name: 'quiet job; another job of the worker writes every 10 ms', everyMs: null, throttleMs: 10, busyNeighbour: true },
]

/** Reports every `everyMs` until `signal` aborts. */
function writeEvery(ctx, everyMs) {
  let n = 0
  const timer = setInterval(() => {
    n++
    ctx.progress({ percent: n % 100, message: `step ${n}` })
    ctx.chunk(`token ${n} `)
  }, everyMs)
  ctx.signal.addEventListener('abort', () => clearInterval(timer), { once: true })
}

const server = await startJobwire(API_KEY)
const url = server.url ?? `http://127.0.0.1:${server.port}`
const pool = new Pool(url, { connections: 4 })
const results = []

for (const row of rows) {
  let signalsRequests = 0
  let writeRequests = 0
  const countingFetch = (input, init) => {
    const path = new URL(String(input)).pathname
    if (path === '/v1/workers/signals') signalsRequests++
    else if (path.endsWith('/events')) writeRequests++
    return fetch(input, init)
  }
  const type = `bench-cancel-${results.length}`
  /** The trial under way (one job at a time): says when its handler has written a while, and when its signal aborted. */
  let current = null
  const worker = createWorker({
    url,
    apiKey: API_KEY,
    concurrency: 2,
    throttleMs: row.throttleMs,
    pollWaitSeconds: 20,
    fetch: countingFetch,
    onError: () => {},
  })
  worker.handle(type, (_job, ctx) => {
    const entry = current
    return new Promise((resolve) => {
      if (row.everyMs !== null) writeEvery(ctx, row.everyMs)
      ctx.signal.addEventListener('abort', () => {
        entry.abortedAt(performance.now())
        resolve(null)
      }, { once: true })
      setTimeout(() => entry.warm(), WARMUP_MS)
    })
  })
  worker.handle(`${type}-busy`, (_job, ctx) => new Promise((resolve) => {
    writeEvery(ctx, 10)
    ctx.signal.addEventListener('abort', () => resolve(null), { once: true })
  }))
  await worker.start()
  const neighbour = row.busyNeighbour ? await postJson(pool, API_KEY, '/v1/jobs', { type: `${type}-busy` }) : null

  // Steady state: one job of the row runs for STEADY_MS (after a second to settle) with no claim
  // or cancel, so every signals request counted is one the writes caused (or the long-poll's end).
  const steady = await (async () => {
    const entry = { warm: () => {}, abortedAt: () => {} }
    current = entry
    const job = await postJson(pool, API_KEY, '/v1/jobs', { type })
    await new Promise((resolve) => setTimeout(resolve, 1000))
    const before = signalsRequests
    await new Promise((resolve) => setTimeout(resolve, STEADY_MS))
    const perSecond = (signalsRequests - before) / (STEADY_MS / 1000)
    await postJson(pool, API_KEY, `/v1/jobs/${job.id}/cancel`, {})
    return perSecond
  })()

  const latencies = []
  const startedAt = performance.now()
  const writesAtStart = writeRequests
  let signalsAtStart = 0
  for (let trial = 0; trial < TRIALS; trial++) {
    let warm
    let abortedAt
    const entry = { warm: null, abortedAt: null }
    const warmed = new Promise((resolve) => (warm = resolve))
    const aborted = new Promise((resolve) => (abortedAt = resolve))
    Object.assign(entry, { warm, abortedAt })
    current = entry
    const job = await postJson(pool, API_KEY, '/v1/jobs', { type })
    await warmed
    if (trial === 0) signalsAtStart = signalsRequests
    const sentAt = performance.now()
    await postJson(pool, API_KEY, `/v1/jobs/${job.id}/cancel`, { reason: 'bench' })
    latencies.push((await aborted) - sentAt)
  }
  const seconds = (performance.now() - startedAt) / 1000
  if (neighbour !== null) await postJson(pool, API_KEY, `/v1/jobs/${neighbour.id}/cancel`, {})
  await worker.stop({ timeoutMs: 1000 })
  latencies.sort((a, b) => a - b)
  const at = (p) => latencies[Math.min(latencies.length - 1, Math.ceil((p / 100) * latencies.length) - 1)]
  results.push({
    job: row.name,
    trials: TRIALS,
    'p50 ms': at(50).toFixed(1),
    'p95 ms': at(95).toFixed(1),
    'p99 ms': at(99).toFixed(1),
    'max ms': latencies[latencies.length - 1].toFixed(1),
    'signals req/s, steady': steady.toFixed(2),
    // A new job restarts the long-poll, and its cancel answers it: one or two per job are the floor.
    'signals req/job, trials': ((signalsRequests - signalsAtStart) / TRIALS).toFixed(2),
    'writes/s': ((writeRequests - writesAtStart) / seconds).toFixed(0),
  })
}

await pool.close()
await server.close()
console.log(`\ncancel → handler signal (${TRIALS} cancels per row, each after ${WARMUP_MS} ms of writing; server ${process.env.BENCH_SERVER_DIST ?? 'this tree'})`)
console.table(results)
