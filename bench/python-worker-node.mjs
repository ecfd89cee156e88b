// The Node side of bench/python-worker.mjs: an @jobwire/worker that writes `chunks` chunks per job
// of type `chunks-node`, as fast as it can (yielding to the event loop every 100). Args: URL KEY CONCURRENCY.
import { createWorker } from '../packages/worker/dist/index.js'

const [url, apiKey, concurrency] = process.argv.slice(2)
const worker = createWorker({ url, apiKey, concurrency: Number(concurrency), name: 'bench-node', pollWaitSeconds: 5, onError: () => {} })
worker.handle('chunks-node', async (job, ctx) => {
  const { chunks, text } = job.input
  for (let i = 0; i < chunks; i++) {
    ctx.chunk(text)
    if (i % 100 === 99) await new Promise((resolve) => setImmediate(resolve))
  }
  return { chunks }
})
await worker.start()
process.on('SIGTERM', () => void worker.stop({ timeoutMs: 1_000 }).then(() => process.exit(0)))
console.log('ready')
