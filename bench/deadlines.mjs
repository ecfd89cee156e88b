// What the deadline sweep costs: `node bench/deadlines.mjs` (after `npm run build`; Redis rows need
// Redis at JOBWIRE_BENCH_REDIS or redis://127.0.0.1:6379). Each store gets BENCH_JOBS (20,000)
// queued jobs, each with a queue timeout; then it prints
//   - idle sweep: one `dueDeadlines` call while none is due (what every node pays every
//     --deadline-sweep-interval), median of 50 calls: it reads the index, not the jobs;
//   - fire all: every deadline due at once, fired by one node (`fireDue` until none is left),
//     deadlines per second.
import { rm, mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { defaultCoreLimits, JobService, MemoryStore, RedisStore, SqliteStore } from '../packages/server/dist/index.js'

const jobs = Number(process.env.BENCH_JOBS ?? 20_000)
const redisUrl = process.env.JOBWIRE_BENCH_REDIS ?? 'redis://127.0.0.1:6379'

async function measure(name, store) {
  const clock = { now: Date.now() }
  const service = new JobService(store, defaultCoreLimits, () => new Date(clock.now))
  for (let i = 0; i < jobs; i += 500) {
    await Promise.all(Array.from({ length: Math.min(500, jobs - i) }, () => service.createJob({ type: 'bench', deadlines: { queueTimeoutMs: 60_000 } })))
  }
  const idle = []
  for (let i = 0; i < 50; i++) {
    const start = performance.now()
    await store.dueDeadlines(clock.now, 200)
    idle.push(performance.now() - start)
  }
  idle.sort((a, b) => a - b)
  clock.now += 61_000
  const start = performance.now()
  let fired = 0
  for (let round; (round = await service.deadlines.fireDue(500)) > 0; ) fired += round
  const seconds = (performance.now() - start) / 1000
  console.log(`| ${name} | ${jobs} | ${idle[25].toFixed(3)} ms | ${fired} | ${Math.round(fired / seconds)} /s |`)
  await store.close()
}

console.log('| store | pending deadlines | idle sweep (median) | fired | fire rate |')
console.log('|---|---|---|---|---|')
await measure('memory', new MemoryStore())
const dir = await mkdtemp(join(tmpdir(), 'jobwire-bench-deadlines-'))
await measure('sqlite', new SqliteStore({ path: join(dir, 'bench.db') }))
await rm(dir, { recursive: true, force: true })
const prefix = `jobwire-bench-deadlines-${process.pid}`
const redis = new RedisStore({ url: redisUrl, prefix })
if (await redis.waitUntilReady(3000)) {
  await measure('redis', redis)
  // Leaves nothing behind: every job was failed; the keys of this prefix are deleted.
  const { Redis } = await import('ioredis')
  const admin = new Redis(redisUrl)
  let cursor = '0'
  do {
    const [next, keys] = await admin.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000)
    cursor = next
    if (keys.length > 0) await admin.del(...keys)
  } while (cursor !== '0')
  await admin.quit()
} else {
  await redis.close()
  console.log(`| redis | — | no Redis at ${redisUrl} | | |`)
}
