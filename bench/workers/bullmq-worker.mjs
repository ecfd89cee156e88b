// A BullMQ worker process for bench/workers.mjs, the peer. argv: redisUrl, prefix, mode, concurrency, seconds.
// 'trivial': completes each job at once and reports when `total` are done. 'stream': one job
// that calls job.updateProgress() with its send time as fast as it can for `seconds`.
import { Worker } from 'bullmq'
import { Redis as IORedis } from 'ioredis'

const [redisUrl, prefix, mode, concurrency, seconds, total, rate] = process.argv.slice(2)
// The throughput is timed from here: the process has started and loaded its modules (not work).
process.send({ type: 'loaded', at: performance.timeOrigin + performance.now(), cpu: process.cpuUsage() })
const connection = new IORedis(redisUrl, { maxRetriesPerRequest: null })
let done = 0
let sent = 0
const worker = new Worker(
  `bench-${mode}`,
  async (job) => {
    if (mode === 'trivial') return { ok: true }
    // The same offered load as the Jobwire worker: `rate` updates/s in 100 ticks a second, pipelined.
    const start = performance.now()
    const until = start + Number(seconds) * 1000
    const inflight = []
    while (performance.now() < until) {
      const due = Math.floor(((performance.now() - start) / 1000) * Number(rate))
      for (; sent < due; sent++) inflight.push(job.updateProgress((performance.timeOrigin + performance.now()).toFixed(3)))
      await Promise.all(inflight.splice(0))
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
    return { sent }
  },
  { connection, prefix, concurrency: Number(concurrency), autorun: true },
)
worker.on('completed', () => {
  done++
  if (mode === 'trivial' && done === Number(total)) process.send({ type: 'all-done', at: performance.timeOrigin + performance.now(), cpu: process.cpuUsage() })
})
await worker.waitUntilReady()
process.send({ type: 'ready', mode, cpu: process.cpuUsage() })
process.on('message', async (message) => {
  if (message.type === 'stop') {
    await worker.close()
    await connection.quit()
    process.send({ type: 'stopped', sent, cpu: process.cpuUsage() })
    process.exit(0)
  }
})
