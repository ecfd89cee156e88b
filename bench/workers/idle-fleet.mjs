// A fleet of idle workers for bench/idle-workers.mjs, in its own process. argv: system ('jobwire' |
// 'bullmq'), url (Jobwire's, or Redis's for BullMQ), apiKey (or BullMQ's key prefix), count.
// `count` workers of concurrency 1, each waiting for a job of type 'idle-bench'; a job's handler
// records how long after its create was sent it started (the job carries that time) and returns.
// Answers {type:'ready'} once every worker waits, {type:'handled', handled} on 'count', and
// {type:'stopped', latencies} on 'stop'.
import { Redis } from 'ioredis'

const [system, url, keyOrPrefix, countArg] = process.argv.slice(2)
const count = Number(countArg)
const latencies = []
const now = () => performance.timeOrigin + performance.now()
const started = (at) => latencies.push(now() - at)
let stop

if (system === 'jobwire') {
  const { createWorker } = await import('../../packages/worker/dist/index.js')
  const workers = Array.from({ length: count }, (_, i) => {
    const worker = createWorker({ url, apiKey: keyOrPrefix, concurrency: 1, name: `idle-${i}`, onError: () => {} })
    worker.handle('idle-bench', async (job) => {
      started(job.input.at)
      return null
    })
    return worker
  })
  await Promise.all(workers.map((worker) => worker.start()))
  stop = () => Promise.all(workers.map((worker) => worker.stop({ timeoutMs: 1000 })))
} else {
  const { Worker } = await import('bullmq')
  const connection = new Redis(url, { maxRetriesPerRequest: null })
  const workers = Array.from(
    { length: count },
    () =>
      new Worker(
        'idle-bench',
        async (job) => {
          started(job.data.at)
          return null
        },
        { connection, prefix: keyOrPrefix, concurrency: 1 },
      ),
  )
  await Promise.all(workers.map((worker) => worker.waitUntilReady()))
  stop = async () => {
    await Promise.all(workers.map((worker) => worker.close()))
    await connection.quit()
  }
}

process.send({ type: 'ready' })
process.on('message', async (message) => {
  if (message.type === 'count') process.send({ type: 'handled', handled: latencies.length })
  if (message.type === 'stop') {
    await stop()
    process.send({ type: 'stopped', latencies })
    process.exit(0)
  }
})
