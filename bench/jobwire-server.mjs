// Jobwire under test, as a child of bench/run.mjs (IPC). argv: store ('sqlite' = the default,
// synchronous=full; 'sqlite-normal'; 'memory'; 'redis': REDIS_URL under the key prefix
// BENCH_REDIS_PREFIX), dataDir, apiKey.
// Answers {type:'ready', url}; on {type:'stop'} closes the server and exits.
// BENCH_SERVER_DIST may point at another build's server.js (A/B experiments).
import { writeFileSync } from 'node:fs'

const { startServer } = await import(process.env.BENCH_SERVER_DIST ?? '../packages/server/dist/server.js')

const [store, dataDir, apiKey] = process.argv.slice(2)
const server = await startServer({
  config: {
    port: 0,
    host: '127.0.0.1',
    dataDir,
    apiKey,
    logLevel: 'silent',
    memory: store === 'memory',
    ...(store === 'sqlite-normal' ? { sqliteSync: 'normal' } : {}),
    ...(store === 'redis' ? { redis: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', redisPrefix: process.env.BENCH_REDIS_PREFIX ?? 'jwbench' } : {}),
    // Extra options for one benchmark (e.g. the workers bench streams more text than the default cap).
    ...(process.env.BENCH_SERVER_CONFIG ? JSON.parse(process.env.BENCH_SERVER_CONFIG) : {}),
  },
  logger: false,
})
process.send({ type: 'ready', url: server.url, databasePath: server.databasePath })
let session = null
/** BENCH_PROFILE_HEAP=1: the phase's profile samples allocations (a .heapprofile) instead of CPU time. */
const HEAP = process.env.BENCH_PROFILE_HEAP === '1'
process.on('message', (message) => {
  if (message.type === 'stats') process.send({ type: 'stats', cpu: process.cpuUsage() })
  // A CPU profile of one phase of a benchmark (bench/workers.mjs with BENCH_PROFILE), written to `message.file`.
  if (message.type === 'profile-start') {
    void import('node:inspector').then(({ Session }) => {
      session = new Session()
      session.connect()
      if (HEAP) {
        // Every allocation sampled, including what the collector has freed since: what a phase allocates, not what it keeps.
        const options = { samplingInterval: 4096, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true }
        session.post('HeapProfiler.startSampling', options, () => process.send({ type: 'profile-started' }))
      } else session.post('Profiler.enable', () => session.post('Profiler.start', () => process.send({ type: 'profile-started' })))
    })
  }
  if (message.type === 'profile-stop') {
    session.post(HEAP ? 'HeapProfiler.stopSampling' : 'Profiler.stop', (error, result) => {
      if (error === null) writeFileSync(HEAP ? message.file.replace(/\.cpuprofile$/, '.heapprofile') : message.file, JSON.stringify(result.profile))
      session.disconnect()
      process.send({ type: 'profile-stopped' })
    })
  }
  if (message.type === 'stop') {
    server.close().then(
      () => process.exit(0),
      (error) => {
        console.error(error)
        process.exit(1)
      },
    )
  }
})
