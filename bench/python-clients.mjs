// The Python SDK's cost per client: `node bench/python-clients.mjs` (part of `npm run bench`).
// Needs a built tree (npm run build) and the Python SDK installed (sdks/python/.venv, made by
// `npm run test:python`, or PYTHON=/path/to/python with `jobwire` importable); skips with a
// message without them. One memory-store Jobwire node; bench/python-clients.py does the rest:
// creates through a Backend made per request (BENCH_PY_CALLS, 300), and BENCH_PY_WATCHES (1,000)
// jobs watched at once with watch_job, each against what the SDK made before and the limit; and one
// job's BENCH_PY_CHUNKS (50,000) chunks of text followed from its first event (its log holds them all).
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { startJobwire } from './lib/jobwire.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const CALLS = process.env.BENCH_PY_CALLS ?? '300'
const WATCHES = process.env.BENCH_PY_WATCHES ?? '1000'
const CHUNKS = process.env.BENCH_PY_CHUNKS ?? '50000'
const API_KEY = 'bench-admin-key-0123456789'
const venvPython = join(here, '..', 'sdks', 'python', '.venv', 'bin', 'python')
const PYTHON = process.env.PYTHON ?? (existsSync(venvPython) ? venvPython : null)

if (PYTHON === null) {
  console.log('bench python-clients: SKIPPED — no sdks/python/.venv (run `npm run test:python` once, or set PYTHON)')
} else {
  const server = await startJobwire(API_KEY, { maxEventsPerJob: 10_000_000 })
  try {
    const code = await new Promise((resolve) => {
      const child = spawn(PYTHON, [join(here, 'python-clients.py'), server.url, API_KEY, CALLS, WATCHES, CHUNKS], { stdio: 'inherit' })
      child.once('exit', resolve)
    })
    if (code !== 0) process.exitCode = 1
  } finally {
    await server.close()
  }
}
