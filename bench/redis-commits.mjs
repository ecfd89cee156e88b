// CPU per commit on the Redis store: `node bench/redis-commits.mjs` (after `npm run build`; Redis at
// REDIS_URL). Part of `npm run bench`.
//
// BENCH_COMMIT_JOBS (300) jobs on one store in this process; each round writes a token delta and a
// progress tick to every job in one turn (the node batches those commits into script calls), for
// BENCH_COMMIT_ROUNDS (40) rounds after 10 of warm-up. Reports this process's CPU and Redis's own
// (INFO cpu; the Redis is shared, so run it on a quiet one) per commit. BENCH_SERVER_DIST points
// at another build's packages/server/dist/server.js, for A/B runs; alternate them.
import { randomBytes } from 'node:crypto'
import { loadavg } from 'node:os'
import { Redis } from 'ioredis'
import { redisCpuUs, unlinkPrefix } from './lib/redis-keys.mjs'

const num = (name, fallback) => (process.env[name] ? Number(process.env[name]) : fallback)
const JOBS = num('BENCH_COMMIT_JOBS', 300)
const ROUNDS = num('BENCH_COMMIT_ROUNDS', 40)
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const dist = process.env.BENCH_SERVER_DIST ?? '../packages/server/dist/server.js'
const { RedisStore, JobService, defaultCoreLimits } = await import(new URL('index.js', new URL(dist, import.meta.url)).href)

const prefix = `jwbench:${randomBytes(4).toString('hex')}`
const store = new RedisStore({ url: REDIS_URL, prefix })
if (!(await store.waitUntilReady(5000))) throw new Error(`no Redis at ${REDIS_URL}`)
const admin = new Redis(REDIS_URL)
const service = new JobService(store, defaultCoreLimits)
const ids = []
for (let i = 0; i < JOBS; i++) ids.push((await service.createJob({ type: 'commit-bench', dispatch: false })).job.id)
const round = (r) =>
  Promise.all(
    ids.map((id) =>
      service.appendEvents(id, [
        { type: 'chunk', data: { text: `@${Date.now()} and a few tokens ` } },
        { type: 'progress', data: { percent: r % 100, message: 'working' } },
      ]),
    ),
  )
for (let r = 0; r < 10; r++) await round(r)
const load = loadavg()[0]
const redis0 = await redisCpuUs(admin)
const node0 = process.cpuUsage()
for (let r = 0; r < ROUNDS; r++) await round(r)
const node = process.cpuUsage(node0)
const redis = (await redisCpuUs(admin)) - redis0
const commits = ROUNDS * JOBS
await store.close()
admin.disconnect()
await unlinkPrefix(REDIS_URL, prefix)

console.log(`\n### Redis store: CPU per commit (${JOBS} jobs × ${ROUNDS} rounds of a token delta and a progress tick)\n`)
console.log('| load avg | node µs per commit | Redis µs per commit |')
console.log('|---:|---:|---:|')
console.log(`| ${load.toFixed(2)} | ${((node.user + node.system) / commits).toFixed(1)} | ${(redis / commits).toFixed(1)} |`)
