// The users' shape: `node bench/shape/run.mjs` (after `npm run build`; Redis at REDIS_URL for the
// Redis rows and the BullMQ and Socket.IO + adapter peers). Part of `npm run bench`.
//
// Many jobs, each written by its own producer in small batches, each watched by one person (and a
// variant with three): BENCH_SHAPE_JOBS (1,000) jobs; producers in BENCH_SHAPE_PRODUCERS (2)
// processes give every job its own keep-alive connection, one request at a time, 1–3 events per
// request (mean 2: a token delta, a progress tick, an item — seeded), requests due evenly spread;
// watchers in BENCH_SHAPE_WATCHER_PROCESSES (2) processes, over SSE or WebSocket — raw (`sse`,
// `ws`: the bench reads the frames) or through the SDK an app uses (`client`: one
// `@jobwire/client` per process, a `watchJob` per watcher, every event folded into the job's
// state; the table shows the watcher processes' CPU). Side by side:
//   relay            the limit: a bare node:http relay (no auth, no validation, no store; each
//                    event encoded once, everything a watcher gets in a tick written at once)
//   jobwire-memory | jobwire-sqlite | jobwire-redis   Jobwire on each store (one node)
//   jobwire-sqlite-normal   SQLite with --sqlite-sync normal: no fsync (survives kill -9, not a
//                    power cut; what a Redis without persistence gives the Redis rows' peers)
//   jobwire-redis2   two Jobwire nodes on one Redis: producers write through node A, every
//                    watcher is on node B (each event crosses Redis pub/sub)
//   socketio         Socket.IO 4 rooms, fed per job over HTTP
//   socketio-redis   Socket.IO 4 + @socket.io/redis-adapter, producers emitting through
//                    @socket.io/redis-emitter (nothing stored)
//   bullmq           BullMQ 6 job.updateProgress() per event → one QueueEvents reader per watcher
//                    process (no browser transport: what BullMQ gives an app to build one on)
// For each row:
//  1. light load: 2,000 events/s (BENCH_SHAPE_LIGHT), one event per request (each job every 0.5 s):
//     publish→deliver p50/p99 over BENCH_SHAPE_SECONDS (5), once the machine has settled (at most
//     0.3 cores busy over a second, or 20 s waited: bench/lib/quiet.mjs), after a 3 s pass that
//     opens every producer's connection (not measured) and 2 s of warm-up;
//  2. capacity: the highest offered rate that reaches every watcher (≥ 98 % delivered in the window,
//     nothing skipped) at p99 < 50 ms, on a ladder from BENCH_SHAPE_LADDER_START (1,000) events/s up
//     by 1.5× (a step missed twice in a row ends the climb), then two halvings; 3 s steps.
// Latency is from the moment each request was due (stamped into its events by the producer
// process) to its arrival at the watcher process. Output: Markdown tables on stdout (with the load
// average before each row) and bench/results/shape-latest.json.
import { ask, next, start, stop } from '../lib/children.mjs'
import { percentile, postJson } from '../lib/measure.mjs'
import { loadBullmq } from '../lib/bullmq.mjs'
import { unlinkPrefix } from '../lib/redis-keys.mjs'
import { waitForQuiet } from '../lib/quiet.mjs'
import { randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { performance } from 'node:perf_hooks'
import { Pool } from 'undici'
import { Redis } from 'ioredis'

const here = dirname(fileURLToPath(import.meta.url))
const env = (name, fallback) => (process.env[name] === undefined || process.env[name] === '' ? fallback : Number(process.env[name]))
const JOBS = env('BENCH_SHAPE_JOBS', 1000)
const PRODUCERS = env('BENCH_SHAPE_PRODUCERS', 2)
const WATCHER_PROCESSES = env('BENCH_SHAPE_WATCHER_PROCESSES', 2)
const SECONDS = env('BENCH_SHAPE_SECONDS', 5)
const LIGHT = env('BENCH_SHAPE_LIGHT', 2000)
const LADDER_START = env('BENCH_SHAPE_LADDER_START', 1000)
const LADDER_STEP = env('BENCH_SHAPE_LADDER_STEP', 1.5)
const LADDER_MAX = env('BENCH_SHAPE_LADDER_MAX', 200_000)
const STEP_SECONDS = env('BENCH_SHAPE_STEP_SECONDS', 3)
/** Fleet: BENCH_SHAPE_FLEET stores (memory,sqlite,redis; '' skips), BENCH_SHAPE_FLEET_WORKERS processes × BENCH_SHAPE_FLEET_JOBS jobs in all, a chunk every BENCH_SHAPE_FLEET_CADENCE ms each. */
const FLEET = (process.env.BENCH_SHAPE_FLEET ?? 'memory,sqlite,redis').split(',').filter(Boolean)
const FLEET_WORKERS = env('BENCH_SHAPE_FLEET_WORKERS', 4)
const FLEET_JOBS = env('BENCH_SHAPE_FLEET_JOBS', 1000)
const FLEET_CADENCE = env('BENCH_SHAPE_FLEET_CADENCE', 100)
/** Jobs of the fleet cancelled during its window (BENCH_SHAPE_FLEET_CANCELS), each given CANCEL_WAIT_MS after it to reach its handler. */
const FLEET_CANCELS = env('BENCH_SHAPE_FLEET_CANCELS', 20)
const CANCEL_WAIT_MS = 20_000
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const API_KEY = 'bench-shape-admin-key-0123456789'
const DEFAULT_ROWS =
  'relay:sse:1,relay:ws:1,jobwire-memory:sse:1,jobwire-memory:ws:1,jobwire-sqlite:sse:1,jobwire-sqlite:ws:1,jobwire-sqlite:client:1,jobwire-sqlite-normal:sse:1,jobwire-redis:sse:1,jobwire-redis:ws:1,jobwire-redis2:ws:1,' +
  'socketio:ws:1,socketio-redis:ws:1,bullmq:-:1,relay:ws:3,jobwire-memory:ws:3,jobwire-redis:ws:3,socketio:ws:3'
/** BENCH_SHAPE_ROWS: kind:transport:watchers,… (see DEFAULT_ROWS); empty runs the fleet only. */
const ROWS = (process.env.BENCH_SHAPE_ROWS ?? DEFAULT_ROWS).split(',').filter(Boolean).map((row) => {
  const [kind, transport, watchers] = row.split(':')
  return { kind, transport, watchers: Number(watchers ?? 1) }
})
/** BENCH_CPU_PROF=1: the servers run under --cpu-prof (bench/results/profiles/; node bench/profile-summary.mjs FILE). */
const CPU_PROF = process.env.BENCH_CPU_PROF === '1'
/** BENCH_SERVER_NODE_ARGS: Node options for the servers under test only (e.g. `--max-semi-space-size=32`), space-separated. */
const SERVER_NODE_ARGS = (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean)
const NAMES = {
  relay: 'bare relay (the limit)',
  'jobwire-memory': 'Jobwire, memory',
  'jobwire-sqlite': 'Jobwire, SQLite',
  'jobwire-sqlite-normal': 'Jobwire, SQLite, --sqlite-sync normal (no fsync)',
  'jobwire-redis': 'Jobwire, Redis',
  'jobwire-redis2': 'Jobwire, Redis, two nodes (write on A, watch on B)',
  socketio: 'Socket.IO 4',
  'socketio-redis': 'Socket.IO 4 + redis-adapter + emitter',
  bullmq: 'BullMQ updateProgress → QueueEvents',
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const usesRedis = (kind) => kind.startsWith('jobwire-redis') || kind === 'socketio-redis' || kind === 'bullmq'

/** Watcher kind in bench/ws/subscribers.mjs for a row. */
function watcherKind({ kind, transport }) {
  if (kind === 'bullmq') return 'bullmq'
  if (kind.startsWith('socketio')) return 'socketio'
  if (transport === 'sse') return 'jobwire-sse' // the relay serves the same SSE path
  if (transport === 'client') return 'jobwire-client'
  return kind === 'relay' ? 'bare-corked' : 'jobwire'
}

/** Splits `items` into `parts` nearly equal slices. */
const split = (items, parts) => Array.from({ length: parts }, (_, p) => items.filter((_, i) => i % parts === p))

async function deploy(row) {
  const prefix = `jwbench:${randomBytes(4).toString('hex')}`
  const dataDir = mkdtempSync(join(tmpdir(), 'jobwire-shape-'))
  let server = null
  let server2 = null
  let jobs
  let url
  let watcherUrl
  if (row.kind === 'bullmq') {
    const { Queue } = await loadBullmq(import.meta.url)
    const connection = new Redis(REDIS_URL, { maxRetriesPerRequest: null })
    const queue = new Queue('shape', { connection, prefix })
    jobs = (await queue.addBulk(Array.from({ length: JOBS }, (_, i) => ({ name: 'shape', data: { i } })))).map((job) => job.id)
    await queue.close()
    connection.disconnect()
    url = 'shape'
  } else {
    const profile = [
      ...(CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${join(here, '../results/profiles')}`, `--cpu-prof-name=shape-${row.kind}-${row.transport}-${Date.now()}.cpuprofile`] : []),
      ...SERVER_NODE_ARGS,
    ]
    const kind = row.kind === 'jobwire-redis2' ? 'jobwire-redis' : row.kind
    server = start(join(here, 'targets.mjs'), [kind, API_KEY, REDIS_URL, prefix, dataDir], profile)
    ;({ url } = await next(server, 'ready'))
    watcherUrl = url
    if (row.kind === 'jobwire-redis2') {
      // Node B: the same Redis and prefix; the watchers connect here, the producers to node A.
      server2 = start(join(here, 'targets.mjs'), [kind, API_KEY, REDIS_URL, prefix, dataDir])
      ;({ url: watcherUrl } = await next(server2, 'ready'))
    }
    if (row.kind.startsWith('jobwire')) {
      const pool = new Pool(url, { connections: 8 })
      jobs = []
      for (let i = 0; i < JOBS; i += 50) {
        const batch = await Promise.all(Array.from({ length: Math.min(50, JOBS - i) }, () => postJson(pool, API_KEY, '/v1/jobs', { type: 'shape', dispatch: false })))
        jobs.push(...batch.map((job) => job.id))
      }
      await pool.close()
    } else {
      jobs = Array.from({ length: JOBS }, (_, i) => `job_shape${String(i).padStart(17, '0')}`)
    }
  }
  // Watcher process p watches its share of jobs, `watchers` times each.
  if (row.kind === 'bullmq') watcherUrl = REDIS_URL
  const watcherKey = row.kind === 'bullmq' ? `shape|${prefix}` : API_KEY
  const watchers = []
  for (const share of split(jobs, WATCHER_PROCESSES)) {
    const list = share.flatMap((job) => Array(row.watchers).fill(job))
    watchers.push(start(join(here, '../ws/subscribers.mjs'), [watcherKind(row), watcherUrl, watcherKey, String(list.length), list.join(',')]))
  }
  await Promise.all(watchers.map((w) => next(w, 'ready')))
  const producers = split(jobs, PRODUCERS).map((share) => start(join(here, 'producers.mjs'), [row.kind, url, API_KEY, REDIS_URL, prefix, share.join(',')]))
  await Promise.all(producers.map((p) => next(p, 'ready')))
  return { ...row, prefix, dataDir, server, server2, jobs, watcherProcs: watchers, producers }
}

async function undeploy(target) {
  for (const child of [...target.producers, ...target.watcherProcs]) await stop(child)
  if (target.server !== null) await stop(target.server)
  if (target.server2 !== null) await stop(target.server2)
  rmSync(target.dataDir, { recursive: true, force: true })
  if (usesRedis(target.kind)) await unlinkPrefix(REDIS_URL, target.prefix)
}

/** Total deliveries so far, over every watcher process. */
async function delivered(target) {
  const marks = await Promise.all(target.watcherProcs.map((w) => ask(w, { type: 'mark', name: 'start' }, 'marked')))
  return marks.reduce((sum, m) => sum + m.total, 0)
}

/** One measurement at `eventsPerSecond` offered (over all producers) for `seconds` after `warmup`. */
async function measure(target, eventsPerSecond, batch, seconds, warmup, seed) {
  const { producers, watcherProcs: watchers, server, server2 } = target
  const deliveredBefore = await delivered(target)
  for (const [p, producer] of producers.entries()) producer.send({ type: 'run', eventsPerSecond: eventsPerSecond / producers.length, batch, seed: seed * 100 + p })
  await sleep(warmup * 1000)
  const cpu0 = server ? await cpuOf(server, server2) : null
  const starts = await Promise.all(watchers.map((w) => ask(w, { type: 'mark', name: 'start' }, 'marked')))
  const t0 = performance.now()
  await sleep(seconds * 1000)
  const ends = await Promise.all(watchers.map((w) => ask(w, { type: 'mark', name: 'end' }, 'marked')))
  const elapsed = (performance.now() - t0) / 1000
  const cpu1 = server ? await cpuOf(server, server2) : null
  const halted = await Promise.all(producers.map((p) => ask(p, { type: 'halt' }, 'halted')))
  // Let the queues drain before the next measurement: until the watchers' count stops moving.
  let deliveredAfter = await delivered(target)
  for (let last = -1; deliveredAfter !== last; ) {
    await sleep(300)
    last = deliveredAfter
    deliveredAfter = await delivered(target)
  }
  // Every event sent in this run, to every watcher of its job, once the queues drained.
  const lost = halted.reduce((sum, h) => sum + h.events, 0) * target.watchers - (deliveredAfter - deliveredBefore)
  const merged = new Map()
  for (const end of ends) for (const [bucket, n] of end.histogram) merged.set(bucket, (merged.get(bucket) ?? 0) + n)
  const histogram = [...merged.entries()].sort((a, b) => a[0] - b[0])
  const deliveries = ends.reduce((sum, end, i) => sum + end.total - starts[i].total, 0)
  const error = halted.find((h) => h.error !== null)?.error ?? null
  return {
    offered: eventsPerSecond,
    deliveriesPerSecond: deliveries / elapsed,
    eventsPerSecond: deliveries / elapsed / target.watchers,
    p50Ms: percentile(histogram, ends[0].bucketUs, 50),
    p99Ms: percentile(histogram, ends[0].bucketUs, 99),
    skipped: halted.reduce((sum, h) => sum + h.skipped, 0),
    lost,
    failed: halted.reduce((sum, h) => sum + h.failed, 0),
    error,
    serverCores: cpu0 ? (cpu1.cpu.user + cpu1.cpu.system - cpu0.cpu.user - cpu0.cpu.system) / 1e6 / elapsed : NaN,
    watcherCores: ends.reduce((sum, end, i) => sum + end.cpu.user + end.cpu.system - starts[i].cpu.user - starts[i].cpu.system, 0) / 1e6 / elapsed,
    loopP99Ms: cpu1 ? cpu1.loopP99Ms : NaN,
    loopMaxMs: cpu1 ? cpu1.loopMaxMs : NaN,
  }
}

/** CPU used so far by the server (both nodes of a two-node row). */
async function cpuOf(server, server2) {
  const stats = await Promise.all([server, server2].filter(Boolean).map((s) => ask(s, { type: 'stats' }, 'stats')))
  return { cpu: { user: stats.reduce((sum, s) => sum + s.cpu.user, 0), system: stats.reduce((sum, s) => sum + s.cpu.system, 0) }, loopP99Ms: Math.max(...stats.map((s) => s.loopP99Ms)), loopMaxMs: Math.max(...stats.map((s) => s.loopMaxMs)) }
}

const fmt = (n, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : 'n/a')
const int = (n) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : 'n/a')
const TRANSPORTS = { ws: 'WebSocket', sse: 'SSE', client: 'WebSocket, watched through @jobwire/client' }
const label = (r) => `${NAMES[r.kind] ?? r.kind}${r.transport === '-' ? '' : `, ${TRANSPORTS[r.transport]}`}`
const passes = (m) => m.eventsPerSecond >= 0.98 * m.offered && m.skipped === 0 && m.failed === 0 && m.lost <= 0 && m.p99Ms < 50

const results = []
for (const row of ROWS) {
  const load = loadavg()[0]
  process.stderr.write(`bench shape: ${label(row)}, ${row.watchers} watcher(s) per job (load average ${fmt(load, 2)})…\n`)
  const target = await deploy(row)
  let seed = 1
  // The light load is measured on a settled machine: what the row before left behind (its
  // processes exiting, its store's data deleted, thousands of sockets closing) and this row's
  // deployment run down first, so every row's light load starts alike.
  const quiet = await waitForQuiet()
  // A first pass opens every producer's connection and warms the code up; the light load is measured after it.
  await measure(target, LIGHT, 'one', 2, 1, seed++)
  const light = await measure(target, LIGHT, 'one', SECONDS, 2, seed++)
  process.stderr.write(`  light ${int(LIGHT)}/s: p50 ${fmt(light.p50Ms)} ms, p99 ${fmt(light.p99Ms)} ms, delivered ${int(light.eventsPerSecond)} events/s, lost ${light.lost}, watchers ${fmt(light.watcherCores, 2)} cores, server loop delay p99 ${fmt(light.loopP99Ms)} ms / max ${fmt(light.loopMaxMs)} ms (after ${fmt(quiet.waitedMs / 1000)} s for the machine to settle to ${fmt(quiet.cores, 2)} cores)${light.error ? `, error: ${light.error}` : ''}\n`)
  let kept = null
  let failedAt = null
  target.lost = Math.max(0, light.lost)
  const tryRate = async (rate) => {
    for (let attempt = 1; attempt <= 2; attempt++) {
      const step = await measure(target, rate, 'small', STEP_SECONDS, 1, seed++)
      target.lost += Math.max(0, step.lost)
      process.stderr.write(`  ${int(rate)}/s${attempt > 1 ? ' (again)' : ''}: delivered ${int(step.eventsPerSecond)} events/s, p50 ${fmt(step.p50Ms)} ms, p99 ${fmt(step.p99Ms)} ms, skipped ${step.skipped}, lost ${step.lost}, server ${fmt(step.serverCores, 2)} cores, watchers ${fmt(step.watcherCores, 2)} cores${step.error ? `, error: ${step.error}` : ''}\n`)
      if (passes(step)) {
        kept = step
        return true
      }
    }
    return false
  }
  for (let rate = LADDER_START; rate <= LADDER_MAX; rate *= LADDER_STEP) {
    if (!(await tryRate(rate))) {
      failedAt = rate
      break
    }
  }
  for (let i = 0; i < 2 && kept !== null && failedAt !== null; i++) {
    const middle = Math.sqrt(kept.offered * failedAt)
    if (!(await tryRate(middle))) failedAt = middle
  }
  results.push({ ...row, load, light, capacity: kept, lost: target.lost })
  await undeploy(target)
}

/**
 * The fleet: FLEET_WORKERS processes of @jobwire/worker share FLEET_JOBS dispatched jobs (each runs
 * its share at once) and stream a chunk and a progress tick per job every FLEET_CADENCE ms; one
 * WebSocket watcher per job. Latency: from each chunk's due time in the worker to the watcher,
 * through the worker's outbox (which sends a job's reports at most every 100 ms, by default).
 */
async function fleet(store) {
  const row = { kind: `jobwire-${store}`, transport: 'ws', watchers: 1 }
  const load = loadavg()[0]
  process.stderr.write(`bench shape: fleet on ${store} (load average ${fmt(load, 2)})…\n`)
  const prefix = `jwbench:${randomBytes(4).toString('hex')}`
  const dataDir = mkdtempSync(join(tmpdir(), 'jobwire-shape-'))
  const profile = [
    ...(CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${join(here, '../results/profiles')}`, `--cpu-prof-name=shape-fleet-${store}-${Date.now()}.cpuprofile`] : []),
    ...SERVER_NODE_ARGS,
  ]
  const server = start(join(here, 'targets.mjs'), [row.kind, API_KEY, REDIS_URL, prefix, dataDir], profile)
  const { url } = await next(server, 'ready')
  const pool = new Pool(url, { connections: 8 })
  const jobs = []
  // Every FLEET_JOBS / FLEET_CANCELS-th job is quiet (reports nothing), and is cancelled during the window.
  const quietEvery = Math.max(1, Math.floor(FLEET_JOBS / FLEET_CANCELS))
  const quiet = []
  for (let i = 0; i < FLEET_JOBS; i += 50) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(50, FLEET_JOBS - i) }, (_, j) => postJson(pool, API_KEY, '/v1/jobs', { type: 'fleet', input: { quiet: FLEET_CANCELS > 0 && (i + j) % quietEvery === 0 && quiet.length < FLEET_CANCELS } })),
    )
    for (const job of batch) {
      jobs.push(job.id)
      if (job.input.quiet === true) quiet.push(job.id)
    }
  }
  await pool.close()
  const watchers = split(jobs, WATCHER_PROCESSES).map((share) => start(join(here, '../ws/subscribers.mjs'), ['jobwire', url, API_KEY, String(share.length), share.join(',')]))
  await Promise.all(watchers.map((w) => next(w, 'ready')))
  const per = Math.ceil(FLEET_JOBS / FLEET_WORKERS)
  const workers = Array.from({ length: FLEET_WORKERS }, (_, i) => start(join(here, 'fleet-worker.mjs'), [url, API_KEY, String(per), String(FLEET_CADENCE), String(i + 1)]))
  await Promise.all(workers.map((w) => next(w, 'ready')))
  await sleep(3000) // every job claimed and streaming
  const cpu0 = await ask(server, { type: 'stats' }, 'stats')
  const starts = await Promise.all(watchers.map((w) => ask(w, { type: 'mark', name: 'start' }, 'marked')))
  const t0 = performance.now()
  // Meanwhile the quiet jobs are cancelled, spread over the window: how long a cancel takes to reach
  // its handler (`ctx.signal`) through the signals long-poll alone (a quiet job has no write to be
  // refused) while its worker runs its whole share and the server is busy.
  const aborted = new Map()
  for (const w of workers) w.on('message', (message) => message.type === 'aborted' && aborted.set(message.jobId, message))
  const cancelPool = new Pool(url, { connections: 1 })
  const cancelled = new Map()
  const cancelling = (async () => {
    for (const id of quiet) {
      await sleep((SECONDS * 1000) / (quiet.length + 1))
      cancelled.set(id, performance.timeOrigin + performance.now())
      await postJson(cancelPool, API_KEY, `/v1/jobs/${id}/cancel`, {})
    }
  })()
  await sleep(SECONDS * 1000)
  await cancelling
  const ends = await Promise.all(watchers.map((w) => ask(w, { type: 'mark', name: 'end' }, 'marked')))
  // A cancel not heard by its handler within CANCEL_WAIT_MS counts as that long (and is reported as missed).
  const cancelDeadline = performance.now() + CANCEL_WAIT_MS
  while (aborted.size < cancelled.size && performance.now() < cancelDeadline) await sleep(50)
  await cancelPool.close()
  const cancelMs = [...cancelled].map(([id, at]) => (aborted.has(id) ? aborted.get(id).at - at : CANCEL_WAIT_MS)).sort((a, b) => a - b)
  const elapsed = (performance.now() - t0) / 1000
  const cpu1 = await ask(server, { type: 'stats' }, 'stats')
  await Promise.all(workers.map((w) => ask(w, { type: 'halt' }, 'halted')))
  for (const child of [...workers, ...watchers]) await stop(child)
  await stop(server)
  rmSync(dataDir, { recursive: true, force: true })
  if (store === 'redis') await unlinkPrefix(REDIS_URL, prefix)
  const merged = new Map()
  for (const end of ends) for (const [bucket, n] of end.histogram) merged.set(bucket, (merged.get(bucket) ?? 0) + n)
  const histogram = [...merged.entries()].sort((a, b) => a[0] - b[0])
  return {
    store,
    load,
    offered: ((FLEET_JOBS - quiet.length) * 1000) / FLEET_CADENCE,
    eventsPerSecond: ends.reduce((sum, end, i) => sum + end.total - starts[i].total, 0) / elapsed,
    p50Ms: percentile(histogram, ends[0].bucketUs, 50),
    p99Ms: percentile(histogram, ends[0].bucketUs, 99),
    serverCores: (cpu1.cpu.user + cpu1.cpu.system - cpu0.cpu.user - cpu0.cpu.system) / 1e6 / elapsed,
    cancels: cancelMs.length,
    cancelsMissed: [...cancelled.keys()].filter((id) => !aborted.has(id) || aborted.get(id).reason !== 'cancelled').length,
    cancelP50Ms: cancelMs[Math.floor((cancelMs.length - 1) / 2)] ?? NaN,
    cancelMaxMs: cancelMs.at(-1) ?? NaN,
  }
}
const fleetResults = []
for (const store of FLEET) fleetResults.push(await fleet(store))

const relayOf = (r) => results.find((x) => x.kind === 'relay' && x.watchers === r.watchers && (x.transport === r.transport || (r.transport !== 'sse' && x.transport === 'ws')))
const socketioOf = (r) => results.find((x) => x.kind === (usesRedis(r.kind) ? 'socketio-redis' : 'socketio') && x.watchers === r.watchers)
console.log(`\n### The users' shape: ${int(JOBS)} jobs, a producer connection per job (1–3 events per request), watchers per job as shown\n`)
console.log('| server | watchers/job | load avg | light load p50 / p99 ms | server µs per event, light | capacity events/s (p99 < 50 ms) | deliveries/s there | p50 / p99 ms there | server cores | cores of the watcher processes | lost (all steps) | vs relay | vs Socket.IO |')
console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
for (const r of results) {
  const capacity = r.capacity?.offered ?? 0
  const relay = relayOf(r)?.capacity?.offered
  const sio = socketioOf(r)?.capacity?.offered
  console.log(
    `| ${label(r)} | ${r.watchers} | ${fmt(r.load, 2)} | ${fmt(r.light.p50Ms)} / ${fmt(r.light.p99Ms)} | ${fmt((r.light.serverCores * 1e6) / r.light.eventsPerSecond, 0)} | ${int(capacity)} | ${int(r.capacity?.deliveriesPerSecond)} | ${fmt(r.capacity?.p50Ms)} / ${fmt(r.capacity?.p99Ms)} | ${fmt(r.capacity?.serverCores, 2)} | ${fmt(r.capacity?.watcherCores, 2)} | ${int(r.lost)} | ${relay ? `${fmt(capacity / relay, 2)}×` : 'n/a'} | ${sio ? `${fmt(capacity / sio, 2)}×` : 'n/a'} |`,
  )
}
console.log(`\n(light load: ${int(LIGHT)} events/s, one event per request; capacity: highest offered rate on the ladder delivered ≥ 98 % with nothing skipped at p99 < 50 ms. "vs relay" compares with the relay on the same transport; "vs Socket.IO" with Socket.IO + redis-adapter for the Redis rows and BullMQ, plain Socket.IO for the rest.)`)
if (fleetResults.length > 0) {
  console.log(`\n### Fleet: ${FLEET_WORKERS} processes of @jobwire/worker running ${int(FLEET_JOBS)} jobs at once, a token delta and a progress tick per job every ${FLEET_CADENCE} ms, one WebSocket watcher per job\n`)
  console.log('| store | load avg | chunks offered/s | delivered/s | p50 ms | p99 ms | server cores | cancel → handler p50 / max ms | cancels missed |')
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|')
  for (const f of fleetResults) console.log(`| ${f.store} | ${fmt(f.load, 2)} | ${int(f.offered)} | ${int(f.eventsPerSecond)} | ${fmt(f.p50Ms)} | ${fmt(f.p99Ms)} | ${fmt(f.serverCores, 2)} | ${fmt(f.cancelP50Ms)} / ${fmt(f.cancelMaxMs)} | ${int(f.cancelsMissed)} of ${int(f.cancels)} |`)
  console.log(`\n(Latency includes the worker outbox's batching: a job's reports leave at most every 100 ms, by default. Cancels: ${FLEET_CANCELS} of the jobs report nothing (a long call) and are cancelled during the window; from the cancel request to the handler's \`ctx.signal\` in the worker process, which only the signals long-poll can tell; one not heard within ${CANCEL_WAIT_MS / 1000} s counts as that long, and is missed.)`)
}
mkdirSync(join(here, '../results'), { recursive: true })
writeFileSync(join(here, '../results/shape-latest.json'), JSON.stringify({ at: new Date().toISOString(), settings: { JOBS, PRODUCERS, WATCHER_PROCESSES, SECONDS, LIGHT, LADDER_START, LADDER_STEP, STEP_SECONDS, FLEET_WORKERS, FLEET_JOBS, FLEET_CADENCE }, results, fleet: fleetResults }, null, 2))
process.exit(0)
