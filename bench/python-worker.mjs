// The Python worker's chunk rate next to @jobwire/worker's: `node bench/python-worker.mjs`.
// Needs a built tree (npm run build) and the Python SDK installed (sdks/python/.venv, made by
// `npm run test:python`, or PYTHON=/path/to/python with `jobwire` importable).
//
// One memory-store Jobwire node; one worker process per runtime (Node, Python). Each job's handler
// calls ctx.chunk() BENCH_PY_CHUNKS times with a BENCH_PY_CHUNK_BYTES-byte text, as fast as it
// can; both outboxes coalesce chunks into few events (throttle 100 ms, batches of at most 1,000
// events / 900 KB). The rate is chunks per second between the job's `started` and `completed`
// events (the server's clock), so claim latency is left out. Cases: 1 job at a time, and
// BENCH_PY_PARALLEL jobs at once (bulk writes). Median of BENCH_PY_ROUNDS rounds per cell.
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { startJobwire } from './lib/jobwire.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const num = (name, fallback) => (process.env[name] ? Number(process.env[name]) : fallback)
const CHUNKS = num('BENCH_PY_CHUNKS', 100_000)
const CHUNK_BYTES = num('BENCH_PY_CHUNK_BYTES', 32)
const PARALLEL = num('BENCH_PY_PARALLEL', 8)
const ROUNDS = num('BENCH_PY_ROUNDS', 3)
const API_KEY = 'bench-admin-key-0123456789'
const venvPython = join(here, '..', 'sdks', 'python', '.venv', 'bin', 'python')
const PYTHON = process.env.PYTHON ?? (existsSync(venvPython) ? venvPython : 'python3')

const server = await startJobwire(API_KEY, { maxTextLength: 256 * 1024 ** 2, maxEventsPerJob: 1_000_000 })
const url = server.url

async function api(method, path, body) {
  const response = await fetch(`${url}${path}`, {
    method,
    headers: { authorization: `Bearer ${API_KEY}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${await response.text()}`)
  return response.json()
}

function startWorker(command, args) {
  const proc = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'] })
  return new Promise((resolve, reject) => {
    proc.once('exit', (code) => reject(new Error(`${command} ${args[0]} exited with ${code} before it was ready`)))
    proc.stdout.on('data', (data) => {
      if (String(data).includes('ready')) resolve(proc)
    })
  })
}

/** Runs `jobs` jobs of `type` at once; chunks/s of each from its started → completed events. */
async function round(type, jobs) {
  const text = 'x'.repeat(CHUNK_BYTES - 1) + ' '
  const created = await Promise.all(Array.from({ length: jobs }, () => api('POST', '/v1/jobs', { type, input: { chunks: CHUNKS, text } })))
  const spans = []
  for (const job of created) {
    let done = false
    let after = 0
    let started = null
    let events = 0
    while (!done) {
      const page = await api('GET', `/v1/jobs/${job.id}/events?after=${after}&wait=25`)
      for (const event of page.events) {
        if (event.type === 'started') started = Date.parse(event.at)
        if (event.type === 'chunk') events++
        if (event.type === 'completed') spans.push({ start: started, end: Date.parse(event.at), events })
        if (event.type === 'failed') throw new Error(`${type} job failed: ${event.data.message}`)
      }
      after = page.next
      done = page.done
    }
  }
  const start = Math.min(...spans.map((span) => span.start))
  const end = Math.max(...spans.map((span) => span.end))
  return { rate: (CHUNKS * jobs) / Math.max(0.001, (end - start) / 1000), events: spans.reduce((sum, span) => sum + span.events, 0) / jobs }
}

const median = (values) => values.slice().sort((a, b) => a - b)[Math.floor(values.length / 2)]
const workers = {
  node: await startWorker(process.execPath, [join(here, 'python-worker-node.mjs'), url, API_KEY, String(PARALLEL)]),
  python: await startWorker(PYTHON, [join(here, 'python-worker-py.py'), url, API_KEY, String(PARALLEL)]).catch((error) => {
    console.error(`bench: the Python worker did not start with ${PYTHON} (run \`npm run test:python\` once, or set PYTHON): ${error.message}`)
    process.exit(1)
  }),
}

const rows = []
try {
  for (const jobs of [1, PARALLEL]) {
    const results = { node: [], python: [] }
    for (let r = 0; r < ROUNDS; r++) {
      // Alternate, so a burst of load from elsewhere on the machine does not land on one side only.
      for (const runtime of r % 2 === 0 ? ['node', 'python'] : ['python', 'node']) results[runtime].push(await round(`chunks-${runtime}`, jobs))
    }
    for (const runtime of ['node', 'python']) {
      rows.push({
        runtime: runtime === 'node' ? 'Node (@jobwire/worker)' : 'Python (jobwire)',
        jobs,
        rate: median(results[runtime].map((result) => result.rate)),
        events: median(results[runtime].map((result) => result.events)),
      })
    }
  }
} finally {
  for (const proc of Object.values(workers)) proc.kill('SIGTERM')
  await server.close()
}

const fmt = (n) => Math.round(n).toLocaleString('en-US')
console.log(`\nWorker chunk rate: ${fmt(CHUNKS)} ctx.chunk() calls of ${CHUNK_BYTES} bytes per job, memory store, median of ${ROUNDS}\n`)
console.log('| worker                 | jobs at once | chunks/s (all jobs) | chunk events per job |')
console.log('|------------------------|-------------:|--------------------:|---------------------:|')
for (const row of rows) console.log(`| ${row.runtime.padEnd(22)} | ${String(row.jobs).padStart(12)} | ${fmt(row.rate).padStart(19)} | ${fmt(row.events).padStart(20)} |`)
for (const jobs of [1, PARALLEL]) {
  const [node, python] = rows.filter((row) => row.jobs === jobs)
  console.log(`\n${jobs} job(s) at once: Python reaches ${((python.rate / node.rate) * 100).toFixed(0)} % of Node's chunk rate`)
}
