// What the SQLite store writes to disk per event: `node bench/sqlite-writes.mjs` (after `npm run
// build`; BENCH_SERVER_DIST=…/server.js measures another build). BENCH_SQLITE_JOBS (1,000) running
// jobs get BENCH_SQLITE_WRITES (20,000) writes of one progress tick each, spread over the jobs,
// BENCH_SQLITE_PER_TURN (2) writes per turn of the event loop (a group commit), as producers'
// requests arrive; with `--sqlite-sync full`. BENCH_SQLITE_SHAPE=fleet makes each write what a
// busy @jobwire/worker job sends per throttle period (a token-delta chunk and a progress tick;
// use it with BENCH_SQLITE_PER_TURN=250, a bulk request of the shape bench's fleet). Reported from
// /proc/self/io (this process: the store, its fsyncs and its checkpointer thread): bytes written to
// storage per write, and CPU per write.
import { mkdtempSync, rmSync } from 'node:fs'
import { readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'

const env = (name, fallback) => (process.env[name] === undefined || process.env[name] === '' ? fallback : Number(process.env[name]))
const JOBS = env('BENCH_SQLITE_JOBS', 1000)
const WRITES = env('BENCH_SQLITE_WRITES', 20_000)
const PER_TURN = env('BENCH_SQLITE_PER_TURN', 2)
const FLEET = process.env.BENCH_SQLITE_SHAPE === 'fleet'
const dist = process.env.BENCH_SERVER_DIST ?? new URL('../packages/server/dist/server.js', import.meta.url).pathname
const { JobService, SqliteStore, defaultCoreLimits } = await import(join(dirname(dist), 'index.js'))

const writtenBytes = () => Number(/write_bytes: (\d+)/.exec(readFileSync('/proc/self/io', 'utf8'))?.[1] ?? NaN)
const dir = mkdtempSync(join(tmpdir(), 'jobwire-sqlite-writes-'))
const store = new SqliteStore({ path: join(dir, 'jobwire.db') })
const service = new JobService(store, defaultCoreLimits)
const ids = []
for (let i = 0; i < JOBS; i += 100) {
  ids.push(...(await Promise.all(Array.from({ length: Math.min(100, JOBS - i) }, async () => (await service.createJob({ type: 'writes', dispatch: false })).job.id))))
}
await Promise.all(ids.map((id) => service.appendEvents(id, [{ type: 'started', data: { attempt: 1, worker: null } }])))
await new Promise((resolve) => setTimeout(resolve, 500))
const bytes0 = writtenBytes()
const cpu0 = process.cpuUsage()
const t0 = performance.now()
for (let n = 0; n < WRITES; n += PER_TURN) {
  await Promise.all(
    Array.from({ length: PER_TURN }, (_, i) => {
      const progress = { type: 'progress', data: { percent: (n + i) % 100, message: `tick ${n + i}` } }
      const events = FLEET ? [{ type: 'chunk', data: { text: `@${n + i} and a few tokens ` } }, progress] : [progress]
      return service.appendEvents(ids[((n + i) * 7919) % ids.length], events)
    }),
  )
}
const seconds = (performance.now() - t0) / 1000
const cpu = process.cpuUsage(cpu0)
await store.close()
const bytes = writtenBytes() - bytes0
rmSync(dir, { recursive: true, force: true })
console.log(`\n### SQLite: ${WRITES.toLocaleString('en-US')} ${FLEET ? 'chunk + progress' : 'single-event'} writes to ${JOBS.toLocaleString('en-US')} running jobs, ${PER_TURN} per group commit\n`)
console.log('| bytes written to storage per write | CPU µs per write | writes/s |')
console.log('|---:|---:|---:|')
console.log(`| ${Math.round(bytes / WRITES).toLocaleString('en-US')} | ${Math.round((cpu.user + cpu.system) / WRITES)} | ${Math.round(WRITES / seconds).toLocaleString('en-US')} |`)
