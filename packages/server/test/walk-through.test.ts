import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { JobEvent, JobState } from '@jobwire/protocol'
import { cliPath, createJsonClient, makeTempDir, spawnServer, type JsonClient, type SpawnedServer } from './fixtures.js'

/**
 * The curl walk-through of the getting-started guide, run as written (bash and curl) against the
 * server a newcomer starts first: `jobwire serve --demo`. It used to answer 409 `lease_lost`: the
 * demo's in-process worker claimed the walk-through's `transcription` job, so the reader's own
 * progress reports had no lease. The walk-through's job is created with `"dispatch": false` (the
 * reader is its runner), so no worker ever claims it. An idle `jobwire demo-worker` (as the guide
 * suggests running beside the demo) stands ready, so an unclaimed dispatched job would be taken at once.
 */
const repo = fileURLToPath(new URL('../../../', import.meta.url))
const guide = `${repo}docs/getting-started.md`

function walkThroughScript(): string {
  const text = readFileSync(guide, 'utf8')
  if (!text.includes('## Walk-through with curl')) throw new Error(`no "Walk-through with curl" section in ${guide}`)
  const section = text.slice(text.indexOf('## Walk-through with curl'))
  const block = /```sh\n([\s\S]*?)```/.exec(section)
  if (block?.[1] === undefined) throw new Error(`no sh block under "Walk-through with curl" in ${guide}`)
  return block[1]
}

/** The script as a reader runs it, made checkable: every request must succeed, and a stream is read for a moment instead of in a second terminal. */
function runnable(script: string, url: string): string {
  const lines = script
    .replaceAll('http://127.0.0.1:7070', url)
    .replaceAll('curl -s ', 'curl -sS --fail-with-body ')
    .replaceAll('curl -N ', 'curl -sSN --max-time 2 ')
  // A stream read for 2 s ends with curl's "timed out" (28): that is the reader pressing Ctrl-C.
  const tolerant = lines
    .split('\n')
    .map((line) => (line.startsWith('curl -sSN --max-time 2 ') ? `${line} || [ $? -eq 28 ]` : line))
    .join('\n')
  return `set -euo pipefail\n${tolerant}\n`
}

function bash(script: string, cwd: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-c', script], { cwd, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()))
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
    child.once('error', reject)
    child.once('exit', (code) => resolve({ code, stdout, stderr }))
  })
}

describe('the getting-started curl walk-through against jobwire serve --demo', () => {
  let dir: Awaited<ReturnType<typeof makeTempDir>>
  let server: SpawnedServer
  let api: JsonClient
  let demoWorker: ChildProcess
  let demoWorkerLog = ''

  beforeAll(async () => {
    dir = await makeTempDir('jobwire-walk-through-')
    server = await spawnServer(['--demo', '--port', '0'], {}, dir.path)
    api = createJsonClient(server.url, server.key as string)
    demoWorker = spawn(process.execPath, [cliPath, 'demo-worker', '--url', server.url, '--concurrency', '20'], { cwd: dir.path, stdio: ['ignore', 'pipe', 'pipe'] })
    demoWorker.stdout?.on('data', (chunk: Buffer) => (demoWorkerLog += chunk.toString()))
    demoWorker.stderr?.on('data', (chunk: Buffer) => (demoWorkerLog += chunk.toString()))
  })

  afterAll(async () => {
    if (demoWorker?.exitCode === null) {
      const exited = new Promise((resolve) => demoWorker.once('exit', resolve))
      demoWorker.kill('SIGTERM')
      await exited
    }
    await api?.close()
    await server?.kill('SIGTERM')
    await dir?.remove()
  })

  it('runs as written, every request answered 2xx, while the demo worker runs transcriptions of its own', async () => {
    // The demo is busy first, and a demo worker with free slots stands ready for the walk-through's type.
    await expect.poll(() => demoWorkerLog, { timeout: 20_000 }).toContain('working on')
    await expect
      .poll(async () => (await api.call<{ jobs: JobState[] }>('GET', '/v1/jobs?status=running&owner=demo')).body.jobs.length, { timeout: 20_000 })
      .toBeGreaterThan(0)

    const result = await bash(runnable(walkThroughScript(), server.url), dir.path)
    expect(result.code, `${result.stdout}\n${result.stderr}`).toBe(0)
    expect(result.stdout).not.toContain('lease_lost')
    expect(result.stdout).toContain('{"events":[{"seq":4,"type":"item"},{"seq":5,"type":"chunk"}],"seq":5,"status":"running"}')

    const id = /^(job_\S+)$/m.exec(result.stdout)?.[1]
    expect(id, result.stdout).toBeDefined()
    const job = await api.call<JobState>('GET', `/v1/jobs/${id}`)
    expect(job.body).toMatchObject({ type: 'transcription', status: 'cancelled', owner: { tenant: 'acme', user: 'ann' } })
    // Started by the reader's first report (worker null), never claimed by a worker.
    const log = await api.call<{ events: JobEvent[] }>('GET', `/v1/jobs/${id}/events?after=0`)
    const started = log.body.events.filter((event) => event.type === 'started')
    expect(started.map((event) => event.data)).toEqual([{ attempt: 1, worker: null }])
  })
})
