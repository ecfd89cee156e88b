// Idle workers benchmark, run by `npm run bench` or directly: `node bench/idle-workers.mjs`. Needs a
// built tree (npm run build) and Redis at REDIS_URL.
//
// The users' fleets wait more than they work: many workers, each with a claim long-polling for a
// job, and jobs created now and then. For each system and fleet size (BENCH_IDLE_COUNTS, 1,200,1000
// workers of concurrency 1, in one child process: `@jobwire/worker` for Jobwire, BullMQ's Worker
// for the peer), BENCH_IDLE_CREATES (400) jobs are created at BENCH_IDLE_RATE (100) per second from
// this process, open loop, each carrying its send time. Reported: create latency (send → answer),
// create → handler start (the handoff to a waiting worker), the server's CPU per job and Redis's
// (INFO cpu, for the Redis rows and BullMQ) while the jobs are created and handed out, and for
// Jobwire the store claims made per job (from /metrics: each one a transaction on SQLite, a script
// on Redis). BENCH_IDLE_SYSTEMS picks the rows (sqlite,redis,memory,bullmq).
// BENCH_SERVER_DIST may point at another build's server.js (A/B runs); BENCH_SERVER_NODE_ARGS adds
// Node flags to the Jobwire server's process (e.g. `--cpu-prof --cpu-prof-dir=DIR`).
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { availableParallelism, loadavg, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Pool } from 'undici'
import { Redis } from 'ioredis'
import { ask, next, start, stop } from './lib/children.mjs'
import { loadBullmq } from './lib/bullmq.mjs'
import { redisCpuUs, unlinkPrefix } from './lib/redis-keys.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const num = (name, fallback) => (process.env[name] ? Number(process.env[name]) : fallback)
const COUNTS = (process.env.BENCH_IDLE_COUNTS ?? '1,200,1000').split(',').map(Number)
const CREATES = num('BENCH_IDLE_CREATES', 400)
const RATE = num('BENCH_IDLE_RATE', 100)
const SYSTEMS = (process.env.BENCH_IDLE_SYSTEMS ?? 'sqlite,redis,memory,bullmq').split(',').filter(Boolean)
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const API_KEY = 'bench-admin-key-0123456789'
const SERVER_NODE_ARGS = (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean)
const NAMES = { sqlite: 'Jobwire (SQLite)', redis: 'Jobwire (Redis)', memory: 'Jobwire (memory)', bullmq: 'BullMQ' }
const now = () => performance.timeOrigin + performance.now()
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]
}

/** Store claims answered so far, from Jobwire's /metrics. */
async function storeClaims(pool) {
  const response = await pool.request({ path: '/metrics', method: 'GET', headers: { authorization: `Bearer ${API_KEY}` } })
  const text = await response.body.text()
  return Number(text.match(/^jobwire_store_operation_seconds_count\{operation="claim"\} (\d+)/m)?.[1] ?? 0)
}

/** Creates CREATES jobs at RATE/s (open loop) with `create(at)`; returns each one's latency (ms). */
async function createAtRate(create) {
  const latencies = []
  const began = performance.now()
  const pending = []
  for (let i = 0; i < CREATES; i++) {
    const wait = began + (i * 1000) / RATE - performance.now()
    if (wait > 0) await sleep(wait)
    const sent = performance.now()
    pending.push(create(now()).then(() => latencies.push(performance.now() - sent)))
  }
  await Promise.all(pending)
  return latencies
}

async function waitHandled(fleet) {
  for (let tries = 0; tries < 600; tries++) {
    if ((await ask(fleet, { type: 'count' }, 'handled')).handled >= CREATES) return
    await sleep(50)
  }
  throw new Error(`bench: the idle fleet handled fewer than ${CREATES} jobs in 30 s`)
}

async function jobwireRow(store, count, redis) {
  const dataDir = mkdtempSync(join(tmpdir(), 'jobwire-bench-idle-'))
  const prefix = `jwbench-idle-${process.pid}-${Date.now().toString(36)}`
  // The server child reads its Redis key prefix from the environment it is forked with.
  process.env.BENCH_REDIS_PREFIX = prefix
  const server = start(join(here, 'jobwire-server.mjs'), [store, dataDir, API_KEY], SERVER_NODE_ARGS)
  const { url } = await next(server, 'ready')
  const pool = new Pool(url, { connections: 8 })
  const fleet = start(join(here, 'workers/idle-fleet.mjs'), ['jobwire', url, API_KEY, String(count)])
  try {
    await next(fleet, 'ready')
    await sleep(1000)
    const cpuBefore = (await ask(server, { type: 'stats' }, 'stats')).cpu
    const redisBefore = store === 'redis' ? await redisCpuUs(redis) : 0
    const claimsBefore = await storeClaims(pool)
    const creates = await createAtRate(async (at) => {
      const response = await pool.request({
        path: '/v1/jobs',
        method: 'POST',
        headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ type: 'idle-bench', input: { at } }),
      })
      await response.body.text()
      if (response.statusCode !== 201) throw new Error(`bench: create answered ${response.statusCode}`)
    })
    await waitHandled(fleet)
    const cpuAfter = (await ask(server, { type: 'stats' }, 'stats')).cpu
    const redisUs = store === 'redis' ? (await redisCpuUs(redis)) - redisBefore : NaN
    const claims = (await storeClaims(pool)) - claimsBefore
    const { latencies } = await ask(fleet, { type: 'stop' }, 'stopped')
    return {
      creates,
      handoffs: latencies,
      serverUsPerJob: (cpuAfter.user + cpuAfter.system - cpuBefore.user - cpuBefore.system) / CREATES,
      redisUsPerJob: redisUs / CREATES,
      claimsPerJob: claims / CREATES,
    }
  } finally {
    await stop(fleet)
    await pool.close()
    await stop(server)
    rmSync(dataDir, { recursive: true, force: true })
    if (store === 'redis') await unlinkPrefix(REDIS_URL, prefix)
  }
}

async function bullmqRow(count, redis, Queue) {
  const prefix = `jwbench-idle-bq-${process.pid}-${Date.now().toString(36)}`
  const connection = new Redis(REDIS_URL, { maxRetriesPerRequest: null })
  const queue = new Queue('idle-bench', { connection, prefix })
  const fleet = start(join(here, 'workers/idle-fleet.mjs'), ['bullmq', REDIS_URL, prefix, String(count)])
  try {
    await next(fleet, 'ready')
    await sleep(1000)
    const redisBefore = await redisCpuUs(redis)
    const creates = await createAtRate((at) => queue.add('j', { at }, { removeOnComplete: true }))
    await waitHandled(fleet)
    const redisUs = (await redisCpuUs(redis)) - redisBefore
    const { latencies } = await ask(fleet, { type: 'stop' }, 'stopped')
    return { creates, handoffs: latencies, serverUsPerJob: NaN, redisUsPerJob: redisUs / CREATES, claimsPerJob: NaN }
  } finally {
    await stop(fleet)
    await queue.obliterate({ force: true }).catch(() => {})
    await queue.close()
    await connection.quit()
    await unlinkPrefix(REDIS_URL, prefix)
  }
}

export async function runIdleWorkersBench() {
  const { Queue } = SYSTEMS.includes('bullmq') ? await loadBullmq(import.meta.url) : {}
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 })
  await redis.connect().catch(() => {
    throw new Error(`bench: the Redis rows and the BullMQ peer need Redis at ${REDIS_URL}`)
  })
  const rows = []
  const load = []
  try {
    for (const count of COUNTS) {
      for (const system of SYSTEMS) {
        load.push(loadavg()[0])
        const measured = system === 'bullmq' ? await bullmqRow(count, redis, Queue) : await jobwireRow(system, count, redis)
        const row = {
          system: NAMES[system],
          idle: count,
          createP50: percentile(measured.creates, 50),
          createP99: percentile(measured.creates, 99),
          handoffP50: percentile(measured.handoffs, 50),
          handoffP99: percentile(measured.handoffs, 99),
          serverUsPerJob: measured.serverUsPerJob,
          redisUsPerJob: measured.redisUsPerJob,
          claimsPerJob: measured.claimsPerJob,
        }
        rows.push(row)
        console.error(`bench idle-workers: ${JSON.stringify(row)}`)
      }
    }
  } finally {
    redis.disconnect()
  }
  load.push(loadavg()[0])
  return { rows, load }
}

export function idleWorkersTable({ rows, load }) {
  const f = (n, d = 0) => (Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d }) : '—')
  return [
    '',
    `### Idle workers: ${CREATES} jobs created at ${RATE}/s while a fleet waits for them`,
    '',
    '| system | idle workers | create p50 / p99 ms | create → handler p50 / p99 ms | server CPU µs per job | Redis CPU µs per job | store claims per job |',
    '|---|---:|---:|---:|---:|---:|---:|',
    ...rows.map((r) => `| ${r.system} | ${f(r.idle)} | ${f(r.createP50, 1)} / ${f(r.createP99, 1)} | ${f(r.handoffP50, 1)} / ${f(r.handoffP99, 1)} | ${f(r.serverUsPerJob)} | ${f(r.redisUsPerJob)} | ${f(r.claimsPerJob, 1)} |`),
    '',
    `Load average (1 min) during the run: ${load.map((l) => f(l, 2)).join(', ')} (${availableParallelism()} cores).`,
  ].join('\n')
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const results = await runIdleWorkersBench()
  console.log(idleWorkersTable(results))
  mkdirSync(join(here, 'results'), { recursive: true })
  writeFileSync(join(here, 'results', 'idle-workers.json'), JSON.stringify({ date: new Date().toISOString(), creates: CREATES, rate: RATE, ...results }, null, 2))
  process.exit(0)
}
