// Redis's instructions per job on the Redis store: `node bench/redis-instructions.mjs` (after
// `npm run build`; valgrind and redis-server on the PATH, else skipped with a message). Part of
// `npm run bench`.
//
// Redis's CPU per job (bench/workers.mjs, bench/redis-commits.mjs) swings by a fifth from run to
// run on a shared 2-core machine: too much to see a change of a few per cent in what the store's
// scripts make Redis do. This counts instructions instead: a private redis-server runs under
// valgrind's callgrind, whose count is the same for the same binary and inputs whatever else the
// machine does (within ~1 % here: job ids, times and tokens differ from run to run). The store runs
// in this process, against it, phase by phase (each after a warm-up, counted alone):
//   create  BENCH_INSTR_JOBS (2,000) jobs, 100 at a time;
//   claim   those jobs claimed 256 at a time, each completed (a worker with prefetch);
//   write   BENCH_INSTR_LIVE (100) running jobs × 10 rounds of a token delta and a progress tick
//           each, one turn per round (the users' shape: many jobs, a writer each).
// Also Redis's commands per job (INFO commandstats; a script's own commands counted too).
// BENCH_SERVER_DIST points at another build's packages/server/dist/server.js for A/B runs: one run
// of each is enough. BENCH_INSTR_REDIS runs another redis-server binary (one built with symbols, to
// read where the instructions go), and BENCH_INSTR_KEEP=dir keeps callgrind's files there (one per
// phase: `callgrind_annotate --inclusive=yes FILE`).
import { spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { redisCommandCalls } from './lib/redis-keys.mjs'
import { dumpCount, missingTool, zeroCount } from './lib/callgrind.mjs'

const num = (name, fallback) => (process.env[name] ? Number(process.env[name]) : fallback)
const JOBS = num('BENCH_INSTR_JOBS', 2000)
const LIVE = num('BENCH_INSTR_LIVE', 100)
const ROUNDS = 10
const dist = process.env.BENCH_SERVER_DIST ?? '../packages/server/dist/server.js'

const missing = missingTool(['valgrind', 'redis-server', 'callgrind_control'])
if (missing !== null) {
  console.log(`bench redis-instructions: SKIPPED: ${missing} is not on the PATH (Debian: apt-get install valgrind redis-server)`)
  process.exit(0)
}
const { RedisStore, JobService, Dispatcher, defaultCoreLimits } = await import(new URL('index.js', new URL(dist, import.meta.url)).href)

const port = await new Promise((resolve) => {
  const probe = createServer().listen(0, '127.0.0.1', () => {
    const { port: free } = probe.address()
    probe.close(() => resolve(free))
  })
})
const KEEP = process.env.BENCH_INSTR_KEEP
const dir = KEEP ?? mkdtempSync(join(tmpdir(), 'jobwire-bench-instr-'))
if (KEEP !== undefined) mkdirSync(KEEP, { recursive: true })
const redisProcess = spawn('valgrind', ['--tool=callgrind', `--callgrind-out-file=${join(dir, 'cg.%p')}`, process.env.BENCH_INSTR_REDIS ?? 'redis-server', '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
  stdio: 'ignore',
})
// Not left running should the bench fail before its end.
process.on('exit', () => redisProcess.kill())
const url = `redis://127.0.0.1:${port}`
// valgrind takes a few seconds to start Redis: refused connections until then are retried.
const admin = new Redis(url, { retryStrategy: (times) => (times > 150 ? null : 200), maxRetriesPerRequest: null })
admin.on('error', () => undefined)
await admin.ping()

/** Runs `work` with Redis's counters zeroed first; its instructions and commands per `units`. */
async function measure(name, units, work) {
  const before = await redisCommandCalls(admin)
  zeroCount(redisProcess.pid)
  await work()
  const instructions = dumpCount(redisProcess.pid, dir, name)
  const after = await redisCommandCalls(admin)
  const commands = Object.entries(after)
    .filter(([command]) => !command.endsWith(' bytes') && command !== 'info' && command !== 'evalsha' && command !== 'eval')
    .reduce((sum, [command, count]) => sum + count - (before[command] ?? 0), 0)
  const scripts = ['evalsha', 'eval'].reduce((sum, command) => sum + (after[command] ?? 0) - (before[command] ?? 0), 0)
  // INFO commandstats is read through a command of its own (counted in `info`, left out above).
  return { instructions: instructions / units, commands: commands / units, scripts: scripts / units }
}

const prefix = 'jwbench-instr'
const store = new RedisStore({ url, prefix })
if (!(await store.waitUntilReady(30_000))) throw new Error(`bench redis-instructions: no Redis at ${url}`)
const service = new JobService(store, defaultCoreLimits)
const dispatcher = new Dispatcher(service)
const claimBatch = (type) => dispatcher.claimMany({ types: [type], worker: 'bench', leaseMs: 600_000, waitMs: 0, max: 256 })
const createJobs = async (type, count) => {
  for (let i = 0; i < count; i += 100) await Promise.all(Array.from({ length: Math.min(100, count - i) }, () => service.createJob({ type })))
}
const claimAndComplete = async (type, count) => {
  for (let done = 0; done < count; ) {
    const claimed = await claimBatch(type)
    if (claimed.length === 0) throw new Error('bench redis-instructions: the queue ran dry')
    await Promise.all(claimed.map((one) => service.appendEvents(one.job.id, [{ type: 'completed', data: { result: null } }], { lease: one.lease.token, batch: 1 })))
    done += claimed.length
  }
}
const writeRounds = async (claimed, rounds) => {
  for (let round = 0; round < rounds; round++) {
    await Promise.all(
      claimed.map((one) =>
        service.appendEvents(
          one.job.id,
          [
            { type: 'chunk', data: { text: ` token ${round}` } },
            { type: 'progress', data: { percent: round, message: 'working' } },
          ],
          { lease: one.lease.token, batch: round + 1 },
        ),
      ),
    )
  }
}

const rows = []
try {
  // Warm-up: every script loaded and run once on each path, the indexes made.
  await createJobs('bench-warm', 300)
  await claimAndComplete('bench-warm', 300)
  rows.push(['create', `${JOBS.toLocaleString('en-US')} jobs, 100 at a time`, 'job', await measure('create', JOBS, () => createJobs('bench-instr', JOBS))])
  rows.push(['claim', 'claimed 256 at a time, each completed', 'job', await measure('claim', JOBS, () => claimAndComplete('bench-instr', JOBS))])
  await createJobs('bench-live', LIVE)
  const live = []
  while (live.length < LIVE) live.push(...(await claimBatch('bench-live')))
  await writeRounds(live, 1)
  rows.push(['write', `${LIVE} running jobs × ${ROUNDS} rounds, a token delta and a progress tick each`, 'write', await measure('write', LIVE * ROUNDS, () => writeRounds(live, ROUNDS))])
} finally {
  await store.close()
  await admin.call('SHUTDOWN', 'NOSAVE').catch(() => undefined)
  admin.disconnect()
  await new Promise((resolve) => (redisProcess.exitCode === null ? redisProcess.on('exit', resolve) : resolve()))
  if (KEEP === undefined) rmSync(dir, { recursive: true, force: true })
}

console.log(`\n### Redis's instructions per job on the Redis store (callgrind; ${dist === '../packages/server/dist/server.js' ? 'this build' : dist})\n`)
console.log('| phase | what | Redis instructions | Redis commands (a script\'s own counted) | script calls |')
console.log('|---|---|---:|---:|---:|')
for (const [phase, what, unit, { instructions, commands, scripts }] of rows) {
  console.log(`| ${phase} | ${what} | ${Math.round(instructions).toLocaleString('en-US')} per ${unit} | ${commands.toFixed(2)} | ${scripts.toFixed(3)} |`)
}
console.log('\nInstructions counted by valgrind --tool=callgrind in a private redis-server (repeatable within ~1 %: ids, times and tokens differ), per job or per write of the phase, after a warm-up.')
