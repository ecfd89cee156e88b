// A Jobwire node's instructions per job, per store: `node bench/node-instructions.mjs` (after `npm
// run build`; valgrind on the PATH, else skipped with a message; the Redis row needs Redis at
// REDIS_URL). Part of `npm run bench`.
//
// A node's CPU time per job (bench/workers.mjs) swings by 10–20 % between runs on a shared 2-core
// machine, even between alternated runs of one build: a change worth 3 % is invisible there. This
// counts instructions instead, as bench/redis-instructions.mjs does for Redis: the node
// (bench/jobwire-server.mjs, the whole server: HTTP, auth, validation, core, store, metrics) runs
// under valgrind's callgrind with V8's `--predictable` (no background threads, a fixed collection
// schedule), and this process sends it a fixed sequence of requests, phase by phase, each counted
// alone after a warm-up of the same requests:
//   create  BENCH_NINSTR_JOBS (2,000) jobs, `POST /v1/jobs`, one at a time;
//   claim   those jobs claimed 256 at a time, each completed: what @jobwire/worker with prefetch
//           sends (each claim carries the completions of the jobs of the claim before, as `done`);
//   write   BENCH_NINSTR_LIVE (100) running jobs × 10 rounds (after 20 uncounted), each job its own `POST
//           /v1/jobs/:id/events` with a token delta and a progress tick (the users' shape), one
//           request at a time (see createJobs);
//   watched the same writes to other jobs, each with one SSE watcher from its first write on,
//           each write counted until its watcher has it (a write and its delivery: the users'
//           shape); 20 rounds uncounted, 10 counted.
// Just before create and claim are counted, as many jobs go through the same requests, uncounted: what
// V8 re-optimizes after the phase before lands there, not in the count (see measure()).
// A last row (BENCH_NINSTR_RELAY=0: none) counts bench/shape's bare relay fed the same watched
// writes: node:http, no auth, no validation, no store, each event encoded once. It is the limit the
// users'-shape bench measures capacity against, so the ratio of a node's count to it is that
// bench's capacity ratio in fixed terms (where both are bound by their CPU).
// Before the phases the node is counted idle for BENCH_NINSTR_IDLE_MS (10 s): its background work
// per second (timers, idle-time collections). That work keeps its pace in wall time while valgrind
// slows the phases ~100 times, so the node's periodic intervals are stretched by as much (STRETCH
// below): with them, two runs of one build agreed within 1 % in every phase (docs/benchmarks.md),
// where they had moved by up to a quarter. Compare builds within one run, with the same settings
// (BENCH_SERVER_DIST).
// Each store per BENCH_NINSTR_STORES (memory,sqlite,redis; SQLite with its default fsync, Redis at
// REDIS_URL under a key prefix of its own, removed after). BENCH_SERVER_DIST points at another
// build's packages/server/dist/server.js for A/B runs. BENCH_NINSTR_KEEP=dir keeps callgrind's files
// (`callgrind_annotate` reads them; JIT-compiled JavaScript shows as unnamed addresses, so this
// counts, and CPU profiles say where).
import { spawn } from 'node:child_process'
import { get as httpGet } from 'node:http'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Agent, request } from 'undici'
import { Redis } from 'ioredis'
import { unlinkPrefix } from './lib/redis-keys.mjs'
import { dumpCount, missingTool, zeroCount } from './lib/callgrind.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const num = (name, fallback) => (process.env[name] ? Number(process.env[name]) : fallback)
const JOBS = num('BENCH_NINSTR_JOBS', 2000)
const LIVE = num('BENCH_NINSTR_LIVE', 100)
const ROUNDS = 10
const CLAIM = 256
/** Jobs created (and claimed) just before the create and claim phases are counted: see measure(). */
const PREWARM = JOBS
/** Leases outlast the phases (valgrind runs the node ~100 times slower): no lease lapses, no job is taken back. */
const LEASE_MS = 600_000
/** How long the node's background work is counted, idle, before the phases. */
const IDLE_MS = num('BENCH_NINSTR_IDLE_MS', 10_000)
const STORES = (process.env.BENCH_NINSTR_STORES ?? 'memory,sqlite,redis').split(',').filter(Boolean)
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const API_KEY = 'bench-admin-key-0123456789'
const KEEP = process.env.BENCH_NINSTR_KEEP
/** BENCH_NINSTR_RELAY=0: no bare-relay row. */
const RELAY = process.env.BENCH_NINSTR_RELAY !== '0'
/**
 * The node's periodic work (the lease and deadline sweeps every second, a heartbeat slice every
 * 20 ms while streams are open, the expiry sweep) keeps its pace in wall time while valgrind runs the
 * node ~100 times slower, so per request it counted ~100 times its native share, and more the
 * slower valgrind ran: the counts followed the machine's load. Its intervals are stretched by as
 * much (BENCH_NINSTR_STRETCH, 100; 1 leaves them as they are), so a phase counts its requests.
 */
const STRETCH = num('BENCH_NINSTR_STRETCH', 100)
const STRETCHED = { leaseSweepInterval: 1_000 * STRETCH, deadlineSweepInterval: 1_000 * STRETCH, heartbeat: 15_000 * STRETCH, sweepInterval: 30_000 * STRETCH }
/** BENCH_NINSTR_NODE_FLAGS: more flags for the counted processes' node (`--trace-gc`: when the collector ran). */
const NODE_FLAGS = (process.env.BENCH_NINSTR_NODE_FLAGS ?? '').split(' ').filter(Boolean)

const missing = missingTool()
if (missing !== null) {
  console.log(`bench node-instructions: SKIPPED: ${missing} is not on the PATH (Debian: apt-get install valgrind)`)
  process.exit(0)
}

// One connection, kept alive: the same socket, phase after phase.
const agent = new Agent({ connections: 1, pipelining: 1 })

/** A JSON request to the node; throws on an error status. */
async function call(url, method, path, body) {
  const response = await request(`${url}${path}`, {
    method,
    dispatcher: agent,
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    // valgrind runs the node ~100 times slower.
    headersTimeout: 600_000,
    bodyTimeout: 600_000,
  })
  const text = await response.body.text()
  if (response.statusCode >= 400) throw new Error(`bench node-instructions: ${method} ${path}: ${response.statusCode} ${text}`)
  return text === '' ? null : JSON.parse(text)
}

/** The node for `store` under callgrind; `count(name)` is its instruction count since `zero()`. */
function startNode(store, dir, prefix) {
  const config = { ...STRETCHED, ...(process.env.BENCH_SERVER_CONFIG ? JSON.parse(process.env.BENCH_SERVER_CONFIG) : {}) }
  return startCounted([join(here, 'jobwire-server.mjs'), store, join(dir, `data-${store}`), API_KEY], dir, { BENCH_REDIS_PREFIX: prefix, BENCH_SERVER_CONFIG: JSON.stringify(config) })
}

/** The bare relay of the users'-shape bench (bench/shape/targets.mjs), without its loop-delay timer. */
function startRelay(dir) {
  return startCounted([join(here, 'shape', 'targets.mjs'), 'relay', API_KEY, '', '', dir], dir, { BENCH_LOOP_MONITOR: '0' })
}

/** A server script (`args`) under callgrind, answering {type:'ready', url} and {type:'stop'} over IPC. */
async function startCounted(args, dir, env) {
  const node = spawn('valgrind', ['--tool=callgrind', `--callgrind-out-file=${join(dir, 'cg.%p')}`, '--smc-check=all-non-file', process.execPath, '--predictable', ...NODE_FLAGS, ...args], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, ...env },
  })
  const exited = new Promise((resolve) => node.on('exit', resolve))
  const ready = await Promise.race([new Promise((resolve) => node.on('message', (m) => m.type === 'ready' && resolve(m))), exited.then((code) => Promise.reject(new Error(`bench node-instructions: the node exited (${code})`)))])
  return {
    url: ready.url,
    zero: () => zeroCount(node.pid),
    count: (name) => dumpCount(node.pid, dir, name),
    async stop() {
      node.send({ type: 'stop' })
      await exited
    },
  }
}

// Every phase sends one request at a time: with several in flight, how many a node reads per turn
// of its event loop (and so what it commits and answers together) follows the machine's timing,
// and the count moved by a tenth from run to run.
async function createJobs(url, type, count) {
  for (let i = 0; i < count; i++) await call(url, 'POST', '/v1/jobs', { type })
}

/** Claims `count` jobs of `type` 256 at a time, completing each: its completion rides in the next claim. */
async function claimAndComplete(url, type, count) {
  let done = []
  for (let claimedSoFar = 0; claimedSoFar < count; ) {
    const answer = await call(url, 'POST', '/v1/workers/claim', { types: [type], max: Math.min(CLAIM, count - claimedSoFar), wait: 0, worker: 'bench', leaseMs: LEASE_MS, ...(done.length === 0 ? {} : { done }) })
    if (answer.claims.length === 0) throw new Error('bench node-instructions: the queue ran dry')
    claimedSoFar += answer.claims.length
    done = answer.claims.map(({ job, lease }) => ({ jobId: job.id, lease: lease.token, batch: 1, events: [{ type: 'completed', result: { ok: true } }] }))
  }
  await call(url, 'POST', '/v1/events', { writes: done })
}

/**
 * Rounds of writes, each job its own request in turn. With `watchers` (job id → SSE watcher), each
 * write waits until its job's watcher has its progress event: one write and its delivery at a time.
 */
async function writeRounds(url, claims, from, rounds, watchers) {
  for (let round = from; round < from + rounds; round++) {
    for (const { job, lease } of claims) {
      const delivered = watchers?.get(job.id).waitFor(`"percent":${round},`)
      await call(url, 'POST', `/v1/jobs/${job.id}/events`, {
        lease: lease.token,
        batch: round + 1,
        events: [
          { type: 'chunk', text: ` token ${round}` },
          { type: 'progress', percent: round, message: 'working' },
        ],
      })
      await delivered
    }
  }
}

/** One SSE stream per job (`GET /v1/jobs/:id/stream`, node:http, a connection each), each able to wait until a text arrives on it. */
async function openWatchers(url, claims) {
  const watchers = new Map()
  const { hostname, port } = new URL(url)
  for (const { job } of claims) {
    const response = await new Promise((resolve, reject) => {
      const get = httpGet({ hostname, port, path: `/v1/jobs/${job.id}/stream`, agent: false, headers: { authorization: `Bearer ${API_KEY}` } }, resolve)
      get.on('error', reject)
    })
    if (response.statusCode !== 200) throw new Error(`bench node-instructions: stream of ${job.id}: ${response.statusCode}`)
    let seen = ''
    let waiting = null
    response.setEncoding('utf8')
    response.on('data', (text) => {
      seen = (seen + text).slice(-4096)
      if (waiting !== null && seen.includes(waiting.needle)) {
        seen = ''
        const { resolve } = waiting
        waiting = null
        resolve()
      }
    })
    response.on('error', () => {})
    watchers.set(job.id, {
      waitFor: (needle) => new Promise((resolve) => (waiting = { needle, resolve })),
      close: () => response.destroy(),
    })
  }
  return watchers
}

/**
 * A phase's instructions per unit, and its wall time under valgrind. `prewarm`, if any, runs just
 * before the count starts: V8 re-optimizes what the phase before left deoptimized (the answer of a
 * claim and of a create take the same functions down other paths), and under `--predictable` it
 * compiles on the node's one thread, so that work landed in whichever phase came next (20–30
 * functions compiled during a create phase, millions of instructions each).
 */
async function measure(node, name, units, work, prewarm) {
  await prewarm?.()
  node.zero()
  const started = performance.now()
  await work()
  const seconds = (performance.now() - started) / 1000
  return { perUnit: node.count(name) / units, seconds }
}

/** The node's instructions per second while it has nothing to do: its background work. */
async function idleRate(node, name) {
  node.zero()
  const started = performance.now()
  await new Promise((resolve) => setTimeout(resolve, IDLE_MS))
  return node.count(name) / ((performance.now() - started) / 1000)
}

async function runStore(store, dir) {
  const prefix = `jwbench-ninstr-${process.pid}`
  const node = await startNode(store, dir, prefix)
  try {
    const url = node.url
    // Warm-up: the same requests as each phase, twice, so that V8 has compiled the paths they take.
    for (let i = 0; i < 2; i++) {
      await createJobs(url, 'bench-warm', JOBS)
      await claimAndComplete(url, 'bench-warm', JOBS)
    }
    const idle = await idleRate(node, `${store}-idle`)
    const create = await measure(node, `${store}-create`, JOBS, () => createJobs(url, 'bench-instr', JOBS), () => createJobs(url, 'bench-prewarm', PREWARM))
    const claim = await measure(
      node,
      `${store}-claim`,
      JOBS,
      () => claimAndComplete(url, 'bench-instr', JOBS),
      async () => {
        await createJobs(url, 'bench-prewarm', PREWARM)
        await claimAndComplete(url, 'bench-prewarm', 2 * PREWARM)
      },
    )
    const live = await runningJobs(url, 'bench-live')
    await writeRounds(url, live, 0, 2 * ROUNDS)
    const write = await measure(node, `${store}-write`, LIVE * ROUNDS, () => writeRounds(url, live, 2 * ROUNDS, ROUNDS))
    // Jobs of their own, watched from their first write on (as the relay's rooms are).
    const watched = await watchedWrites(node, store, await runningJobs(url, 'bench-watched'))
    return { store, idle, create, claim, write, watched }
  } finally {
    await node.stop()
    if (store === 'redis') await unlinkPrefix(REDIS_URL, prefix)
  }
}

/** LIVE new jobs of `type`, claimed in one request: their claims (job and lease). */
async function runningJobs(url, type) {
  await createJobs(url, type, LIVE)
  const { claims } = await call(url, 'POST', '/v1/workers/claim', { types: [type], max: LIVE, wait: 0, worker: 'bench', leaseMs: LEASE_MS })
  if (claims.length !== LIVE) throw new Error(`bench node-instructions: ${claims.length} ${type} jobs claimed, ${LIVE} wanted`)
  return claims
}

/** The watched-write phase: 2×ROUNDS rounds as a warm-up, then ROUNDS counted, each write delivered to its job's one watcher. */
async function watchedWrites(node, name, claims) {
  const watchers = await openWatchers(node.url, claims)
  try {
    await writeRounds(node.url, claims, 0, 2 * ROUNDS, watchers)
    return await measure(node, `${name}-watched`, claims.length * ROUNDS, () => writeRounds(node.url, claims, 2 * ROUNDS, ROUNDS, watchers))
  } finally {
    for (const watcher of watchers.values()) watcher.close()
  }
}

/**
 * The bare relay fed the same watched writes (it ignores lease and batch): the limit the users'
 * shape is measured against (bench/shape). Its idle rate is counted after.
 */
async function runRelay(dir) {
  const relay = await startRelay(dir)
  try {
    const claims = Array.from({ length: LIVE }, (_, i) => ({ job: { id: `relay-${i}` }, lease: { token: 'none' } }))
    const watched = await watchedWrites(relay, 'relay', claims)
    const idle = await idleRate(relay, 'relay-idle')
    return { store: 'relay', idle, watched }
  } finally {
    await relay.stop()
  }
}

async function redisMissing() {
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null })
  redis.on('error', () => undefined)
  try {
    await redis.connect()
    await redis.quit()
    return null
  } catch {
    return `no Redis at ${REDIS_URL}`
  }
}

const dir = KEEP ?? mkdtempSync(join(tmpdir(), 'jobwire-bench-ninstr-'))
if (KEEP !== undefined) mkdirSync(KEEP, { recursive: true })
const rows = []
try {
  for (const store of STORES) {
    const missing = store === 'redis' ? await redisMissing() : null
    if (missing !== null) {
      console.log(`bench node-instructions: the Redis row is SKIPPED: ${missing}`)
      continue
    }
    const row = await runStore(store, dir)
    console.error(`bench node-instructions: ${JSON.stringify(row)}`)
    rows.push(row)
  }
  if (RELAY) {
    const row = await runRelay(dir)
    console.error(`bench node-instructions: ${JSON.stringify(row)}`)
    rows.push(row)
  }
} finally {
  await agent.close()
  if (KEEP === undefined) rmSync(dir, { recursive: true, force: true })
}

const k = (n) => `${(n / 1000).toFixed(1)}k`
const cell = (phase) => (phase === undefined ? '—' : `${k(phase.perUnit)} (${phase.seconds.toFixed(0)} s)`)
const relayRow = rows.find((row) => row.store === 'relay')
const versusRelay = (row) => (relayRow === undefined || row === relayRow ? '' : ` = ${(row.watched.perUnit / relayRow.watched.perUnit).toFixed(2)}× relay`)
console.log(`\n### A Jobwire node's instructions per job (callgrind; ${process.env.BENCH_SERVER_DIST ?? 'this build'})\n`)
console.log(`| server | idle (per s) | create (per job) | claim ${CLAIM} at a time + complete (per job) | write: delta + tick, own request (per write) | the same write, watched by one SSE stream (per write) |`)
console.log('|---|---:|---:|---:|---:|---:|')
for (const row of rows) console.log(`| ${row.store === 'relay' ? 'bare relay' : row.store} | ${k(row.idle)} | ${cell(row.create)} | ${cell(row.claim)} | ${cell(row.write)} | ${cell(row.watched)}${versusRelay(row)} |`)
console.log(
  "\nInstructions of the node's process (all of it: HTTP, auth, validation, core, store, metrics, collector), counted by valgrind --tool=callgrind with V8's --predictable, per job or write of each phase (its seconds under valgrind in brackets), after a warm-up of the same requests. Idle: the node's background work per second (timers, idle-time collections), counted over BENCH_NINSTR_IDLE_MS before the phases; it runs on during them, so a slower run counts more of it. Watched: each write waits until its job's one SSE watcher has it, so its delivery is counted with it. The bare relay (bench/shape's: node:http, no auth, no validation, no store) is fed the same watched writes: the users' shape's limit.",
)
