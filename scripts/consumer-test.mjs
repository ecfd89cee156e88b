#!/usr/bin/env node
// The consumer test: Jobwire as a team adopting it gets it. Every public package is packed
// (`npm pack`), and only those tarballs (plus third-party packages from the npm registry) are
// installed into a fresh folder outside the repository. There it:
//   1. starts the server from its `jobwire` bin and loads the dashboard it ships,
//   2. type-checks (strict) and runs a Node program that creates a job and mints a token with
//      @jobwire/backend, runs it with @jobwire/worker and follows it to completion with @jobwire/client,
//   3. type-checks (strict) and builds a small React app on @jobwire/react with Vite,
//   4. type-checks (strict) the code examples of every package's README, as shipped in its tarball,
//   5. bundles @jobwire/client and @jobwire/react for browsers and fails if either is above its
//      gzipped budget (sizeBudgets below),
//   6. builds the Python SDK's wheel, installs it (and nothing else of the repository) into a fresh
//      virtual environment, type-checks (mypy --strict) and runs a Python program there: backends
//      (async and blocking) create jobs, a Python worker runs them (async def and plain def
//      handlers), watchers follow them over SSE to completion.
// Usage: npm run test:consumer [-- --keep]   (--keep leaves the folder for a look)
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const repo = fileURLToPath(new URL('..', import.meta.url))
const keep = process.argv.includes('--keep')
const packages = ['protocol', 'backend', 'client', 'react', 'worker', 'server']

/**
 * Gzipped bytes of each browser bundle (minified ESM, every export kept; React external, @jobwire/client
 * inside @jobwire/react's). Measured 2026-12-04: client 13.8 kB and react 14.9 kB, then 15.4 kB and
 * 16.5 kB with per-job credentials; stage plans and metadata (in review) add about 0.6 kB more. The
 * budgets leave room for that and catch a jump (a dependency bundled by mistake). Raise one only on purpose.
 */
export const sizeBudgets = { '@jobwire/client': 18_000, '@jobwire/react': 19_500 }

/** The Node and Python programs each finish in seconds; one that hangs (a watch that never ends) is killed after this. */
const flowTimeoutMs = 120_000

const started = Date.now()
const step = (text) => console.log(`\n[consumer ${((Date.now() - started) / 1000).toFixed(0)}s] ${text}`)

function run(command, args, options = {}) {
  const result = spawnSync(command, args, { stdio: 'inherit', ...options })
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} exited ${result.status ?? result.signal} (in ${options.cwd ?? repo})`)
  return result
}

// --reuse DIR: a folder an earlier `--keep` run left, installed already (to work on the later steps).
const reuse = process.argv.includes('--reuse') ? process.argv[process.argv.indexOf('--reuse') + 1] : undefined
const root = reuse ?? mkdtempSync(join(tmpdir(), 'jobwire-consumer-'))
const tarballs = join(root, 'tarballs')
const app = join(root, 'app')

async function main() {
  let server = null
  let failed = false
  try {
    if (reuse === undefined) await packAndInstall()
    await useInstalled((running) => (server = running))
    step('passed')
  } catch (error) {
    failed = true
    console.error(`\nconsumer test FAILED: ${error instanceof Error ? error.message : error}`)
    if (server !== null) console.error(`server output:\n${server.log()}`)
  } finally {
    if (server !== null) await server.stop()
    if (keep || reuse !== undefined) console.log(`kept ${root}`)
    else rmSync(root, { recursive: true, force: true })
  }
  return failed ? 1 : 0
}

async function packAndInstall() {
  // --- Pack --------------------------------------------------------------------------------
  const built = packages.every((name) => existsSync(join(repo, `packages/${name}/dist/index.js`))) && existsSync(join(repo, 'packages/server/public/dashboard/index.html'))
  if (!built) {
    step('building (npm run build)')
    run('npm', ['run', 'build'], { cwd: repo })
  }
  step(`packing ${packages.length} packages into ${tarballs}`)
  mkdirSync(tarballs)
  run('npm', ['pack', '--silent', '--pack-destination', tarballs, ...packages.flatMap((name) => ['--workspace', `packages/${name}`])], { cwd: repo, stdio: ['ignore', 'ignore', 'inherit'] })
  const files = Object.fromEntries(
    packages.map((name) => {
      const file = readdirSync(tarballs).find((f) => f.startsWith(`jobwire-${name}-`) && f.endsWith('.tgz'))
      if (file === undefined) throw new Error(`npm pack made no tarball for @jobwire/${name}`)
      return [`@jobwire/${name}`, `file:../tarballs/${file}`]
    }),
  )
  checkTarballContents(files)

  // --- Install into a fresh folder -----------------------------------------------------------
  step(`installing the tarballs into ${app}`)
  mkdirSync(join(app, 'src'), { recursive: true })
  writeFileSync(
    join(app, 'package.json'),
    JSON.stringify(
      {
        name: 'jobwire-consumer',
        private: true,
        type: 'module',
        dependencies: { ...files, react: '^19.0.0', 'react-dom': '^19.0.0', ws: '^8.18.0' },
        devDependencies: { typescript: '^6.0.0', vite: '^8.0.0', '@types/node': '^20.0.0', '@types/react': '^19.0.0', '@types/react-dom': '^19.0.0', '@types/ws': '^8.0.0' },
        // Our packages depend on each other by version: these make sure those come from the tarballs too.
        overrides: files,
        allowScripts: { 'better-sqlite3': true },
      },
      null,
      2,
    ),
  )
  run('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: app })
  checkInstalledFromTarballs()
}

async function useInstalled(started) {

  // --- The server from its bin ---------------------------------------------------------------
  step('starting the server from node_modules/.bin/jobwire')
  const apiKey = 'consumer-test-admin-key-0123456789'
  const tokenSecret = 'consumer-test-token-secret-0123456789abcdef'
  const server = started(await startServer(['serve', '--port', '0', '--data-dir', join(app, 'data'), '--api-key', apiKey, '--token-secret', tokenSecret]))
  const page = await fetch(`${server.url}/`)
  const html = await page.text()
  if (!page.ok || !html.includes('<title>Jobwire</title>')) throw new Error(`GET / did not serve the dashboard (${page.status})`)
  const asset = /src="(\/assets\/[^"]+\.js)"/.exec(html)?.[1]
  if (asset === undefined || !(await fetch(`${server.url}${asset}`)).ok) throw new Error(`the dashboard's script ${asset} is not served`)
  console.log(`dashboard served at ${server.url}/ (script ${asset})`)

  // --- Backend + worker + client in Node, type-checked strict ------------------------------------
  step('type-checking (strict) and running a Node program on @jobwire/backend, worker and client')
  writeFileSync(join(app, 'tsconfig.node.json'), JSON.stringify({ compilerOptions: { strict: true, noUncheckedIndexedAccess: true, target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', rootDir: 'src', outDir: 'node-dist', types: ['node'], skipLibCheck: false }, include: ['src/flow.ts'] }, null, 2))
  writeFileSync(join(app, 'src/flow.ts'), flowSource)
  run(join(app, 'node_modules/.bin/tsc'), ['-p', 'tsconfig.node.json'], { cwd: app })
  run(process.execPath, ['node-dist/flow.js'], { cwd: app, env: { ...process.env, JOBWIRE_URL: server.url, JOBWIRE_API_KEY: apiKey, JOBWIRE_TOKEN_SECRET: tokenSecret }, timeout: flowTimeoutMs })

  usePythonWheel({ JOBWIRE_URL: server.url, JOBWIRE_API_KEY: apiKey, JOBWIRE_TOKEN_SECRET: tokenSecret })

  // --- The packages' README examples, as shipped, type-checked (strict) ------------------------------
  step('type-checking (strict) the code examples of every package README in the tarballs')
  const readmeFiles = []
  mkdirSync(join(app, 'readmes'), { recursive: true })
  for (const name of packages) {
    const readme = readFileSync(join(app, `node_modules/@jobwire/${name}/README.md`), 'utf8')
    for (const [index, block] of [...readme.matchAll(/```(ts|tsx)\n([\s\S]*?)```/g)].entries()) {
      const file = `readmes/${name}-${index + 1}.${block[1]}`
      writeFileSync(join(app, file), `${block[2]}\nexport {}\n`) // each block a module of its own
      readmeFiles.push(file)
    }
  }
  if (readmeFiles.length < packages.length) throw new Error(`only ${readmeFiles.length} code examples in ${packages.length} READMEs`)
  // skipLibCheck as most apps have it: ioredis's own .d.ts (a dependency of @jobwire/server) imports the untyped redis-errors.
  writeFileSync(join(app, 'tsconfig.readmes.json'), JSON.stringify({ compilerOptions: { strict: true, target: 'ES2022', module: 'ESNext', moduleResolution: 'Bundler', jsx: 'react-jsx', lib: ['ES2022', 'DOM'], types: ['node'], noEmit: true, skipLibCheck: true }, files: readmeFiles }, null, 2))
  run(join(app, 'node_modules/.bin/tsc'), ['-p', 'tsconfig.readmes.json'], { cwd: app })
  console.log(`${readmeFiles.length} README examples type-check: ${readmeFiles.join(', ')}`)

  // --- A React app with Vite --------------------------------------------------------------------
  step('type-checking (strict) and building a React app on @jobwire/react with Vite')
  writeFileSync(join(app, 'tsconfig.json'), JSON.stringify({ compilerOptions: { strict: true, noUncheckedIndexedAccess: true, target: 'ES2022', module: 'ESNext', moduleResolution: 'Bundler', jsx: 'react-jsx', lib: ['ES2022', 'DOM'], types: ['vite/client'], noEmit: true, skipLibCheck: false }, include: ['src/app.tsx'] }, null, 2))
  writeFileSync(join(app, 'index.html'), '<!doctype html>\n<html><head><title>Consumer</title></head><body><div id="root"></div><script type="module" src="/src/app.tsx"></script></body></html>\n')
  writeFileSync(join(app, 'src/app.tsx'), appSource)
  run(join(app, 'node_modules/.bin/tsc'), ['-p', 'tsconfig.json'], { cwd: app })
  run(join(app, 'node_modules/.bin/vite'), ['build', '--logLevel', 'warn'], { cwd: app })
  if (!readdirSync(join(app, 'dist/assets')).some((f) => f.endsWith('.js'))) throw new Error('vite build wrote no script')

  // --- Browser bundle sizes -----------------------------------------------------------------------
  step('bundling @jobwire/client and @jobwire/react for browsers (minified, gzipped)')
  writeFileSync(join(app, 'size.mjs'), sizeSource)
  const measured = JSON.parse(run(process.execPath, ['size.mjs'], { cwd: app, stdio: ['ignore', 'pipe', 'inherit'] }).stdout.toString())
  const over = []
  for (const [name, budget] of Object.entries(sizeBudgets)) {
    const { minified, gzipped } = measured[name]
    console.log(`${name.padEnd(16)} ${(minified / 1000).toFixed(1).padStart(6)} kB minified  ${(gzipped / 1000).toFixed(1).padStart(5)} kB gzipped  (budget ${(budget / 1000).toFixed(1)} kB gzipped)`)
    if (gzipped > budget) over.push(`${name} is ${gzipped} bytes gzipped, over its budget of ${budget}`)
  }
  if (over.length > 0) throw new Error(over.join('\n'))
}

/**
 * The Python SDK as `pip install jobwire` gives it: its wheel, built from sdks/python (pip fetches
 * hatchling from the package index into an isolated build environment), installed into a fresh
 * virtual environment with its dependencies from the index, and used there. Without python3 and
 * its venv module, or without the index, this step is skipped with a message, except in CI
 * (`CI` or `JOBWIRE_PYTHON_REQUIRED`), where it fails.
 */
function usePythonWheel(env) {
  const required = Boolean(process.env.JOBWIRE_PYTHON_REQUIRED) || (Boolean(process.env.CI) && process.env.CI !== 'false')
  const unavailable = (reason) => {
    if (required) throw new Error(`the Python SDK's wheel: ${reason} (CI must check it)`)
    console.log(`SKIPPED the Python SDK's wheel: ${reason}`)
  }
  const python = process.env.PYTHON ?? 'python3'
  const found = spawnSync(python, ['-c', 'import sys, venv, ensurepip; sys.exit(0 if sys.version_info >= (3, 10) else 1)'], { stdio: 'ignore' })
  if (found.status !== 0) return unavailable(`${python} >= 3.10 with venv is not installed`)
  step("building the Python SDK's wheel and installing it into a fresh virtual environment")
  const dir = join(root, 'python')
  const wheels = join(dir, 'wheels')
  mkdirSync(wheels, { recursive: true })
  const quiet = ['--quiet', '--disable-pip-version-check']
  // One retry (in the environment, so that the wheel's isolated build environment has it too):
  // where the package index cannot be reached but a local mirror or folder of wheels serves
  // (pip's find-links, extra-index-url), pip otherwise spends five retries per package on the index.
  const pipEnv = { ...process.env, PIP_RETRIES: process.env.PIP_RETRIES ?? '1' }
  const built = spawnSync(python, ['-m', 'pip', 'wheel', ...quiet, '--no-deps', '--wheel-dir', wheels, join(repo, 'sdks/python')], { stdio: 'inherit', env: pipEnv })
  if (built.status !== 0) return unavailable('pip could not build the wheel (offline? it fetches hatchling from the package index)')
  const wheel = readdirSync(wheels).find((file) => /^jobwire-.+-py3-none-any\.whl$/.test(file))
  if (wheel === undefined) throw new Error(`pip wheel made no jobwire wheel in ${wheels}: ${readdirSync(wheels).join(', ')}`)
  run(python, ['-c', wheelCheckSource, join(wheels, wheel)])
  const venv = join(dir, 'venv')
  run(python, ['-m', 'venv', venv])
  const venvPython = join(venv, 'bin/python')
  const installed = spawnSync(venvPython, ['-m', 'pip', 'install', ...quiet, join(wheels, wheel), 'mypy>=1.10'], { stdio: 'inherit', env: pipEnv })
  if (installed.status !== 0) return unavailable('pip could not install the wheel and its dependencies (offline?)')
  writeFileSync(join(dir, 'flow.py'), pythonFlowSource)
  // From the venv's site-packages, not the repository: run outside it, and say where it came from.
  const where = run(venvPython, ['-c', 'import jobwire, sys; print(jobwire.__file__)'], { cwd: dir, stdio: ['ignore', 'pipe', 'inherit'] }).stdout.toString().trim()
  if (!realpathSync(where).startsWith(realpathSync(venv))) throw new Error(`jobwire was imported from ${where}, not from the virtual environment ${venv}`)
  run(venvPython, ['-m', 'mypy', '--strict', '--no-incremental', 'flow.py'], { cwd: dir })
  run(venvPython, ['flow.py'], { cwd: dir, env: { ...process.env, ...env }, timeout: flowTimeoutMs })
  console.log(`the wheel ${wheel}: installed (jobwire from ${where}), flow.py type-checks (mypy --strict) and ran`)
}

/** Each tarball holds its built JS, types, README and LICENSE; the server's also its bin and the dashboard. */
function checkTarballContents(specs) {
  for (const [name, spec] of Object.entries(specs)) {
    const listing = spawnSync('tar', ['-tzf', join(tarballs, spec.replace('file:../tarballs/', ''))], { encoding: 'utf8' }).stdout.split('\n')
    const want = ['package/package.json', 'package/README.md', 'package/LICENSE', 'package/dist/index.js', 'package/dist/index.d.ts']
    // The server's Lua scripts are read next to dist/stores/redis/scripts.js (npm run build copies them there).
    if (name === '@jobwire/server') want.push('package/bin/jobwire.js', 'package/public/dashboard/index.html', 'package/dist/cli/main.js', 'package/dist/stores/redis/lua/commit.lua', 'package/dist/stores/redis/lua/lib/load.lua')
    const missing = want.filter((path) => !listing.includes(path))
    if (missing.length > 0) throw new Error(`${name}'s tarball lacks ${missing.join(', ')}`)
    const stray = listing.filter((path) => /(^package\/(test|node_modules)\/|\.tsbuildinfo$)/.test(path))
    if (stray.length > 0) throw new Error(`${name}'s tarball holds ${stray.join(', ')}`)
  }
}

/** Every @jobwire package in the fresh folder came from a tarball, none from a registry. */
function checkInstalledFromTarballs() {
  const lock = JSON.parse(readFileSync(join(app, 'package-lock.json'), 'utf8'))
  const ours = Object.entries(lock.packages).filter(([path]) => /(^|\/)node_modules\/@jobwire\//.test(path))
  const elsewhere = ours.filter(([, entry]) => !String(entry.resolved ?? '').startsWith('file:'))
  if (ours.length < packages.length || elsewhere.length > 0) throw new Error(`@jobwire packages not from the tarballs: ${JSON.stringify(elsewhere.map(([path, entry]) => [path, entry.resolved]))}`)
  console.log(`installed from tarballs: ${ours.map(([path]) => path.replace(/.*node_modules\//, '')).join(', ')}`)
}

function startServer(args) {
  return new Promise((resolve, reject) => {
    const child = spawn(join(app, 'node_modules/.bin/jobwire'), args, { cwd: app, env: { ...process.env, JOBWIRE_LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    const timer = setTimeout(() => reject(new Error(`jobwire serve printed no URL in 30 s:\n${output}`)), 30_000)
    const onData = (chunk) => {
      output += chunk.toString()
      const url = /listening on (http:\/\/\S+)/.exec(output)?.[1]
      if (url !== undefined) {
        clearTimeout(timer)
        resolve({
          url,
          log: () => output,
          stop: () =>
            new Promise((done) => {
              if (child.exitCode !== null) return done()
              child.once('exit', () => done())
              child.kill('SIGTERM')
            }),
        })
      }
    }
    child.stdout.on('data', onData)
    child.stderr.on('data', onData)
    child.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`jobwire serve exited ${code}:\n${output}`))
    })
  })
}

const flowSource = `// Node: a backend creates a job and mints a token, a worker runs it, a client follows it.
import assert from 'node:assert/strict'
import { JobwireBackend, mintSubscriptionToken, type JobState } from '@jobwire/backend'
import { createJobwireClient, type StateChange } from '@jobwire/client'
import { createWorker } from '@jobwire/worker'
import WebSocket from 'ws'

const url = process.env.JOBWIRE_URL ?? ''
const apiKey = process.env.JOBWIRE_API_KEY ?? ''
const secret = process.env.JOBWIRE_TOKEN_SECRET ?? ''

const backend = new JobwireBackend({ url, apiKey })
const worker = createWorker({ url, apiKey, name: 'consumer-worker', concurrency: 1 })
worker.handle<{ files: string[] }, { done: number }>('consumer-transcription', async (job, ctx) => {
  for (const [index, file] of job.input.files.entries()) {
    ctx.progress({ stage: 'transcribing', percent: (index / job.input.files.length) * 100, message: file })
    ctx.item(file, { label: file, status: 'completed', percent: 100 })
    ctx.chunk(\`\${file} done. \`)
    await ctx.checkpoint({ done: index + 1 })
  }
  return { words: job.input.files.length * 100 }
})

const job: JobState = await backend.createJob({ type: 'consumer-transcription', input: { files: ['a.mp3', 'b.wav'] }, owner: { tenant: 'acme', user: 'ann' } })
const { token } = mintSubscriptionToken({ secret, jobIds: [job.id], rights: ['read'] })

const client = createJobwireClient({ url, getToken: async () => token, WebSocket })
const connection: string[] = []
const seen: string[] = []
const watch = client.watchJob(job.id, { onConnection: (change: StateChange) => connection.push(\`\${change.to} (\${change.reason})\`) })
await worker.start() // the job runs while the client watches
let last: JobState | undefined
for await (const state of watch) {
  seen.push(state.status)
  last = state
}
await worker.stop({ timeoutMs: 5_000 })
client.close()

assert.equal(last?.status, 'completed')
assert.deepEqual(last?.result, { words: 200 })
assert.equal(last?.text, 'a.mp3 done. b.wav done. ')
assert.deepEqual(last?.items.map((item) => item.status), ['completed', 'completed'])
assert.ok(connection.some((change) => change.startsWith('live')), connection.join(', '))
console.log(JSON.stringify({ job: job.id, statuses: [...new Set(seen)], result: last?.result, connection }))
`

/** Checks a wheel's files (argument: its path): the package, its types marker, no tests. */
const wheelCheckSource = `
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
want = ["jobwire/__init__.py", "jobwire/py.typed", "jobwire/worker/__init__.py", "jobwire/watch.py", "jobwire/reducer.py"]
missing = [name for name in want if name not in names]
stray = [name for name in names if name.startswith("tests/") or "/tests/" in name or "__pycache__" in name]
if missing or stray:
    sys.exit(f"the wheel lacks {missing} or holds {stray}")
print(f"the wheel holds {len(names)} files, jobwire/py.typed among them")
`

const pythonFlowSource = `"""Python: a backend creates a job and mints a token, a worker runs it, a watcher follows it."""
import asyncio
import os
from typing import Any

from jobwire import AsyncBackend, Backend, JobContext, SyncJobContext, Worker, mint_subscription_token, watch_job

url = os.environ["JOBWIRE_URL"]
api_key = os.environ["JOBWIRE_API_KEY"]
secret = os.environ["JOBWIRE_TOKEN_SECRET"]


async def main() -> None:
    worker = Worker(url, api_key, name="consumer-python-worker", concurrency=2)

    @worker.handle("consumer-python")
    async def transcribe(job: dict[str, Any], ctx: JobContext) -> dict[str, int]:
        files: list[str] = job["input"]["files"]
        for index, file in enumerate(files):
            ctx.progress(stage="transcribing", percent=index * 100 / len(files), message=file)
            ctx.item(file, label=file, status="completed", percent=100)
            ctx.chunk(f"{file} done. ")
            await ctx.checkpoint({"done": index + 1})
        return {"words": len(files) * 100}

    # A plain def handler runs in a thread, with the blocking context.
    @worker.handle("consumer-python-sync")
    def count(job: dict[str, Any], ctx: SyncJobContext) -> int:
        ctx.progress(stage="counting", percent=50)
        ctx.checkpoint({"half": True})
        return len(job["input"]["words"])

    with Backend(url, api_key) as blocking:
        counted = blocking.create_job("consumer-python-sync", input={"words": ["a", "b", "c"]})

    async with AsyncBackend(url, api_key) as backend:
        job = await backend.create_job("consumer-python", input={"files": ["a.mp3", "b.wav"]}, owner={"tenant": "acme", "user": "ann"})
    token = mint_subscription_token(secret, job_ids=[job["id"]]).token
    await worker.start()
    statuses: list[str] = []
    last: dict[str, Any] = {}
    async for update in watch_job(url, job["id"], token):
        statuses.append(update.state["status"])
        last = dict(update.state)
    synced: dict[str, Any] = {}
    async for update in watch_job(url, counted["id"], api_key):
        synced = dict(update.state)
    await worker.stop(timeout=5)
    assert last["status"] == "completed", last
    assert last["result"] == {"words": 200}, last["result"]
    assert last["text"] == "a.mp3 done. b.wav done. ", last["text"]
    assert [item["status"] for item in last["items"]] == ["completed", "completed"], last["items"]
    assert synced["status"] == "completed" and synced["result"] == 3, synced
    print({"job": job["id"], "statuses": sorted(set(statuses)), "result": last["result"], "sync_result": synced["result"]})


asyncio.run(main())
`

const appSource = `// A small React app on @jobwire/react: a job's page with its progress, items and text.
import { StrictMode } from 'react'
import { createRoot } from 'react-dom/client'
import { createJobwireClient, JobwireProvider, useJob, useMyJobs, type JobState } from '@jobwire/react'

const jobwire = createJobwireClient({
  url: import.meta.env.VITE_JOBWIRE_URL ?? 'http://127.0.0.1:7070',
  getToken: async () => {
    const response = await fetch('/api/jobwire-token', { method: 'POST' })
    const body = (await response.json()) as { token: string }
    return body.token
  },
})

function Items({ items }: { items: JobState['items'] }) {
  return <ul>{items.map((item) => <li key={item.id}>{item.label ?? item.id}: {item.status} {item.percent ?? 0}%</li>)}</ul>
}

function Job({ jobId }: { jobId: string }) {
  const job = useJob(jobId)
  switch (job.status) {
    case 'idle':
    case 'loading': return <p>Loading…</p>
    case 'queued': return <p>Queued, {job.queuePosition ?? 0} ahead</p>
    case 'running': return <section><p>{job.progress.stage}: {Math.round(job.progress.percent ?? 0)}%</p><Items items={job.items} /><pre>{job.text}</pre><button onClick={() => void job.cancel()}>Cancel</button></section>
    case 'completed': return <pre>{JSON.stringify(job.result)}</pre>
    case 'failed': return <p>Failed: {job.error.message}</p>
    case 'cancelled': return <p>Cancelled</p>
    case 'error': return <p>Cannot show this job ({job.error.code})</p>
  }
}

function MyJobs() {
  const mine = useMyJobs()
  return <p>{mine.status === 'ready' ? mine.jobs.length : 0} jobs</p>
}

const root = document.getElementById('root')
if (root === null) throw new Error('no #root')
createRoot(root).render(
  <StrictMode>
    <JobwireProvider client={jobwire}>
      <MyJobs />
      <Job jobId={new URLSearchParams(location.search).get('job') ?? ''} />
    </JobwireProvider>
  </StrictMode>,
)
`

const sizeSource = `// Browser bundles of the two packages a web app ships: minified ESM, every export kept, gzipped.
import { writeFileSync } from 'node:fs'
import { gzipSync } from 'node:zlib'
import { build } from 'vite'

const sizes = {}
for (const name of ['@jobwire/client', '@jobwire/react']) {
  const entry = \`size-entry-\${name.replace('@jobwire/', '')}.js\`
  writeFileSync(entry, \`export * from '\${name}'\\n\`)
  const output = await build({
    configFile: false,
    logLevel: 'silent',
    build: {
      write: false,
      minify: true,
      target: 'es2022',
      lib: { entry, formats: ['es'], fileName: 'bundle' },
      rollupOptions: { external: ['react', 'react/jsx-runtime', 'react-dom'] },
    },
  })
  const chunks = (Array.isArray(output) ? output : [output]).flatMap((result) => result.output).filter((file) => file.type === 'chunk')
  const code = chunks.map((chunk) => chunk.code).join('\\n')
  sizes[name] = { minified: Buffer.byteLength(code), gzipped: gzipSync(code, { level: 9 }).length }
}
console.log(JSON.stringify(sizes))
`

process.exitCode = await main()
