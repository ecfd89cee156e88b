// Analysis with a React hook, late join and polling fallback, in one command:
//   npx jobwire serve            (another terminal)
//   node examples/analysis-react/start.mjs
// It runs the analysis worker, starts a job, waits until the job is well under way, then serves the
// React page (Vite) and prints two links: the page joining late over WebSocket, and the same page
// following by polling only. Ctrl-C stops it.
import { fileURLToPath } from 'node:url'
import { JobwireBackend } from '@jobwire/backend'
import { createServer } from 'vite'
import { connection } from '../connect.mjs'
import { analysisWorker, type } from './worker.mjs'

const { url, apiKey } = connection()
const worker = analysisWorker({ url, apiKey, stepMs: 1500 })
await worker.start()
const backend = new JobwireBackend({ url, apiKey })
const job = await backend.createJob({ type, input: { documentId: 'contract-7' }, owner: { tenant: 'acme', user: 'ann' } })
console.log(`analysis ${job.id} started; joining once it is past parsing…`)
while ((await backend.getJob(job.id)).progress.stage === null || (await backend.getJob(job.id)).progress.stage === 'parsing') {
  await new Promise((resolve) => setTimeout(resolve, 500))
}
const { token } = await backend.mintToken({ jobIds: [job.id], rights: ['read', 'cancel'], ttl: 3600 })
// The page talks to its own origin; Vite passes /v1 (HTTP, SSE and the WebSocket) on to Jobwire, as your
// app's reverse proxy would, so no CORS setting is needed.
const proxy = { '/v1': { target: url, ws: true, changeOrigin: true } }
const vite = await createServer({ root: fileURLToPath(new URL('.', import.meta.url)), server: { port: 5173, proxy }, logLevel: 'warn' })
await vite.listen()
const page = vite.resolvedUrls?.local[0] ?? 'http://localhost:5173/'
const query = new URLSearchParams({ job: job.id, token })
console.log(`late join, live:        ${page}?${query}`)
console.log(`late join, polling only: ${page}?${query}&transports=poll`)
process.once('SIGINT', () => void Promise.all([vite.close(), worker.stop({ timeoutMs: 0 })]).then(() => process.exit(0)))
