import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { applyEvent, isTerminalEvent, type JobEvent, type JobState, type StreamMessage } from '@jobwire/protocol'
import { collect, createJsonClient, makeTempDir, readSse, spawnServer, type ChildExit } from './fixtures.js'
import { within } from '../../../test/support/wait.js'

/**
 * Real processes: a `jobwire serve` on SQLite (it imports dist, so `tsc -b` must have run) and
 * worker processes (test/fixtures/step-worker.mjs, plain fetch against the HTTP contract). A worker
 * is killed with SIGKILL mid-job; the server must notice its silence, re-queue the job, and let the
 * next worker pick it up from its last checkpoint, while a watcher sees one unbroken log.
 */
const apiKey = 'worker-kill-test-key-0123456789'
const workerScript = fileURLToPath(new URL('./fixtures/step-worker.mjs', import.meta.url))
const steps = 12
/** 12 steps of 250 ms: killed after step 9, the first worker has outlived its 2 s lease on heartbeats alone. */
const stepMs = 250
const killAfterStep = 9

interface WorkerLine {
  event: string
  worker: string
  jobId?: string
  attempt?: number
  checkpoint?: { step: number } | null
  from?: number
  step?: number
  seq?: number
}

interface WorkerProcess {
  child: ChildProcess
  readonly lines: readonly WorkerLine[]
  readonly stderr: string
  /** Resolves with the first line matching; rejects if the process exits before printing one. */
  waitFor(predicate: (line: WorkerLine) => boolean): Promise<WorkerLine>
  kill(signal: NodeJS.Signals): Promise<ChildExit>
  exited: Promise<ChildExit>
}

const cleanups: (() => Promise<unknown> | void)[] = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

function startWorker(url: string, type: string, name: string): WorkerProcess {
  const env: NodeJS.ProcessEnv = {}
  for (const [variable, value] of Object.entries(process.env)) if (!variable.startsWith('JOBWIRE_')) env[variable] = value
  Object.assign(env, {
    JOBWIRE_URL: url,
    JOBWIRE_API_KEY: apiKey,
    WORKER_TYPE: type,
    WORKER_NAME: name,
    WORKER_STEPS: String(steps),
    WORKER_STEP_MS: String(stepMs),
  })
  const child = spawn(process.execPath, [workerScript], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  const lines: WorkerLine[] = []
  let stderr = ''
  let pending = ''
  let waiters: (() => void)[] = []
  const notify = (): void => {
    const woken = waiters
    waiters = []
    for (const wake of woken) wake()
  }
  child.stdout.setEncoding('utf8')
  child.stderr.setEncoding('utf8')
  child.stdout.on('data', (chunk: string) => {
    pending += chunk
    for (let newline = pending.indexOf('\n'); newline !== -1; newline = pending.indexOf('\n')) {
      lines.push(JSON.parse(pending.slice(0, newline)) as WorkerLine)
      pending = pending.slice(newline + 1)
    }
    notify()
  })
  child.stderr.on('data', (chunk: string) => (stderr += chunk))
  let done = false
  const exited = new Promise<ChildExit>((resolve) => {
    child.once('exit', (code, signal) => {
      done = true
      notify()
      resolve({ code, signal })
    })
  })
  const kill = (signal: NodeJS.Signals): Promise<ChildExit> => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal)
    return exited
  }
  cleanups.push(() => kill('SIGKILL'))
  return {
    child,
    lines,
    get stderr() {
      return stderr
    },
    async waitFor(predicate) {
      for (;;) {
        const found = lines.find(predicate)
        if (found !== undefined) return found
        if (done) throw new Error(`worker ${name} exited without the awaited line:\n${JSON.stringify(lines)}\n${stderr}`)
        await new Promise<void>((resolve) => waiters.push(resolve))
      }
    },
    kill,
    exited,
  }
}

/** Guards a wait that would otherwise hang the test on a regression (not a speed check). */
describe('a worker killed with SIGKILL mid-job', () => {
  it('is detected by its lapsed lease; a second worker process resumes from the checkpoint and completes; a watcher sees one gapless history', async () => {
    const dir = await makeTempDir('jobwire-worker-kill-')
    cleanups.push(() => dir.remove())
    const server = await spawnServer(
      ['--port', '0', '--data-dir', dir.path, '--lease-time', '2s', '--lease-sweep-interval', '200ms'],
      { JOBWIRE_API_KEY: apiKey },
    )
    cleanups.push(() => server.kill('SIGKILL'))
    const client = createJsonClient(server.url, apiKey)
    cleanups.push(() => client.close())

    const type = 'resumable-steps'
    const created = await client.call<JobState>('POST', '/v1/jobs', { type, input: { steps } })
    expect(created.status).toBe(201)
    const jobId = created.body.id

    // The watcher connects before any worker exists and stays connected to the end.
    const watcher = readSse(`${server.url}/v1/jobs/${jobId}/stream?after=0`, { headers: { authorization: `Bearer ${apiKey}` } })
    cleanups.push(async () => void (await watcher.return(undefined)))
    expect((await within(watcher.next(), 'the watcher to connect', 20_000)).value).toEqual({ type: 'recovered', after: 0 })
    const watched = collect(watcher, (m) => m.type === 'event' && isTerminalEvent(m.event.type))

    const first = startWorker(server.url, type, 'first')
    expect(await within(first.waitFor((l) => l.event === 'claimed'), 'the first claim', 20_000)).toMatchObject({
      jobId,
      attempt: 1,
      checkpoint: null,
      from: 0,
    })
    await within(first.waitFor((l) => l.event === 'step' && l.step === killAfterStep), `step ${killAfterStep}`, 20_000)
    expect(await first.kill('SIGKILL')).toEqual({ code: null, signal: 'SIGKILL' })
    const stepsBeforeKill = first.lines.flatMap((l) => (l.event === 'step' ? [l.step] : []))
    expect(stepsBeforeKill).toEqual(Array.from({ length: stepsBeforeKill.length }, (_, i) => i + 1))

    const second = startWorker(server.url, type, 'second')
    const resumed = await within(second.waitFor((l) => l.event === 'claimed'), 'the second claim', 20_000)
    expect(resumed).toMatchObject({ jobId, attempt: 2 })
    // The checkpoint is the last step the server took: every step the first worker was told was
    // written, and perhaps one more whose answer the kill cut off.
    const resumedFrom = resumed.from ?? -1
    expect(resumed.checkpoint).toEqual({ step: resumedFrom })
    expect(resumedFrom).toBeGreaterThanOrEqual(stepsBeforeKill.length)
    expect(resumedFrom).toBeLessThanOrEqual(stepsBeforeKill.length + 1)
    await within(second.waitFor((l) => l.event === 'completed'), 'the second worker to complete', 20_000)
    expect(await within(second.exited, 'the second worker to exit', 20_000)).toEqual({ code: 0, signal: null })
    expect(second.lines.flatMap((l) => (l.event === 'step' ? [l.step] : []))).toEqual(
      Array.from({ length: steps - resumedFrom }, (_, i) => resumedFrom + 1 + i),
    )

    const messages: StreamMessage[] = await within(watched, 'the watcher to see the end', 20_000)
    const events: JobEvent[] = messages.flatMap((m) => (m.type === 'event' ? [m.event] : []))
    // Besides events, only queue positions may appear (while the job waited for the second worker).
    expect(messages.every((m) => m.type === 'event' || m.type === 'queue')).toBe(true)
    expect(events.map((e) => e.seq)).toEqual(Array.from({ length: events.length }, (_, i) => i + 1))
    const stepPairs = (n: number): string[] => Array.from({ length: n }, () => ['progress', 'checkpoint']).flat()
    expect(events.map((e) => e.type)).toEqual([
      'created',
      'started',
      ...stepPairs(resumedFrom),
      'requeued',
      'started',
      ...stepPairs(steps - resumedFrom),
      'completed',
    ])
    const requeued = events.find((e) => e.type === 'requeued')
    expect(requeued?.data).toEqual({ reason: 'worker_lost', attempt: 1, retryAt: null })
    expect(events.filter((e) => e.type === 'started').map((e) => e.data)).toEqual([
      { attempt: 1, worker: 'first' },
      { attempt: 2, worker: 'second' },
    ])
    // Every step was done once: 1..k by the first worker, k+1..12 by the second.
    const checkpoints = events.flatMap((e) => (e.type === 'checkpoint' ? [(e.data.data as { step: number }).step] : []))
    expect(checkpoints).toEqual(Array.from({ length: steps }, (_, i) => i + 1))
    const authors = events.flatMap((e) => (e.type === 'progress' ? [/by (\w+)$/.exec(e.data.message ?? '')?.[1]] : []))
    expect(authors).toEqual([...Array<string>(resumedFrom).fill('first'), ...Array<string>(steps - resumedFrom).fill('second')])

    // The watcher's rebuilt state is the job's.
    let state: JobState | null = null
    for (const event of events) state = applyEvent(state, event)
    const final = await client.call<JobState>('GET', `/v1/jobs/${jobId}`)
    expect(state).toEqual(final.body)
    expect(final.body).toMatchObject({
      status: 'completed',
      attempt: 2,
      checkpoint: { step: steps },
      result: { steps, resumedFrom, worker: 'second' },
    })
  })
})
