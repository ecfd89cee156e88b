// WebSocket fan-out bench: `node bench/ws/run.mjs` (after `npm run build`).
//
// Fan-out of one job to BENCH_WS_SUBSCRIBERS (1000) WebSocket subscribers, and of 100 jobs to 1000
// subscribers (each watches one job, 10 per job), against, side by side in one run:
//   bare-corked  a bare `ws` broadcast server corking each socket per tick (the limit)
//   bare         the same without corking (one write per event per socket)
//   socketio     Socket.IO 4 rooms, websocket transport (the peer a user would pick)
//   jobwire      Jobwire on the memory store, events POSTed to its API like any producer
// Every server gets the same producer: rounds of one batch of BENCH_WS_BATCH (10) small progress
// events per job over HTTP — for many jobs one bulk request per round (Jobwire's POST /v1/events;
// the same shape on the bare servers), or with `100/per-job` one request per job — never more than BENCH_WS_WINDOW (2) rounds ahead of the slowest
// subscriber (client processes report it every 2 ms) — so the rate is what a server sustains to
// every subscriber with a short queue. Latency is publish→receive of every event on every
// subscriber. Then, per scenario, latency at a fixed load: every server offered BENCH_WS_PACED (80 %)
// of what the corked bare server sustained, on a schedule (open loop; a late batch is stamped with
// the time it was due). Then: memory per idle connection, WebSocket and SSE, on Jobwire (heap after
// GC and RSS).
//
// Output: Markdown tables on stdout and bench/results/ws-latest.json. Targets: Jobwire ≥ 80 % of
// bare-corked and ≥ 3× Socket.IO delivered events/s, p99 < 50 ms.
import { ask, next, start, stop } from '../lib/children.mjs'
import { percentile, postJson } from '../lib/measure.mjs'
import { mkdirSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { performance } from 'node:perf_hooks'
import { setImmediate } from 'node:timers'
import { Pool } from 'undici'

const here = dirname(fileURLToPath(import.meta.url))
const env = (name, fallback) => (process.env[name] === undefined || process.env[name] === '' ? fallback : Number(process.env[name]))
const SECONDS = env('BENCH_WS_SECONDS', 5)
const WARMUP = env('BENCH_WS_WARMUP', 2)
const SUBSCRIBERS = env('BENCH_WS_SUBSCRIBERS', 1000)
const PROCESSES = env('BENCH_WS_CLIENT_PROCESSES', 2)
const BATCH = env('BENCH_WS_BATCH', 10)
const WINDOW = env('BENCH_WS_WINDOW', 2)
const IDLE = env('BENCH_WS_IDLE', 1000)
const TARGETS = (process.env.BENCH_WS_TARGETS ?? 'bare-corked,bare,socketio,jobwire').split(',')
// A scenario is a job count; with several jobs, the producer sends one bulk request per round
// (Jobwire: POST /v1/events; the bare servers and Socket.IO: the same shape on POST /publish), and
// `100/per-job` sends one request per job per round instead.
/** Share of the corked bare server's sustained rate offered to every server in the paced phase. */
const PACED = env('BENCH_WS_PACED', 0.8)
const SCENARIOS = (process.env.BENCH_WS_SCENARIOS ?? '1,100,100/per-job').split(',').map((spec) => {
  const [jobs, producer] = spec.split('/')
  return { spec, jobs: Number(jobs), perJob: producer === 'per-job' }
})
const API_KEY = 'bench-ws-admin-key-0123456789'
const NAMES = { 'bare-corked': 'bare ws, corked per tick', bare: 'bare ws', socketio: 'Socket.IO 4 rooms', jobwire: 'Jobwire WebSocket' }

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const nowUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000)

async function startTarget(kind) {
  const flags = ['--expose-gc', ...(process.env.BENCH_WS_CPU_PROF === '1' ? ['--cpu-prof', `--cpu-prof-dir=${join(here, '../results/profiles')}`] : [])]
  // BENCH_WS_SERVER_FLAGS: more node flags for the servers under test (e.g. --trace-gc).
  if (process.env.BENCH_WS_SERVER_FLAGS) flags.push(...process.env.BENCH_WS_SERVER_FLAGS.split(' '))
  const child = start(join(here, 'targets.mjs'), [kind, API_KEY], flags)
  const { url } = await next(child, 'ready')
  return { kind, child, url, pool: new Pool(url, { connections: 16, pipelining: 1 }) }
}

const post = (target, path, body) => postJson(target.pool, API_KEY, path, body)

async function jobsFor(target, count) {
  if (target.kind !== 'jobwire' && target.kind !== 'jobwire-sse') return Array.from({ length: count }, (_, i) => `job_bench${String(i).padStart(13, '0')}`)
  const ids = []
  for (let i = 0; i < count; i++) ids.push((await post(target, '/v1/jobs', { type: 'bench', dispatch: false })).id)
  return ids
}

const publishPath = (target, job) => (target.kind === 'jobwire' ? `/v1/jobs/${job}/events` : `/publish/${job}`)
const bulkPath = (target) => (target.kind === 'jobwire' ? '/v1/events' : '/publish')

/** Starts client processes; subscriber i (over all of them) watches jobs[i % jobs.length]. */
async function startClients(kind, url, jobs, total) {
  const per = Math.ceil(total / PROCESSES)
  const clients = []
  for (let p = 0; p < PROCESSES; p++) {
    const count = Math.min(per, total - p * per)
    if (count <= 0) break
    const offset = (p * per) % jobs.length
    const rotated = jobs.map((_, i) => jobs[(i + offset) % jobs.length])
    clients.push(start(join(here, 'subscribers.mjs'), [kind, url, API_KEY, String(count), rotated.join(',')]))
  }
  await Promise.all(clients.map((client) => next(client, 'ready')))
  return clients
}


/**
 * One measurement on a fresh deployment. Without `roundsPerSecond`, as fast as the slowest
 * subscriber allows (the window); with it, paced: rounds on a schedule (open loop, at most 64
 * requests in flight), every batch stamped with the time it was due however late it leaves, and
 * with a request per job the round's requests spread evenly over it.
 */
async function fanout(kind, { jobs: jobCount, perJob, spec }, roundsPerSecond = null) {
  const target = await startTarget(kind)
  const jobs = await jobsFor(target, jobCount)
  const clients = await startClients(kind, target.url, jobs, SUBSCRIBERS)
  // Each subscriber watches one job, which gets BATCH events a round: rounds done = slowest / BATCH.
  const mins = new Map()
  for (const client of clients) {
    mins.set(client, 0)
    client.on('message', (message) => message.type === 'min' && mins.set(client, message.min))
    client.send({ type: 'feedback', on: true })
  }
  const roundsDone = () => Math.floor(Math.min(...mins.values()) / BATCH)
  let round = 0
  let running = true
  let failure = null
  const eventsAt = (r, us) => Array.from({ length: BATCH }, (_, i) => ({ type: 'progress', percent: (r + i) % 100, message: `@${us ?? nowUs()}` }))
  const sendBulk = async (r, us) => {
    const answer = await post(target, bulkPath(target), { writes: jobs.map((jobId) => ({ jobId, events: eventsAt(r, us) })) })
    const refused = answer.results.find((result) => result.error !== undefined)
    if (refused !== undefined) throw new Error(`bulk write refused: ${JSON.stringify(refused.error)}`)
  }
  const perRequest = jobs.length === 1 || perJob
  const producer = (async () => {
    if (roundsPerSecond !== null) {
      // Paced: one unit is a job's request (one job, or a request per job) or a round's bulk request.
      const units = perRequest ? jobs.length : 1
      const gapMs = 1000 / (roundsPerSecond * units)
      const began = performance.now()
      const inFlight = new Set()
      let sent = 0
      while (running) {
        const wait = began + sent * gapMs - performance.now()
        if (wait > 0) await sleep(wait)
        else await new Promise((resolve) => setImmediate(resolve))
        while (inFlight.size >= 64 && running) await Promise.race(inFlight)
        for (const now = performance.now(); running && began + sent * gapMs <= now && inFlight.size < 64; sent++) {
          const r = Math.floor(sent / units)
          const us = Math.round((performance.timeOrigin + began + sent * gapMs) * 1000)
          const job = jobs[sent % units]
          const request = (perRequest ? post(target, publishPath(target, job), { events: eventsAt(r, us) }) : sendBulk(r, us)).finally(() => inFlight.delete(request))
          inFlight.add(request)
        }
        round = Math.floor(sent / units)
      }
      await Promise.all(inFlight)
      return
    }
    while (running) {
      if (round - roundsDone() >= WINDOW) {
        await new Promise((resolve) => setImmediate(resolve))
        continue
      }
      round++
      if (perRequest) await Promise.all(jobs.map((job) => post(target, publishPath(target, job), { events: eventsAt(round) })))
      else await sendBulk(round)
    }
  })().catch((error) => {
    failure = error
  })
  await sleep(WARMUP * 1000)
  const cpu0 = (await ask(target.child, { type: 'stats' }, 'stats')).cpu
  const starts = await Promise.all(clients.map((client) => ask(client, { type: 'mark', name: 'start' }, 'marked')))
  const t0 = performance.now()
  await sleep(SECONDS * 1000)
  const ends = await Promise.all(clients.map((client) => ask(client, { type: 'mark', name: 'end' }, 'marked')))
  const elapsed = (performance.now() - t0) / 1000
  const cpu1 = (await ask(target.child, { type: 'stats' }, 'stats')).cpu
  running = false
  await producer
  if (failure !== null) throw failure
  const delivered = ends.reduce((sum, end, i) => sum + end.total - (starts[i]?.total ?? 0), 0)
  const merged = new Map()
  for (const end of ends) for (const [bucket, n] of end.histogram) merged.set(bucket, (merged.get(bucket) ?? 0) + n)
  const histogram = [...merged.entries()].sort((a, b) => a[0] - b[0])
  const bucketUs = ends[0]?.bucketUs ?? 20
  for (const client of clients) await stop(client)
  await target.pool.close()
  await stop(target.child)
  const cpuSeconds = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / 1e6
  return {
    kind,
    scenario: spec,
    jobs: jobCount,
    producer: jobCount === 1 ? 'one job' : perJob ? 'a request per job' : 'one bulk request',
    load: roundsPerSecond === null ? 'max' : 'paced',
    offeredPerSecond: roundsPerSecond === null ? null : roundsPerSecond * BATCH * SUBSCRIBERS,
    subscribers: SUBSCRIBERS,
    eventsPerSecond: delivered / elapsed,
    p50Ms: percentile(histogram, bucketUs, 50),
    p99Ms: percentile(histogram, bucketUs, 99),
    serverCores: cpuSeconds / elapsed,
  }
}

async function idleMemory(kind) {
  const target = await startTarget('jobwire')
  const jobs = await jobsFor(target, 100)
  await sleep(500)
  const before = await ask(target.child, { type: 'stats', gc: true }, 'stats')
  const clients = await startClients(kind, target.url, jobs, IDLE)
  await sleep(1000)
  const after = await ask(target.child, { type: 'stats', gc: true }, 'stats')
  for (const client of clients) await stop(client)
  await target.pool.close()
  await stop(target.child)
  return { transport: kind === 'jobwire' ? 'WebSocket' : 'SSE', connections: IDLE, heapBytes: (after.heap - before.heap) / IDLE, rssBytes: (after.rss - before.rss) / IDLE }
}

const fmt = (n, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : 'n/a')
const int = (n) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : 'n/a')

const results = []
for (const scenario of SCENARIOS) {
  for (const kind of TARGETS) {
    process.stderr.write(`bench ws: ${NAMES[kind] ?? kind}, ${scenario.spec} job(s) → ${SUBSCRIBERS} subscribers…\n`)
    results.push(await fanout(kind, scenario))
  }
  // Latency at a fixed load: every server offered PACED of what the corked bare server sustained.
  const limit = results.find((r) => r.kind === 'bare-corked' && r.scenario === scenario.spec && r.load === 'max')
  if (PACED > 0 && limit !== undefined) {
    const roundsPerSecond = (PACED * limit.eventsPerSecond) / (BATCH * SUBSCRIBERS)
    for (const kind of TARGETS) {
      process.stderr.write(`bench ws: ${NAMES[kind] ?? kind}, ${scenario.spec} job(s), paced at ${Math.round(PACED * 100)} % of bare corked…\n`)
      results.push(await fanout(kind, scenario, roundsPerSecond))
    }
  }
}
const idle = []
if (IDLE > 0) for (const kind of ['jobwire', 'jobwire-sse']) idle.push(await idleMemory(kind))

console.log(`\n### WebSocket fan-out (${SUBSCRIBERS} subscribers, ${BATCH}-event batches, ${SECONDS} s after ${WARMUP} s warm-up, ${PROCESSES} client processes)\n`)
console.log('| jobs | producer | load | server | delivered events/s | p50 ms | p99 ms | server cores | vs bare corked | vs Socket.IO |')
console.log('|---:|---|---|---|---:|---:|---:|---:|---:|---:|')
for (const { spec } of SCENARIOS) {
  const of = (kind) => results.find((r) => r.kind === kind && r.scenario === spec && r.load === 'max')
  for (const r of results.filter((r) => r.scenario === spec)) {
    const limit = of('bare-corked')?.eventsPerSecond
    const peer = of('socketio')?.eventsPerSecond
    const paced = r.load === 'paced'
    // Paced rows: a server that delivered less than 95 % of the offered rate fell behind.
    const load = paced ? `paced ${int(r.offeredPerSecond)}/s${r.eventsPerSecond < 0.95 * r.offeredPerSecond ? ' (fell behind)' : ''}` : 'highest sustained'
    console.log(
      `| ${r.jobs} | ${r.producer} | ${load} | ${NAMES[r.kind] ?? r.kind} | ${int(r.eventsPerSecond)} | ${fmt(r.p50Ms)} | ${fmt(r.p99Ms)} | ${fmt(r.serverCores, 2)} | ${!paced && limit ? fmt(r.eventsPerSecond / limit, 2) : ''} | ${!paced && peer ? `${fmt(r.eventsPerSecond / peer, 2)}×` : ''} |`,
    )
  }
}
if (idle.length > 0) {
  console.log(`\n### Memory per idle connection (Jobwire, ${IDLE} connections, each watching a job)\n`)
  console.log('| transport | heap + buffers after GC, bytes | RSS, bytes |')
  console.log('|---|---:|---:|')
  for (const r of idle) console.log(`| ${r.transport} | ${int(r.heapBytes)} | ${int(r.rssBytes)} |`)
}
mkdirSync(join(here, '../results'), { recursive: true })
writeFileSync(join(here, '../results/ws-latest.json'), JSON.stringify({ at: new Date().toISOString(), settings: { SECONDS, WARMUP, SUBSCRIBERS, PROCESSES, BATCH, WINDOW, IDLE, PACED }, results, idle }, null, 2))
process.exit(0)
