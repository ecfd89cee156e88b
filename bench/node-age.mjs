// A node's cost per job as it ages: `node bench/node-age.mjs` (after `npm run build`; Redis at
// REDIS_URL for the Redis row). Part of `npm run bench`.
//
// A server lives for many jobs, and what it keeps per job (the jobs it has seen, the states it has
// parsed or committed) is bounded: past some number of jobs it forgets one for every new one. That
// must not make later jobs dearer. On each store, in a process of its own and without HTTP (the
// server's core: JobService, Dispatcher and the store, as the routes call them), a backlog of
// BENCH_AGE_JOBS (100,000) trivial jobs is created 500 at a time, then claimed 256 at a time, each
// claim carrying the completions of the jobs the one before handed out (as a worker with
// `prefetch: 256` does). The table shows the process's CPU per create and per job run (claim →
// complete) in windows of BENCH_AGE_WINDOW (20,000) jobs, and the last window against the first.
// The caches it crosses: 50,000 jobs' facts (core/jobs.ts), 10,000 states (SQLite cache, Redis
// committed records). Then the other side of those bounds: small writes spread over many live jobs
// (BENCH_AGE_LIVE: 1,000, 20,000 and 100,000 jobs, each with a subscriber), 40,000 progress events
// written 200 per turn, each to the next job in turn; CPU per event. BENCH_AGE_STORES picks the
// stores (memory,sqlite,redis); BENCH_SERVER_DIST points at another build's
// packages/server/dist/server.js (its index.js is used: A/B runs).
import { fork } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { unlinkPrefix } from './lib/redis-keys.mjs'

const here = fileURLToPath(import.meta.url)
const num = (name, fallback) => (process.env[name] ? Number(process.env[name]) : fallback)
const JOBS = num('BENCH_AGE_JOBS', 100_000)
const WINDOW = num('BENCH_AGE_WINDOW', 20_000)
const LIVE = (process.env.BENCH_AGE_LIVE ?? '1000,20000,100000').split(',').filter(Boolean).map(Number)
const LIVE_WRITES = 40_000
const STORES = (process.env.BENCH_AGE_STORES ?? 'memory,sqlite,redis').split(',').filter(Boolean)
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const dist = process.env.BENCH_SERVER_DIST ? join(dirname(process.env.BENCH_SERVER_DIST), 'index.js') : join(dirname(here), '../packages/server/dist/index.js')

/** CPU µs (user + system) of this process since `from`. */
const cpuSince = (from) => {
  const { user, system } = process.cpuUsage(from)
  return user + system
}

/** One store's backlog of `jobs` jobs: its windows of WINDOW jobs, [{seen, createUs, runUs}]. */
async function backlog(store, jobs) {
  const { service, dispatcher, close } = await openStore(store)
  // Per window of WINDOW jobs: CPU µs per create and per run (claims of 256 do not fall on the window's edges: a window's runs are those of the claims that started in it).
  const windows = Array.from({ length: Math.ceil(jobs / WINDOW) }, (_, i) => ({ seen: i * WINDOW, createUs: 0, runUs: 0 }))
  try {
    let from = process.cpuUsage()
    let windowStart = 0
    for (let made = 0; made < jobs; ) {
      const batch = Math.min(500, jobs - made, windowStart + WINDOW - made)
      await Promise.all(Array.from({ length: batch }, () => service.createJob({ type: 'bench-trivial' })))
      made += batch
      if (made === windowStart + WINDOW || made === jobs) {
        windows[windowStart / WINDOW].createUs = cpuSince(from) / (made - windowStart)
        windowStart = made
        from = process.cpuUsage()
      }
    }
    let line = []
    let run = 0
    windowStart = 0
    from = process.cpuUsage()
    while (run < jobs) {
      const done = line.map(({ job, lease }) => service.appendEvents(job.id, [{ type: 'completed', data: { result: { ok: true } } }], { lease: lease.token, batch: 1 }))
      const [claimed] = await Promise.all([dispatcher.claimMany({ types: ['bench-trivial'], worker: 'bench', leaseMs: 60_000, waitMs: 0, max: 256 }), Promise.all(done)])
      run += line.length
      line = claimed
      if (line.length === 0 && run < jobs) throw new Error(`bench node-age: no job to claim after ${run}`)
      if (run >= windowStart + WINDOW || run === jobs) {
        windows[Math.floor(windowStart / WINDOW)].runUs = cpuSince(from) / (run - windowStart)
        windowStart = run
        from = process.cpuUsage()
      }
    }
  } finally {
    await close()
  }
  return windows
}

/** A fresh store of the build under test with the core over it; `close()` deletes its data. */
async function openStore(store) {
  const { JobService, Dispatcher, MemoryStore, SqliteStore, RedisStore, defaultCoreLimits } = await import(pathToFileURL(dist).href)
  const dataDir = mkdtempSync(join(tmpdir(), 'jobwire-age-'))
  const prefix = `jwbench-age-${randomBytes(4).toString('hex')}`
  let backend
  if (store === 'memory') backend = new MemoryStore()
  else if (store === 'sqlite') backend = new SqliteStore({ path: join(dataDir, 'jobwire.db') })
  else {
    backend = new RedisStore({ url: REDIS_URL, prefix })
    if (!(await backend.waitUntilReady(5000))) throw new Error(`bench node-age: no Redis at ${REDIS_URL}`)
  }
  const service = new JobService(backend, defaultCoreLimits)
  return {
    store: backend,
    service,
    dispatcher: new Dispatcher(service),
    async close() {
      await backend.close?.()
      rmSync(dataDir, { recursive: true, force: true })
      if (store === 'redis') await unlinkPrefix(REDIS_URL, prefix)
    },
  }
}

/** CPU µs per event of LIVE_WRITES progress events spread over `count` live jobs, each subscribed to, 200 writes a turn. */
async function spread(store, count) {
  const { store: backend, service, close } = await openStore(store)
  try {
    const ids = []
    for (let made = 0; made < count; made += 500) {
      const created = await Promise.all(Array.from({ length: Math.min(500, count - made) }, () => service.createJob({ type: 'bench-live', dispatch: false })))
      for (const { job } of created) ids.push(job.id)
    }
    const unsubscribe = ids.map((id) => backend.subscribe(id, () => {}))
    let next = 0
    const turn = () =>
      Promise.all(
        Array.from({ length: 200 }, () => {
          const n = next++
          return service.appendEvents(ids[n % count], [{ type: 'progress', data: { percent: n % 100, message: `step ${n}` } }])
        }),
      )
    for (let i = 0; i < 50; i++) await turn() // warm-up
    const from = process.cpuUsage()
    for (let i = 0; i < LIVE_WRITES / 200; i++) await turn()
    const us = cpuSince(from) / LIVE_WRITES
    for (const stop of unsubscribe) stop()
    return us
  } finally {
    await close()
  }
}

if (process.argv[2] === '--child') {
  // A warm-up on a store of its own (the code compiled, not the caches filled), then the run.
  await backlog(process.argv[3], Math.min(WINDOW, 4_000))
  const windows = await backlog(process.argv[3], JOBS)
  process.send({ windows }, () => process.exit(0))
} else if (process.argv[2] === '--live') {
  await spread(process.argv[3], 1_000) // warm-up
  process.send({ us: await spread(process.argv[3], Number(process.argv[4])) }, () => process.exit(0))
} else {
  /** Runs the child of `args`; resolves with its one message. */
  const inChild = (args) =>
    new Promise((resolve, reject) => {
      const child = fork(here, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
      child.on('message', resolve)
      child.on('exit', (code) => code !== 0 && reject(new Error(`bench node-age: ${args.join(' ')} exited with ${code}`)))
    })
  const results = []
  for (const store of STORES) {
    const { windows } = await inChild(['--child', store])
    const live = []
    for (const count of LIVE) live.push((await inChild(['--live', store, String(count)])).us)
    const load = loadavg()[0]
    console.error(`bench node-age: ${JSON.stringify({ store, windows, live, load })}`)
    results.push({ store, windows, live, load })
  }
  const f = (n) => n.toLocaleString('en-US', { maximumFractionDigits: 1, minimumFractionDigits: 1 })
  const k = (n) => Math.round(n).toLocaleString('en-US')
  console.log(`\n### A node's CPU per job as it ages: a backlog of ${k(JOBS)} trivial jobs created, then run 256 per claim (in process, no HTTP)\n`)
  console.log(`| store | load avg | ${results[0].windows.map((w) => `jobs ${k(w.seen + 1)}–${k(Math.min(JOBS, w.seen + WINDOW))}: µs per create / per run`).join(' | ')} | last vs first window |`)
  console.log(`|---|---:|${results[0].windows.map(() => '---:|').join('')}---:|`)
  for (const { store, windows, load } of results) {
    const [first, last] = [windows[0], windows.at(-1)]
    const ratio = `${(last.createUs / first.createUs).toFixed(2)}× / ${(last.runUs / first.runUs).toFixed(2)}×`
    console.log(`| ${store} | ${load.toFixed(2)} | ${windows.map((w) => `${f(w.createUs)} / ${f(w.runUs)}`).join(' | ')} | ${ratio} |`)
  }
  console.log('\n(CPU of the process running the core and the store, per job: creates 500 at a time; runs are claims of 256 carrying the completions of the claim before)')
  console.log(`\n### Small writes spread over many live jobs: µs per event (${k(LIVE_WRITES)} progress events, 200 per turn, each to the next job in turn; a subscriber per job; in process)\n`)
  console.log(`| store | ${LIVE.map((count) => `${k(count)} jobs`).join(' | ')} | ${k(LIVE.at(-1))} vs ${k(LIVE[0])} |`)
  console.log(`|---|${LIVE.map(() => '---:|').join('')}---:|`)
  for (const { store, live } of results) console.log(`| ${store} | ${live.map(f).join(' | ')} | ${(live.at(-1) / live[0]).toFixed(2)}× |`)
}
