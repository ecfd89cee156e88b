// Workers benchmark (issues 3 and 13), run by `npm run bench` (BENCH_ONLY=workers runs it alone) or
// directly: `node bench/workers.mjs`. Needs a built tree (npm run build) and Redis at REDIS_URL.
//
//  1. claim → complete throughput of trivial jobs with 4 and 16 concurrent workers (one worker
//     process, that concurrency): Jobwire on each store (SQLite: every claim and completion
//     fsynced; SQLite with --sqlite-sync normal; Redis; memory) vs BullMQ on the same Redis, run
//     twice around Jobwire's rows (the ratio is against the better BullMQ run). A Jobwire worker
//     claims its free slots per request; with `prefetch` (rows per BENCH_WORKER_PREFETCH, default
//     0 and 256) it also claims that many jobs ahead of a free slot. The Python SDK's worker runs
//     the same rows on BENCH_WORKER_PYTHON_STORES (sqlite,redis), in sdks/python/.venv's Python
//     (or PYTHON); BENCH_WORKER_PYTHON=0 leaves it out, and without it the rows are skipped, said.
//     Rows on Redis (Jobwire's Redis store, BullMQ) also show Redis's own CPU per job (INFO cpu
//     over the timed phase): the ceiling one shared Redis sets for a fleet of workers and nodes.
//  2. worker → subscriber: a worker reports at an offered rate for BENCH_WORKER_SECONDS; one
//     subscriber measures items/s and send→receive latency. Jobwire: ctx.chunk() (lossless,
//     ordered, durable, replayable; the outbox batches many chunks into few events) read over SSE.
//     BullMQ: job.updateProgress() read by a QueueEvents 'progress' listener (not durable, not
//     replayable). Every chunk or progress call carries its send time, so each is counted.
// BENCH_WORKER_STORES picks the stores (sqlite,sqlite-normal,redis,memory), BENCH_WORKER_CONCURRENCY the rows
// (4,16), BENCH_WORKER_PARTS the phases (throughput,stream); BENCH_WORKER_BULLMQ=0 leaves BullMQ
// out (A/B runs of Jobwire builds). BENCH_SERVER_DIST and BENCH_WORKER_DIST may point at another
// build's packages/server/dist/server.js and packages/worker/dist/index.js (A/B experiments).
// BENCH_PROFILE=dir writes CPU profiles of the throughput phase there, the Jobwire server's (from
// the worker's start to its last job) and the worker's (node --cpu-prof, its whole life);
// summarize with bench/profile-summary.mjs; with BENCH_PROFILE_HEAP=1 the server's is a sampling
// heap profile instead (.heapprofile: what the phase allocates, freed objects included).
// BENCH_WORKER_CALLS=1 prints, per job of each throughput row, the store calls the server made (by
// operation, from its /metrics) and, on Redis, the commands Redis ran (INFO commandstats; a script's
// own commands are counted too): where the calls per job go.
// BENCH_SERVER_NODE_ARGS: Node options for the Jobwire server only (e.g.
// `--max-semi-space-size=64`), space-separated.
import { fork, spawn, spawnSync } from 'node:child_process'
import { loadBullmq } from './lib/bullmq.mjs'
import { redisCommandCalls, redisCpuUs, unlinkPrefix } from './lib/redis-keys.mjs'
import { existsSync, mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { availableParallelism, loadavg, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { request } from 'undici'
import { Redis } from 'ioredis'

const here = dirname(fileURLToPath(import.meta.url))
const num = (name, fallback) => (process.env[name] ? Number(process.env[name]) : fallback)
const JOBS = num('BENCH_WORKER_JOBS', 10000)
const SECONDS = num('BENCH_WORKER_SECONDS', 5)
/** Offered loads of the worker → subscriber phase, the same for both systems (BullMQ saturates near 60k/s here). */
const RATES = (process.env.BENCH_WORKER_RATES ?? '60000,150000').split(',').map(Number)
const STORES = (process.env.BENCH_WORKER_STORES ?? 'sqlite,sqlite-normal,redis,memory').split(',').filter(Boolean)
/**
 * `sqlite-normal` (`--sqlite-sync normal`: no fsync; survives `kill -9`, not a power cut) is the
 * durability BullMQ has on this Redis (no AOF, no snapshots): how much of SQLite's gap is the disk.
 * The stream phase leaves it out (its latency is fsync's alone).
 */
const STORE_NAMES = { sqlite: 'Jobwire (SQLite)', 'sqlite-normal': 'Jobwire (SQLite, --sqlite-sync normal)', redis: 'Jobwire (Redis)', memory: 'Jobwire (memory)' }
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const API_KEY = 'bench-admin-key-0123456789'
const PARTS = (process.env.BENCH_WORKER_PARTS ?? 'throughput,stream').split(',')
const CONCURRENCY = (process.env.BENCH_WORKER_CONCURRENCY ?? '4,16').split(',').map(Number)
const PREFETCH = (process.env.BENCH_WORKER_PREFETCH ?? '0,256').split(',').map(Number)
const BULLMQ = process.env.BENCH_WORKER_BULLMQ !== '0'
const CALLS = process.env.BENCH_WORKER_CALLS === '1'
// The Python SDK's worker on the same jobs (BENCH_WORKER_PYTHON=0 leaves it out), on these stores.
const PYTHON_ROWS = process.env.BENCH_WORKER_PYTHON !== '0'
const PYTHON_STORES = (process.env.BENCH_WORKER_PYTHON_STORES ?? 'sqlite,redis').split(',').filter(Boolean)
const venvPython = join(here, '..', 'sdks', 'python', '.venv', 'bin', 'python')
const PYTHON = process.env.PYTHON ?? (existsSync(venvPython) ? venvPython : 'python3')
const now = () => performance.timeOrigin + performance.now()

/**
 * A child's reports, by type: `deliver` each as it comes; `next(type)` resolves with the oldest not
 * yet taken (or the next to come), and rejects once `exited` resolves first.
 */
function reports(exited) {
  const messages = []
  const waiters = []
  return {
    deliver(message) {
      const i = waiters.findIndex((w) => w.type === message.type)
      if (i >= 0) waiters.splice(i, 1)[0].resolve(message)
      else messages.push(message)
    },
    next(type) {
      const i = messages.findIndex((m) => m.type === type)
      if (i >= 0) return Promise.resolve(messages.splice(i, 1)[0])
      return Promise.race([
        new Promise((resolve) => waiters.push({ type, resolve })),
        exited.then((code) => Promise.reject(new Error(`bench: a worker exited (${code}) before '${type}'`))),
      ])
    },
  }
}

function child(script, args, execArgv = []) {
  const proc = fork(join(here, script), args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv })
  const { deliver, next } = reports(new Promise((resolve) => proc.on('exit', resolve)))
  proc.on('message', deliver)
  return {
    next,
    async stop() {
      proc.send({ type: 'stop' })
      return next('stopped')
    },
  }
}

/**
 * The Python worker (bench/workers/python-worker.py) as a child with `child()`'s interface: its
 * reports come as JSON lines on stdout, and `stop` goes as a line on stdin.
 */
function pythonChild(args) {
  const proc = spawn(PYTHON, [join(here, 'workers', 'python-worker.py'), ...args], { stdio: ['pipe', 'pipe', 'inherit'] })
  const exited = new Promise((resolve) => proc.on('exit', resolve))
  const { deliver, next } = reports(exited)
  let buffered = ''
  proc.stdout.on('data', (data) => {
    buffered += data
    for (let end = buffered.indexOf('\n'); end !== -1; end = buffered.indexOf('\n')) {
      deliver(JSON.parse(buffered.slice(0, end)))
      buffered = buffered.slice(end + 1)
    }
  })
  return {
    next,
    async stop() {
      proc.stdin.end('stop\n')
      const stopped = await next('stopped')
      await exited
      return stopped
    },
  }
}

/** Why the Python rows cannot run here (no interpreter with the SDK importable), or null. */
function pythonMissing() {
  if (!PYTHON_ROWS) return 'BENCH_WORKER_PYTHON=0'
  const probe = spawnSync(PYTHON, ['-c', 'import jobwire'], { encoding: 'utf8' })
  if (probe.error !== undefined || probe.status !== 0) return `${PYTHON} cannot import jobwire (run npm run test:python once to make sdks/python/.venv, or set PYTHON)`
  return null
}

/** A worker child's CPU time (µs) between two of its reports: its work, without its start-up. */
function cpuSince(from, to) {
  return to.user + to.system - from.user - from.system
}

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]
}

async function api(url, method, path, body) {
  const response = await request(`${url}${path}`, {
    method,
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  const text = await response.body.text()
  if (response.statusCode >= 400) throw new Error(`${method} ${path}: ${response.statusCode} ${text}`)
  return text === '' ? null : JSON.parse(text)
}

async function startJobwire(store, dataDir, prefix) {
  const profile = process.env.BENCH_PROFILE
  const server = fork(join(here, 'jobwire-server.mjs'), [store, dataDir, API_KEY], {
    execArgv: [...process.execArgv, ...(process.env.BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean)],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    // The stream phase sends millions of characters of text to one job.
    env: {
      ...process.env,
      BENCH_REDIS_PREFIX: prefix,
      BENCH_SERVER_CONFIG: JSON.stringify({ maxTextLength: 256 * 1024 * 1024, createLimit: 1_000_000, ...(process.env.BENCH_SERVER_CONFIG ? JSON.parse(process.env.BENCH_SERVER_CONFIG) : {}) }),
    },
  })
  const ready = await new Promise((resolve) => server.on('message', (m) => m.type === 'ready' && resolve(m)))
  /** The server's CPU time so far, in µs. */
  const cpu = () =>
    new Promise((resolve) => {
      const onStats = (m) => {
        if (m.type !== 'stats') return
        server.off('message', onStats)
        resolve(m.cpu.user + m.cpu.system)
      }
      server.on('message', onStats)
      server.send({ type: 'stats' })
    })
  /** With BENCH_PROFILE, profiles the server from now until the returned function is called. */
  const profiling = async (name) => {
    if (!profile) return async () => {}
    // The server writes its profile first: the folder may not exist yet.
    mkdirSync(profile, { recursive: true })
    const ask = (message, answer) =>
      new Promise((resolve) => {
        const on = (m) => m.type === answer && (server.off('message', on), resolve())
        server.on('message', on)
        server.send(message)
      })
    await ask({ type: 'profile-start' }, 'profile-started')
    return () => ask({ type: 'profile-stop', file: join(profile, `${store}-${name}-${process.pid}-${Date.now()}.cpuprofile`) }, 'profile-stopped')
  }
  return { url: ready.url, cpu, profiling, stop: () => new Promise((resolve) => { server.on('exit', resolve); server.send({ type: 'stop' }) }) }
}

/** Jobwire on `store` for the length of `run`, then its data (file or Redis keys) removed. */
async function withJobwire(store, run) {
  const dataDir = mkdtempSync(join(tmpdir(), 'jobwire-bench-workers-'))
  const prefix = `jwbench-w-${process.pid}-${Date.now().toString(36)}`
  const jobwire = await startJobwire(store, dataDir, prefix)
  try {
    return await run(jobwire.url, jobwire.cpu, jobwire.profiling)
  } finally {
    await jobwire.stop()
    rmSync(dataDir, { recursive: true, force: true })
    if (store === 'redis') await unlinkPrefix(REDIS_URL, prefix)
  }
}

async function jobwireThroughput(url, serverCpu, profiling, concurrency, prefetch, python = false, store = '') {
  for (let i = 0; i < JOBS; i += 100) {
    await Promise.all(Array.from({ length: Math.min(100, JOBS - i) }, () => api(url, 'POST', '/v1/jobs', { type: 'bench-trivial' })))
  }
  const stopProfile = await profiling(`w${concurrency}`)
  const cpuBefore = await serverCpu()
  // Redis's own CPU per job: the ceiling one Redis shared by a fleet sets (one core: 10⁶ ÷ µs per job jobs/s).
  const admin = store === 'redis' ? new Redis(REDIS_URL, { maxRetriesPerRequest: 1 }) : null
  const redisBefore = admin === null ? null : await redisCpuUs(admin)
  const callsBefore = CALLS ? await callCounts(url, admin) : null
  // The worker says when it has handled `JOBS` jobs and holds none: every completion was answered.
  // Timed from its 'loaded' (its modules loaded, before it connects) to 'all-done', both stamped
  // in the worker: starting a runtime and loading modules is not throughput.
  const profile = process.env.BENCH_PROFILE
  const execArgv = profile ? ['--cpu-prof', `--cpu-prof-dir=${profile}`, `--cpu-prof-name=worker-${concurrency}-${process.pid}-${Date.now()}.cpuprofile`] : []
  const worker = python
    ? pythonChild([url, API_KEY, String(concurrency), String(prefetch), String(JOBS)])
    : child('workers/jobwire-worker.mjs', [url, API_KEY, 'trivial', String(concurrency), '0', '0', String(JOBS), String(prefetch)], execArgv)
  const loaded = await worker.next('loaded')
  const done = await worker.next('all-done')
  const seconds = (done.at - loaded.at) / 1000
  const serverUs = (await serverCpu()) - cpuBefore
  const redisUs = admin === null ? null : (await redisCpuUs(admin)) - redisBefore
  if (callsBefore !== null) printCallsPerJob(store, concurrency, callsBefore, await callCounts(url, admin))
  admin?.disconnect()
  await stopProfile()
  await worker.stop()
  const left = await api(url, 'GET', '/v1/jobs?type=bench-trivial&status=completed&limit=1')
  if (left.jobs.length === 0) throw new Error('bench: no job completed')
  const workerUs = cpuSince(loaded.cpu, done.cpu)
  return { jobsPerSec: JOBS / seconds, seconds, cpuUsPerJob: (serverUs + workerUs) / JOBS, serverUsPerJob: serverUs / JOBS, workerUsPerJob: workerUs / JOBS, redisUsPerJob: redisUs === null ? null : redisUs / JOBS }
}

/** The server's store calls by operation (its /metrics), and on Redis the commands Redis ran. */
async function callCounts(url, admin) {
  const response = await request(`${url}/metrics`, { headers: { authorization: `Bearer ${API_KEY}` } })
  const text = await response.body.text()
  const counts = {}
  for (const [, operation, count] of text.matchAll(/^jobwire_store_operation_seconds_count\{operation="([^"]+)"\} (\d+)/gm)) counts[`store ${operation}`] = Number(count)
  if (admin !== null) for (const [name, count] of Object.entries(await redisCommandCalls(admin))) counts[`redis ${name}`] = count
  return counts
}

function printCallsPerJob(store, concurrency, before, after) {
  const rows = Object.entries(after)
    .map(([name, count]) => [name, (count - (before[name] ?? 0)) / JOBS])
    .filter(([, perJob]) => perJob >= 0.001)
    .sort((a, b) => b[1] - a[1])
  console.error(`bench workers: calls per job, ${store}, ${concurrency} workers: ${rows.map(([name, perJob]) => `${name} ${perJob.toFixed(3)}`).join(', ')}`)
}

async function bullmqThroughput(prefix, concurrency) {
  const connection = new Redis(REDIS_URL, { maxRetriesPerRequest: null })
  const queue = new Queue('bench-trivial', { connection, prefix })
  for (let i = 0; i < JOBS; i += 500) {
    await queue.addBulk(Array.from({ length: Math.min(500, JOBS - i) }, (_, k) => ({ name: 't', data: { i: i + k }, opts: { removeOnComplete: true } })))
  }
  // Timed as Jobwire's worker is: from 'loaded' to 'all-done', both stamped in the worker.
  const redisBefore = await redisCpuUs(connection)
  const worker = child('workers/bullmq-worker.mjs', [REDIS_URL, prefix, 'trivial', String(concurrency), '0', String(JOBS), '0'])
  const loaded = await worker.next('loaded')
  const done = await worker.next('all-done')
  const seconds = (done.at - loaded.at) / 1000
  const redisUs = (await redisCpuUs(connection)) - redisBefore
  await worker.stop()
  await queue.obliterate({ force: true })
  await queue.close()
  await connection.quit()
  // Redis's own CPU is a column of its own, for both systems (redisCpuUs).
  return { jobsPerSec: JOBS / seconds, seconds, cpuUsPerJob: cpuSince(loaded.cpu, done.cpu) / JOBS, redisUsPerJob: redisUs / JOBS }
}

async function jobwireStream(url, rate) {
  const job = await api(url, 'POST', '/v1/jobs', { type: 'bench-stream' })
  const latencies = []
  let received = 0
  let first = 0
  let last = 0
  const response = await request(`${url}/v1/jobs/${job.id}/stream`, { headers: { authorization: `Bearer ${API_KEY}` }, bodyTimeout: 0 })
  const worker = child('workers/jobwire-worker.mjs', [url, API_KEY, 'stream', '1', String(SECONDS), String(rate), '0', '0'])
  let buffer = ''
  let partial = ''
  reading: for await (const data of response.body) {
    const at = now()
    buffer += data.toString()
    let end
    while ((end = buffer.indexOf('\n\n')) !== -1) {
      const frame = buffer.slice(0, end)
      buffer = buffer.slice(end + 2)
      if (!frame.includes('event: chunk') && !frame.includes('event: completed')) continue
      if (frame.includes('event: completed') || frame.includes('event: failed')) break reading
      const event = JSON.parse(frame.slice(frame.indexOf('data: ') + 6))
      const items = (partial + event.data.text).split('|')
      partial = items.pop() ?? ''
      for (const item of items) {
        latencies.push(at - Number(item))
        received++
      }
      if (first === 0) first = at
      last = at
    }
  }
  const { sent } = await worker.stop()
  latencies.sort((a, b) => a - b)
  return { itemsPerSec: received / ((last - first) / 1000), received, sent, p50: percentile(latencies, 50), p99: percentile(latencies, 99) }
}

async function bullmqStream(prefix, rate) {
  const connection = new Redis(REDIS_URL, { maxRetriesPerRequest: null })
  const queue = new Queue('bench-stream', { connection, prefix })
  const events = new QueueEvents('bench-stream', { connection: new Redis(REDIS_URL, { maxRetriesPerRequest: null }), prefix })
  await events.waitUntilReady()
  const latencies = []
  let received = 0
  let first = 0
  let last = 0
  const completed = new Promise((resolve) => events.on('completed', resolve))
  events.on('progress', ({ data }) => {
    const at = now()
    latencies.push(at - Number(data))
    received++
    if (first === 0) first = at
    last = at
  })
  await queue.add('s', {}, { removeOnComplete: true })
  const worker = child('workers/bullmq-worker.mjs', [REDIS_URL, prefix, 'stream', '1', String(SECONDS), '1', String(rate)])
  await completed
  await new Promise((resolve) => setTimeout(resolve, 200))
  const { sent } = await worker.stop()
  await events.close()
  await queue.obliterate({ force: true })
  await queue.close()
  await connection.quit()
  latencies.sort((a, b) => a - b)
  return { itemsPerSec: received / ((last - first) / 1000), received, sent, p50: percentile(latencies, 50), p99: percentile(latencies, 99) }
}

let Queue
let QueueEvents

export async function runWorkersBench() {
  ;({ Queue, QueueEvents } = await loadBullmq(import.meta.url))
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 })
  await redis.connect().catch(() => {
    throw new Error(`bench: the BullMQ peer and the Redis store need Redis at ${REDIS_URL}`)
  })
  await redis.quit()
  const prefix = `jwbench-${process.pid}`
  const results = { throughput: [], stream: [], load: [] }
  const load = () => results.load.push(loadavg()[0])
  // Each row as it comes (the table is printed at the end).
  const row = (list, r) => {
    list.push(r)
    console.error(`bench workers: ${JSON.stringify(r)}`)
  }
  const pythonSkipped = PARTS.includes('throughput') ? pythonMissing() : 'no throughput phase'
  if (pythonSkipped !== null && PARTS.includes('throughput')) console.error(`bench workers: the Python worker's rows are SKIPPED: ${pythonSkipped}`)
  for (const concurrency of PARTS.includes('throughput') ? CONCURRENCY : []) {
    load()
    // BullMQ before and after Jobwire's rows, so a drift in the machine's load shows.
    if (BULLMQ) row(results.throughput, { system: 'BullMQ', concurrency, ...(await bullmqThroughput(`${prefix}-t${concurrency}a`, concurrency)) })
    for (const prefetch of PREFETCH) {
      for (const store of STORES) {
        const system = prefetch === 0 ? STORE_NAMES[store] : `${STORE_NAMES[store].slice(0, -1)}, prefetch ${prefetch})`
        row(results.throughput, { system, store, concurrency, prefetch, ...(await withJobwire(store, (url, cpu, profiling) => jobwireThroughput(url, cpu, profiling, concurrency, prefetch, false, store))) })
      }
    }
    // The same jobs handled by the Python SDK's worker (its own process, like the Node worker's).
    for (const prefetch of pythonSkipped === null ? PREFETCH : []) {
      for (const store of PYTHON_STORES) {
        const system = `${STORE_NAMES[store].slice(0, -1)}, Python worker${prefetch === 0 ? '' : `, prefetch ${prefetch}`})`
        row(results.throughput, { system, store, concurrency, prefetch, ...(await withJobwire(store, (url, cpu, profiling) => jobwireThroughput(url, cpu, profiling, concurrency, prefetch, true, store))) })
      }
    }
    if (BULLMQ) row(results.throughput, { system: 'BullMQ', concurrency, ...(await bullmqThroughput(`${prefix}-t${concurrency}b`, concurrency)) })
    load()
  }
  for (const rate of PARTS.includes('stream') ? RATES : []) {
    load()
    if (BULLMQ) row(results.stream, { system: 'BullMQ updateProgress → QueueEvents', offered: rate, ...(await bullmqStream(`${prefix}-s${rate}`, rate)) })
    for (const store of STORES.filter((one) => one !== 'sqlite-normal' || process.env.BENCH_WORKER_STORES !== undefined)) {
      row(results.stream, { system: `${STORE_NAMES[store]} chunks → SSE`, store, offered: rate, ...(await withJobwire(store, (url) => jobwireStream(url, rate))) })
    }
  }
  load()
  return results
}

export function workersTable(results) {
  const f = (n, d = 0) => (Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d }) : '—')
  const lines = []
  if (results.throughput.length > 0) {
    lines.push(
      '',
      '### Workers: claim → complete, trivial jobs',
      '',
      '| system | workers | jobs/s | vs BullMQ (better of its two runs) | CPU µs per job (worker + server processes, while it works) | Redis CPU µs per job |',
      '|---|---:|---:|---:|---:|---:|',
    )
    for (const concurrency of CONCURRENCY) {
      const rows = results.throughput.filter((r) => r.concurrency === concurrency)
      const best = Math.max(...rows.filter((r) => r.system === 'BullMQ').map((r) => r.jobsPerSec))
      // Without BullMQ's rows (BENCH_WORKER_BULLMQ=0) there is no ratio to give.
      const ratio = (r) => (r.system === 'BullMQ' || !Number.isFinite(best) ? '' : `${f(r.jobsPerSec / best, 2)}×`)
      for (const r of rows) lines.push(`| ${r.system} | ${concurrency} | ${f(r.jobsPerSec)} | ${ratio(r)} | ${f(r.cpuUsPerJob)} | ${r.redisUsPerJob == null ? '' : f(r.redisUsPerJob)} |`)
    }
  }
  if (results.stream.length > 0) {
    lines.push('', '### Worker → subscriber: reports per second and latency', '', '| path | offered/s | delivered/s | p50 ms | p99 ms | delivered / sent | items/s vs BullMQ |', '|---|---:|---:|---:|---:|---:|---:|')
    for (const r of results.stream) {
      const bq = results.stream.find((b) => b.offered === r.offered && b.system.startsWith('BullMQ'))
      const ratio = r === bq || bq === undefined ? '' : `${f(r.itemsPerSec / bq.itemsPerSec, 2)}×`
      lines.push(`| ${r.system} | ${f(r.offered)} | ${f(r.itemsPerSec)} | ${f(r.p50, 1)} | ${f(r.p99, 1)} | ${f(r.received)} / ${f(r.sent)} | ${ratio} |`)
    }
  }
  lines.push('', `Load average (1 min) during the run: ${results.load.map((l) => f(l, 2)).join(', ')} (${availableParallelism()} cores).`)
  return lines.join('\n')
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const results = await runWorkersBench()
  console.log(workersTable(results))
  mkdirSync(join(here, 'results'), { recursive: true })
  writeFileSync(join(here, 'results', 'workers.json'), JSON.stringify({ date: new Date().toISOString(), jobs: JOBS, seconds: SECONDS, ...results }, null, 2))
  // Done: a peer's lingering connection (BullMQ's, say) must not keep `npm run bench` from going on.
  process.exit(0)
}
