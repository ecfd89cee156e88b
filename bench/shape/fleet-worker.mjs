// A fleet worker process of bench/shape/run.mjs (IPC): @jobwire/worker (dist build) running up to
// `concurrency` jobs of type 'fleet' at once. Each job streams a token delta stamped
// `@<µs since the epoch>` (read by the watchers) and a progress tick every `cadenceMs`, starting at
// a random phase (seeded), until told to halt; then it completes. A job created with input
// {quiet: true} reports nothing: it waits for the halt or its cancel.
// argv: url apiKey concurrency cadenceMs seed. IPC in: halt → {type:'halted', sent}; stop.
// IPC out: {type:'aborted', jobId, at, reason} when a job's signal aborts before the halt (a cancel).
import { performance } from 'node:perf_hooks'
import { createWorker } from '../../packages/worker/dist/index.js'

const [url, apiKey, concurrency, cadenceMs, seed] = process.argv.slice(2)
const cadence = Number(cadenceMs)
let rand = Number(seed) >>> 0
const phase = () => {
  rand = (Math.imul(rand, 1103515245) + 12345) >>> 0
  return (rand / 4294967296) * cadence
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
let running = true
let sent = 0
const worker = createWorker({ url, apiKey, concurrency: Number(concurrency), pollWaitSeconds: 1, name: `fleet-${process.pid}`, onError: () => {} })
worker.handle('fleet', async (job, ctx) => {
  // A cancel reaching the handler, while the fleet runs: when (epoch ms) and why, for bench/shape/run.mjs.
  ctx.signal.addEventListener('abort', () => {
    if (running) process.send({ type: 'aborted', jobId: job.id, at: performance.timeOrigin + performance.now(), reason: String(ctx.signal.reason?.reason ?? ctx.signal.reason) })
  })
  // A quiet job (a long call that reports nothing) only waits: a cancel can reach it only through the signals long-poll.
  if (job.input?.quiet === true) {
    while (running && !ctx.signal.aborted) await sleep(cadence)
    return { ok: true }
  }
  const began = performance.now() + phase()
  for (let tick = 0; running && !ctx.signal.aborted; tick++) {
    const due = began + tick * cadence
    const wait = due - performance.now()
    if (wait > 0) await sleep(wait)
    ctx.chunk(`@${Math.round((performance.timeOrigin + due) * 1000)} and a few tokens `)
    ctx.progress({ percent: tick % 100, message: 'working' })
    sent++
  }
  return { ok: true }
})
await worker.start()
process.send({ type: 'ready' })
process.on('message', async (message) => {
  if (message.type === 'halt') {
    running = false
    process.send({ type: 'halted', sent })
  }
  if (message.type === 'stop') {
    running = false
    await worker.stop({ timeoutMs: 2000 })
    process.exit(0)
  }
})
