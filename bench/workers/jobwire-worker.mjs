// A Jobwire worker process for bench/workers.mjs. argv: url, apiKey, mode ('trivial' | 'stream'),
// concurrency, seconds, rate, total, prefetch. 'trivial': completes each job at once and reports 'all-done'
// once `total` were handled and none is held (every completion answered). 'stream': one job that
// calls ctx.chunk() with its send time at `rate` per second for `seconds`, then completes.
// BENCH_WORKER_DIST may point at another build's packages/worker/dist/index.js (A/B experiments).
import { pathToFileURL } from 'node:url'

const { createWorker } = await import(process.env.BENCH_WORKER_DIST ? pathToFileURL(process.env.BENCH_WORKER_DIST).href : '../../packages/worker/dist/index.js')

const [url, apiKey, mode, concurrency, seconds, rate, total, prefetch] = process.argv.slice(2)
// The throughput is timed from here: the process has started and loaded its modules (not work).
process.send({ type: 'loaded', at: performance.timeOrigin + performance.now(), cpu: process.cpuUsage() })
const worker = createWorker({ url, apiKey, concurrency: Number(concurrency), prefetch: Number(prefetch), pollWaitSeconds: 1, name: `bench-${process.pid}`, onError: () => {} })
let sent = 0

let handled = 0
worker.handle('bench-trivial', async () => {
  if (++handled === Number(total)) {
    const check = setInterval(() => {
      if (worker.activeJobs > 0) return
      clearInterval(check)
      process.send({ type: 'all-done', at: performance.timeOrigin + performance.now(), cpu: process.cpuUsage() })
    }, 1)
  }
  return { ok: true }
})
worker.handle('bench-stream', async (_job, ctx) => {
  // An offered load of `rate` chunks/s, in 100 ticks a second, each chunk stamped with its send time.
  const start = performance.now()
  const until = start + Number(seconds) * 1000
  while (performance.now() < until) {
    const due = Math.floor(((performance.now() - start) / 1000) * Number(rate))
    for (; sent < due; sent++) ctx.chunk(`${(performance.timeOrigin + performance.now()).toFixed(3)}|`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  await ctx.flush()
  return { sent }
})

await worker.start()
process.send({ type: 'ready', mode, cpu: process.cpuUsage() })
process.on('message', async (message) => {
  if (message.type === 'stop') {
    await worker.stop({ timeoutMs: 1000 })
    process.send({ type: 'stopped', sent, cpu: process.cpuUsage() })
    process.exit(0)
  }
})
