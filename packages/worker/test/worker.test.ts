import { isTerminal, type JobEvent, type JobState } from '@jobwire/protocol'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createWorker, JobAbortedError, JobFailure, RetryableError, WorkerRequestError, type AbortReason } from '../src/index.js'
import { codeOf, ManualTimers, reduceLog, settle, startTestServer, startTestWorker, until, withWorker, type TestServer } from './harness.js'

let t: TestServer

beforeAll(async () => {
  // Retryable failures re-queue at once, and logs are never trimmed, so each test sees every event.
  t = await startTestServer({ retryBackoff: 0, maxEventsPerJob: 100_000 })
})

afterAll(async () => {
  await t.close()
})

/**
 * A `fetch` that answers, as a server from before `field` does (its schema refuses the unknown
 * field), the requests whose path `onPath` accepts and whose body has it; each such body goes in `sent`.
 */
function olderServer(onPath: (path: string) => boolean, field: string, sent: Record<string, unknown>[]): typeof fetch {
  return async (input, init) => {
    if (onPath(new URL(String(input)).pathname)) {
      const body = JSON.parse(String(init?.body)) as Record<string, unknown>
      sent.push(body)
      if (field in body) {
        const error = { code: 'invalid_request', message: `${field}: unknown field`, details: { field, reason: `${field}: unknown field` } }
        return new Response(JSON.stringify({ error }), { status: 400, headers: { 'content-type': 'application/json' } })
      }
    }
    return fetch(input, init)
  }
}

function signalled<T = void>(): { promise: Promise<T>; resolve(value: T): void } {
  let resolve!: (value: T) => void
  const promise = new Promise<T>((r) => (resolve = r))
  return { promise, resolve }
}

const ofType = <K extends JobEvent['type']>(log: JobEvent[], type: K) =>
  log.filter((event): event is Extract<JobEvent, { type: K }> => event.type === type)

/** The log is a contiguous sequence from 1, and the reducer over it gives the job's snapshot. */
function expectConsistent(job: JobState, log: JobEvent[]): void {
  expect(log.map((event) => event.seq)).toEqual(log.map((_, index) => index + 1))
  expect(reduceLog(log)).toEqual(job)
}

describe('reports reach watchers', () => {
  it("delivers a handler's progress, items, text, checkpoint and result exactly", async () => {
    const { worker, errors } = startTestWorker(t)
    worker.handle<{ files: string[] }, { nextFile: number }>('exact', async (job, ctx) => {
      ctx.progress({ stage: 'validating', percent: 0, message: 'Checking input' })
      ctx.progress({ stage: 'decoding', percent: 12, message: 'Decoding audio…' })
      ctx.item('file-1', { label: 'a.mp3', status: 'running', percent: 40 })
      ctx.item('file-2', { label: 'b.mp3', status: 'pending' })
      ctx.chunk('Hello ')
      ctx.chunk('world')
      await ctx.checkpoint({ nextFile: 2 })
      ctx.item('file-1', { status: 'completed', percent: 100 })
      ctx.progress({ stage: 'transcribing', percent: 50, message: 'Transcribing b.mp3' })
      ctx.chunk('!')
      return { files: job.input.files.length }
    })
    await withWorker(worker, async () => {
      const { id } = await t.createJob('exact', { files: ['a.mp3', 'b.mp3'] })
      const job = await t.waitForJob(id, (j) => isTerminal(j.status))
      const log = await t.events(id)

      expect(job).toMatchObject({
        status: 'completed',
        result: { files: 2 },
        text: 'Hello world!',
        checkpoint: { nextFile: 2 },
        attempt: 1,
        worker: 'test-worker',
        error: null,
        progress: { stage: 'transcribing', percent: 100, message: 'Transcribing b.mp3' },
      })
      expect(job.stages.map((s) => s.stage)).toEqual(['validating', 'decoding', 'transcribing'])
      expect(job.items.map(({ id: itemId, label, status, percent }) => ({ itemId, label, status, percent }))).toEqual([
        { itemId: 'file-1', label: 'a.mp3', status: 'completed', percent: 100 },
        { itemId: 'file-2', label: 'b.mp3', status: 'pending', percent: null },
      ])
      expectConsistent(job, log)
      expect(log.slice(0, 2).map((e) => e.type)).toEqual(['created', 'started'])
      expect(log.at(-1)?.type).toBe('completed')
      expect(ofType(log, 'checkpoint')).toHaveLength(1)
      // The checkpoint was durable after the text reported before it, and before the text after it.
      const checkpointSeq = ofType(log, 'checkpoint')[0]?.seq ?? 0
      expect(ofType(log, 'chunk').filter((e) => e.seq < checkpointSeq).map((e) => e.data.text).join('')).toBe('Hello world')
    })
    expect(errors).toEqual([])
  })

  it('splits 1.5 MB of text into events and batches the server accepts, losing nothing', async () => {
    const { worker, errors } = startTestWorker(t)
    const text = 'Grüße, 世界! 😀 "quoted" \\ \n'.repeat(50_000)
    worker.handle('long-text', (_job, ctx) => {
      ctx.chunk(text)
      return 'ok'
    })
    await withWorker(worker, async () => {
      const { id } = await t.createJob('long-text')
      const job = await t.waitForJob(id, (j) => isTerminal(j.status))
      const chunks = ofType(await t.events(id), 'chunk')
      expect(job.status).toBe('completed')
      expect(job.text).toBe(text)
      expect(chunks.length).toBeGreaterThan(1)
      for (const chunk of chunks) expect(Buffer.byteLength(JSON.stringify({ type: 'chunk', text: chunk.data.text }))).toBeLessThanOrEqual(60_000)
    })
    expect(errors).toEqual([])
  })

  it('coalesces 10,000 progress and item calls into a bounded number of events, and every stage arrives', async () => {
    const throttleMs = 20
    const stages = ['validating', 'decoding', 'transcribing', 'synthesizing', 'packaging']
    const perStage = 2_000
    const { worker, errors } = startTestWorker(t, { throttleMs })
    let elapsedMs = 0
    worker.handle('throttled', async (_job, ctx) => {
      const started = performance.now()
      for (let i = 0; i < stages.length * perStage; i++) {
        const stage = stages[Math.floor(i / perStage)] as string
        ctx.progress({ stage, percent: (i % perStage) / (perStage / 100), message: `call ${i}` })
        ctx.item(`file-${i % 10}`, { percent: (i % perStage) / (perStage / 100), message: `call ${i}` })
        // Yield now and then, so sends and throttle windows happen while the calls go on.
        if (i % 100 === 99) await new Promise((resolve) => setImmediate(resolve))
      }
      elapsedMs = performance.now() - started
      return 'done'
    })
    await withWorker(worker, async () => {
      const { id } = await t.createJob('throttled')
      const job = await t.waitForJob(id, (j) => isTerminal(j.status))
      const log = await t.events(id)
      const progress = ofType(log, 'progress')
      const items = ofType(log, 'item')
      console.log(`10,000 progress + 10,000 item calls in ${elapsedMs.toFixed(0)} ms -> ${progress.length} progress and ${items.length} item events`)

      expect(job.status).toBe('completed')
      expectConsistent(job, log)
      // Each throttle window sends at most one progress and one update per item; each stage
      // change adds the new stage plus the flush of the previous stage's last values.
      const windows = Math.ceil(elapsedMs / throttleMs) + 1
      expect(progress.length).toBeLessThanOrEqual(windows + 2 * stages.length)
      expect(items.length).toBeLessThanOrEqual(10 * (windows + stages.length))
      expect(job.stages.map((s) => s.stage)).toEqual(stages)
      // No stage is left before its last values arrived: the last progress of each stage is its last call.
      for (const [index, stage] of stages.entries()) {
        const ofStage = progress.filter((e) => stageAt(progress, e) === stage)
        expect(ofStage.at(-1)?.data.message).toBe(`call ${(index + 1) * perStage - 1}`)
      }
      expect(job.items.map((item) => item.message)).toEqual(
        Array.from({ length: 10 }, (_, n) => `call ${stages.length * perStage - 10 + n}`),
      )
    })
    expect(errors).toEqual([])
  })
})

/** The stage a progress event belongs to (the last stage set at or before it). */
function stageAt(progress: Extract<JobEvent, { type: 'progress' }>[], event: Extract<JobEvent, { type: 'progress' }>): string | undefined {
  let stage: string | undefined
  for (const e of progress) {
    if (e.data.stage !== undefined) stage = e.data.stage
    if (e === event) return stage
  }
  return undefined
}

describe('many jobs in one worker', () => {
  it('sends the reports of jobs due together in one bulk request, each job exact; a refused job fails alone', async () => {
    const small = await startTestServer({ maxTextLength: 100, maxEventsPerJob: 100_000 })
    const paths: string[] = []
    const recordingFetch: typeof fetch = (input, init) => {
      paths.push(new URL(String(input)).pathname)
      return fetch(input, init)
    }
    try {
      const { worker, errors } = startTestWorker(small, { concurrency: 12, throttleMs: 40, fetch: recordingFetch })
      const started = signalled()
      let running = 0
      worker.handle<{ n: number; bad: boolean }>('many', async (job, ctx) => {
        // Every job starts reporting at once, so their throttled sends come due together.
        if (++running === 12) started.resolve()
        await started.promise
        for (let round = 0; round < 5; round++) {
          ctx.progress({ stage: `round ${round}`, percent: round * 20 })
          ctx.chunk(job.input.bad && round === 3 ? 'x'.repeat(120) : `${job.input.n}.${round} `)
          await new Promise((resolve) => setTimeout(resolve, 15))
        }
        return { n: job.input.n }
      })
      await withWorker(worker, async () => {
        const jobs = await Promise.all(Array.from({ length: 12 }, (_, n) => small.createJob('many', { n, bad: n === 5 })))
        const done = await Promise.all(jobs.map((job) => small.waitForJob(job.id, (j) => isTerminal(j.status))))
        for (const [n, job] of done.entries()) {
          if (n === 5) {
            expect(job).toMatchObject({ status: 'failed', error: { code: 'text_limit_exceeded' } })
            continue
          }
          expect(job).toMatchObject({ status: 'completed', result: { n }, text: [0, 1, 2, 3, 4].map((r) => `${n}.${r} `).join('') })
          expect(job.stages.map((stage) => stage.stage)).toEqual(['round 0', 'round 1', 'round 2', 'round 3', 'round 4'])
          expectConsistent(job, await small.events(job.id))
        }
      })
      const bulk = paths.filter((path) => path === '/v1/events').length
      const single = paths.filter((path) => /^\/v1\/jobs\/[^/]+\/events$/.test(path)).length
      expect(bulk).toBeGreaterThan(0)
      // Far fewer requests than one per job per send: most reports shared a request.
      expect(bulk + single).toBeLessThan(12 * 5)
      expect(errors.map((e) => [e.context.operation, e.context.jobId !== undefined, codeOf(e.error)])).toEqual([['events', true, 'text_limit_exceeded']])
    } finally {
      await small.close()
    }
  })
})

describe('many jobs in one worker: bulkWrites false', () => {
  it('sends one request per job and send, never POST /v1/events', async () => {
    const paths: string[] = []
    const recordingFetch: typeof fetch = (input, init) => {
      paths.push(new URL(String(input)).pathname)
      return fetch(input, init)
    }
    const { worker, errors } = startTestWorker(t, { concurrency: 4, throttleMs: 20, fetch: recordingFetch, bulkWrites: false })
    worker.handle<{ n: number }>('many-single', async (job, ctx) => {
      ctx.chunk(`${job.input.n}`)
      await ctx.flush()
      return null
    })
    await withWorker(worker, async () => {
      const jobs = await Promise.all(Array.from({ length: 4 }, (_, n) => t.createJob('many-single', { n })))
      const done = await Promise.all(jobs.map((job) => t.waitForJob(job.id, (j) => isTerminal(j.status))))
      expect(done.map((job) => [job.status, job.text])).toEqual([0, 1, 2, 3].map((n) => ['completed', `${n}`]))
    })
    expect(paths).not.toContain('/v1/events')
    expect(errors).toEqual([])
  })
})

describe('a flaky network', () => {
  it('says a server that is not there in one line per attempt, by default, naming the operation once', async () => {
    const lines: string[] = []
    const said = signalled()
    const original = console.warn
    console.warn = (line: string) => {
      lines.push(line)
      said.resolve()
    }
    try {
      // Port 9 (discard) refuses connections here.
      const worker = createWorker({ url: 'http://127.0.0.1:9', apiKey: 'jw_not_a_key_at_all', pollWaitSeconds: 1 })
      worker.handle('nowhere', async () => null)
      await withWorker(worker, () => said.promise)
    } finally {
      console.warn = original
    }
    expect(lines[0]).toMatch(/^jobwire worker: claim: connect ECONNREFUSED 127\.0\.0\.1:9$/)
  })

  it('loses, duplicates and reorders nothing when requests fail before or after the server applied them', async () => {
    // Per endpoint, the 2nd of every 5 requests is lost on the way and the 4th's answer is lost
    // on the way back (after the server applied it). Claims only ever lose the request.
    const counts = new Map<string, number>()
    let failedBefore = 0
    let failedAfter = 0
    let duplicates = 0
    const flaky: typeof fetch = async (input, init) => {
      const endpoint = String(input).replace(/job_[\w-]+/, ':id')
      const n = (counts.get(endpoint) ?? 0) + 1
      counts.set(endpoint, n)
      if (n % 5 === 2) {
        failedBefore++
        throw new TypeError('fetch failed (request lost)')
      }
      const response = await fetch(input, init)
      const text = await response.text()
      if (text.includes('"duplicate":true')) duplicates++
      if (n % 5 === 4 && !endpoint.endsWith('/claim')) {
        failedAfter++
        throw new TypeError('fetch failed (answer lost)')
      }
      return new Response(text === '' ? null : text, { status: response.status, headers: response.headers })
    }
    const { worker, errors } = startTestWorker(t, { fetch: flaky, throttleMs: 2 })
    const expected: string[] = []
    worker.handle<unknown, { written: number }>('flaky', async (_job, ctx) => {
      for (let i = 0; i < 1_500; i++) {
        const piece = `<${i}>`
        expected.push(piece)
        ctx.chunk(piece)
        if (i % 100 === 0) ctx.progress({ stage: `part-${i / 100}`, percent: 0 })
        if (i % 250 === 249) await ctx.checkpoint({ written: i + 1 })
        if (i % 10 === 9) await new Promise((resolve) => setTimeout(resolve, 1))
      }
      return { pieces: 1_500 }
    })
    await withWorker(worker, async () => {
      const { id } = await t.createJob('flaky')
      const job = await t.waitForJob(id, (j) => isTerminal(j.status))
      const log = await t.events(id)
      console.log(`flaky network: ${failedBefore} requests lost, ${failedAfter} answers lost, ${duplicates} batches answered as duplicates, ${ofType(log, 'chunk').length} chunk events`)

      expect(job).toMatchObject({ status: 'completed', result: { pieces: 1_500 }, checkpoint: { written: 1_500 }, attempt: 1 })
      expect(job.text).toBe(expected.join(''))
      expectConsistent(job, log)
      expect(ofType(log, 'chunk').map((e) => e.data.text).join('')).toBe(expected.join(''))
      expect(ofType(log, 'checkpoint').map((e) => (e.data.data as { written: number }).written)).toEqual([250, 500, 750, 1000, 1250, 1500])
      expect(job.stages.map((s) => s.stage)).toEqual(Array.from({ length: 15 }, (_, n) => `part-${n}`))
      expect(ofType(log, 'started')).toHaveLength(1)
    })
    // The flakiness was exercised: batches were retried, and some retries found their batch applied.
    expect(errors.filter((e) => e.context.operation === 'events').length).toBeGreaterThan(0)
    expect(duplicates).toBeGreaterThan(0)
  })
})

describe('cancel, failures and retries', () => {
  it('aborts ctx.signal when the job is cancelled and reports nothing after it', async () => {
    const { worker, errors } = startTestWorker(t)
    const running = signalled()
    const aborted = signalled<{ at: number; reason: unknown }>()
    worker.handle('cancellable', async (_job, ctx) => {
      running.resolve()
      await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve, { once: true }))
      aborted.resolve({ at: performance.now(), reason: ctx.signal.reason })
      ctx.chunk('too late')
      return 'not reported'
    })
    await withWorker(worker, async () => {
      const { id } = await t.createJob('cancellable')
      await running.promise
      const cancelledAt = performance.now()
      expect(await t.cancel(id)).toBe(200)
      const { at, reason } = await aborted.promise
      console.log(`cancel -> ctx.signal abort: ${(at - cancelledAt).toFixed(1)} ms`)

      expect(reason).toBeInstanceOf(JobAbortedError)
      expect((reason as JobAbortedError).reason).toBe<AbortReason>('cancelled')
      await t.waitForJob(id, () => worker.activeJobs === 0)
      const job = await t.getJob(id)
      const log = await t.events(id)
      expect(job.status).toBe('cancelled')
      expect(job.text).toBe('')
      expect(log.at(-1)?.type).toBe('cancelled')
    })
    expect(errors).toEqual([])
  })

  it('restarts its signals long-poll with a job it claims during one, so that job\'s cancel arrives without waiting out the poll', async () => {
    const polls: { jobs: string[]; outcome: 'pending' | 'answered' | 'aborted' | 'failed' }[] = []
    const recording: typeof fetch = async (input, init) => {
      if (new URL(String(input)).pathname !== '/v1/workers/signals') return fetch(input, init)
      const poll: (typeof polls)[number] = { jobs: (JSON.parse(String(init?.body)) as { jobs: { id: string }[] }).jobs.map((job) => job.id), outcome: 'pending' }
      polls.push(poll)
      try {
        const response = await fetch(input, init)
        poll.outcome = 'answered'
        return response
      } catch (error) {
        poll.outcome = init?.signal?.aborted === true ? 'aborted' : 'failed'
        throw error
      }
    }
    // A poll the server holds for 30 s: only a restart lets the second job in before that.
    const { worker, errors } = startTestWorker(t, { concurrency: 2, pollWaitSeconds: 30, fetch: recording })
    const aborted = new Map<string, ReturnType<typeof signalled>>()
    worker.handle('held', async (job, ctx) => {
      await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve, { once: true }))
      aborted.get(job.id)?.resolve(undefined)
      return null
    })
    await withWorker(worker, async () => {
      const first = await t.createJob('held')
      await until(() => polls.some((poll) => poll.jobs.includes(first.id)), 'a signals poll for the first job')
      const second = await t.createJob('held')
      aborted.set(second.id, signalled())
      await until(() => polls.some((poll) => poll.jobs.includes(second.id)), 'a signals poll that lists the second job')
      expect(await t.cancel(second.id)).toBe(200)
      await aborted.get(second.id)?.promise
      // The poll that listed the first job alone was cut by the worker, not answered after its 30 s.
      expect(polls[0]).toEqual({ jobs: [first.id], outcome: 'aborted' })
      expect(polls[1]?.jobs.sort()).toEqual([first.id, second.id].sort())
      aborted.set(first.id, signalled())
      expect(await t.cancel(first.id)).toBe(200)
      await aborted.get(first.id)?.promise
    })
    expect(errors).toEqual([])
  })

  it('fails the job with the code and message of what the handler threw', async () => {
    const { worker, errors } = startTestWorker(t)
    worker.handle<{ kind: string }>('throwing', (job) => {
      if (job.input.kind === 'coded') throw Object.assign(new Error('cannot decode b.mp3'), { code: 'decode_error' })
      if (job.input.kind === 'failure') throw new JobFailure('bad_input', 'files must not be empty')
      throw new Error('boom')
    })
    await withWorker(worker, async () => {
      const ids = await Promise.all(['coded', 'failure', 'plain'].map(async (kind) => (await t.createJob('throwing', { kind })).id))
      const jobs = await Promise.all(ids.map((id) => t.waitForJob(id, (j) => isTerminal(j.status))))
      expect(jobs.map((job) => [job.status, job.error])).toEqual([
        ['failed', { code: 'decode_error', message: 'cannot decode b.mp3', retryable: false }],
        ['failed', { code: 'bad_input', message: 'files must not be empty', retryable: false }],
        ['failed', { code: 'handler_error', message: 'boom', retryable: false }],
      ])
    })
    expect(errors.map((e) => e.context.operation)).toEqual(['handler', 'handler', 'handler'])
  })

  it('re-queues a job that threw RetryableError and runs it again from its checkpoint', async () => {
    const { worker } = startTestWorker(t)
    const attempts: { attempt: number; checkpoint: unknown }[] = []
    worker.handle<unknown, { step: number }>('retried', async (job, ctx) => {
      attempts.push({ attempt: job.attempt, checkpoint: job.checkpoint })
      if (job.attempt === 1) {
        await ctx.checkpoint({ step: 1 })
        throw new RetryableError('upstream timed out', { code: 'upstream_timeout' })
      }
      return { resumedFrom: job.checkpoint }
    })
    await withWorker(worker, async () => {
      const { id } = await t.createJob('retried')
      const job = await t.waitForJob(id, (j) => isTerminal(j.status))
      const log = await t.events(id)
      expect(job).toMatchObject({ status: 'completed', attempt: 2, result: { resumedFrom: { step: 1 } }, error: null })
      expect(attempts).toEqual([
        { attempt: 1, checkpoint: null },
        { attempt: 2, checkpoint: { step: 1 } },
      ])
      expect(ofType(log, 'requeued').map((e) => e.data.reason)).toEqual(['upstream_timeout'])
      expect(ofType(log, 'started')).toHaveLength(2)
      expectConsistent(job, log)
    })
  })

  it("fails the job with the server's code when it refuses a batch, and aborts the handler with rejected", async () => {
    const small = await startTestServer({ maxTextLength: 100 })
    try {
      const { worker, errors } = startTestWorker(small)
      let reason: unknown
      worker.handle('too-long', async (_job, ctx) => {
        ctx.chunk('x'.repeat(60))
        await ctx.flush()
        ctx.chunk('y'.repeat(60))
        await ctx.flush().catch(() => {})
        reason = (ctx.signal.reason as JobAbortedError | undefined)?.reason
        return 'not reported'
      })
      await withWorker(worker, async () => {
        const { id } = await small.createJob('too-long')
        const job = await small.waitForJob(id, (j) => isTerminal(j.status))
        expect(job).toMatchObject({ status: 'failed', text: 'x'.repeat(60), error: { code: 'text_limit_exceeded', retryable: false } })
        expectConsistent(job, await small.events(id))
      })
      expect(reason).toBe('rejected')
      expect(errors.map((e) => [e.context.operation, codeOf(e.error)])).toEqual([['events', 'text_limit_exceeded']])
    } finally {
      await small.close()
    }
  })

  it('heartbeats a job that runs past a third of its lease, and sends none for a job that ends before', async () => {
    const heartbeats = new Map<string, number>()
    const counting: typeof fetch = async (input, init) => {
      const match = /\/v1\/jobs\/([^/]+)\/heartbeat$/.exec(String(input))
      if (match !== null) heartbeats.set(match[1] as string, (heartbeats.get(match[1] as string) ?? 0) + 1)
      return fetch(input, init)
    }
    const { worker } = startTestWorker(t, { fetch: counting, leaseMs: 1_000, concurrency: 2 })
    worker.handle('beats', async (job) => {
      if (job.input === 'quick') return 'quick'
      // More than the lease (1 s): it lapses unless heartbeats extend it.
      await new Promise((resolve) => setTimeout(resolve, 1_200))
      return 'long'
    })
    await withWorker(worker, async () => {
      const long = await t.createJob('beats', 'long')
      const quick = await t.createJob('beats', 'quick')
      expect(await t.waitForJob(quick.id, (j) => isTerminal(j.status))).toMatchObject({ status: 'completed', result: 'quick' })
      expect(await t.waitForJob(long.id, (j) => isTerminal(j.status))).toMatchObject({ status: 'completed', result: 'long', attempt: 1 })
      expect(heartbeats.get(quick.id)).toBeUndefined()
      expect(heartbeats.get(long.id) ?? 0).toBeGreaterThanOrEqual(2)
    })
  })

  it("retries a refused heartbeat after the server's Retry-After (not its own 100 ms backoff), and keeps the lease", async () => {
    // The first heartbeat is answered as an overloaded node answers (503, Retry-After: 1); the
    // worker's own backoff (from 100 ms) would ask again ten times sooner.
    const sentAt: number[] = []
    const refuseFirst: typeof fetch = async (input, init) => {
      if (String(input).endsWith('/heartbeat')) {
        sentAt.push(performance.now())
        if (sentAt.length === 1) {
          const body = { error: { code: 'overloaded', message: 'busy', details: { bytes: 1, size: 1, limit: 1, retryAfter: 1 } } }
          return new Response(JSON.stringify(body), { status: 503, headers: { 'content-type': 'application/json', 'retry-after': '1' } })
        }
      }
      return fetch(input, init)
    }
    const { worker, errors } = startTestWorker(t, { fetch: refuseFirst, leaseMs: 9_000 })
    worker.handle('beats-refused', async () => {
      // Past the first heartbeat (at 3 s) and its retry (at 4 s; the lease lasts until 9 s).
      while (sentAt.length < 2) await new Promise((resolve) => setTimeout(resolve, 50))
      return 'kept'
    })
    await withWorker(worker, async () => {
      const { id } = await t.createJob('beats-refused')
      expect(await t.waitForJob(id, (j) => isTerminal(j.status))).toMatchObject({ status: 'completed', result: 'kept', attempt: 1 })
    })
    // Node's timers count whole milliseconds from the loop's clock, so a 1 s wait can measure a hair under it here.
    expect((sentAt[1] as number) - (sentAt[0] as number)).toBeGreaterThanOrEqual(990)
    expect(errors.map((e) => [e.context.operation, codeOf(e.error)])).toEqual([['heartbeat', 'overloaded']])
  })

  it('aborts with lease_lost when heartbeats cannot get through, and the job is run again', async () => {
    const blockHeartbeats: typeof fetch = async (input, init) => {
      if (String(input).endsWith('/heartbeat')) throw new TypeError('fetch failed (heartbeat blocked)')
      return fetch(input, init)
    }
    const { worker, errors } = startTestWorker(t, { fetch: blockHeartbeats, leaseMs: 1_000 })
    const reasons: unknown[] = []
    worker.handle('leased', async (job, ctx) => {
      if (job.attempt > 1) return 'second attempt'
      await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve, { once: true }))
      reasons.push((ctx.signal.reason as JobAbortedError).reason)
      return 'not reported'
    })
    await withWorker(worker, async () => {
      const { id } = await t.createJob('leased')
      const job = await t.waitForJob(id, (j) => isTerminal(j.status))
      const log = await t.events(id)
      expect(reasons).toEqual(['lease_lost'])
      expect(job).toMatchObject({ status: 'completed', attempt: 2, result: 'second attempt' })
      expect(ofType(log, 'requeued').map((e) => e.data.reason)).toEqual(['worker_lost'])
    })
    expect(errors.some((e) => e.context.operation === 'heartbeat')).toBe(true)
    expect(errors.some((e) => e.error instanceof JobAbortedError && e.error.reason === 'lease_lost')).toBe(true)
  })
})

describe('concurrency and stopping', () => {
  it('runs at most `concurrency` jobs at once and claims no job it has no slot for', async () => {
    const { worker } = startTestWorker(t, { concurrency: 3 })
    let running = 0
    let maxRunning = 0
    const gate = signalled()
    const threeRunning = signalled()
    worker.handle('concurrent', async () => {
      running++
      maxRunning = Math.max(maxRunning, running)
      if (running === 3) threeRunning.resolve()
      await gate.promise
      running--
      return 'ok'
    })
    await withWorker(worker, async () => {
      const ids: string[] = []
      for (let i = 0; i < 7; i++) ids.push((await t.createJob('concurrent')).id)
      await threeRunning.promise
      const statuses = await Promise.all(ids.map(async (id) => (await t.getJob(id)).status))
      expect(statuses.filter((s) => s === 'running')).toHaveLength(3)
      expect(statuses.filter((s) => s === 'queued')).toHaveLength(4)
      gate.resolve()
      const jobs = await Promise.all(ids.map((id) => t.waitForJob(id, (j) => isTerminal(j.status))))
      expect(jobs.map((j) => j.status)).toEqual(Array(7).fill('completed'))
    })
    expect(maxRunning).toBe(3)
  })

  it('claims as many jobs as it has free slots in one request, never more', async () => {
    const claims: { max: number; got: number }[] = []
    const recordingFetch: typeof fetch = async (input, init) => {
      const response = await fetch(input, init)
      if (new URL(String(input)).pathname !== '/v1/workers/claim') return response
      const text = await response.text()
      const sent = JSON.parse(String(init?.body)) as { max: number }
      claims.push({ max: sent.max, got: text === '' ? 0 : (JSON.parse(text) as { claims: unknown[] }).claims.length })
      return new Response(text, { status: response.status, headers: response.headers })
    }
    const { worker } = startTestWorker(t, { concurrency: 5, fetch: recordingFetch })
    const gate = signalled()
    let running = 0
    const fiveRunning = signalled()
    worker.handle('batched', async () => {
      if (++running === 5) fiveRunning.resolve()
      await gate.promise
      return 'ok'
    })
    const ids: string[] = []
    for (let i = 0; i < 12; i++) ids.push((await t.createJob('batched')).id)
    await withWorker(worker, async () => {
      await fiveRunning.promise
      // The first claim asked for all five slots and got five jobs at once.
      expect(claims[0]).toEqual({ max: 5, got: 5 })
      gate.resolve()
      const jobs = await Promise.all(ids.map((id) => t.waitForJob(id, (j) => isTerminal(j.status))))
      expect(jobs.map((j) => j.status)).toEqual(Array(12).fill('completed'))
    })
    for (const claim of claims) {
      expect(claim.max).toBeGreaterThanOrEqual(1)
      expect(claim.max).toBeLessThanOrEqual(5)
      expect(claim.got).toBeLessThanOrEqual(claim.max)
    }
    // Twelve jobs in fewer claims than jobs.
    expect(claims.filter((claim) => claim.got > 0).length).toBeLessThan(12)
  })

  it('with `prefetch`, claims jobs ahead of a free slot and runs them one slot at a time, in claim order', async () => {
    const { worker, errors } = startTestWorker(t, { concurrency: 1, prefetch: 3 })
    const order: string[] = []
    const gates = new Map<string, ReturnType<typeof signalled<void>>>()
    const started = new Map<string, ReturnType<typeof signalled<void>>>()
    let running = 0
    let maxRunning = 0
    worker.handle('prefetched', async (job) => {
      running++
      maxRunning = Math.max(maxRunning, running)
      order.push(job.id)
      started.get(job.id)?.resolve()
      await gates.get(job.id)?.promise
      running--
      return 'ok'
    })
    const ids: string[] = []
    for (let i = 0; i < 5; i++) {
      const { id } = await t.createJob('prefetched')
      ids.push(id)
      gates.set(id, signalled())
      started.set(id, signalled())
    }
    await withWorker(worker, async () => {
      await started.get(ids[0] as string)?.promise
      // Four held (one running, three waiting, all claimed on the server), the fifth still queued.
      await Promise.all(ids.slice(0, 4).map((id) => t.waitForJob(id, (j) => j.status === 'running')))
      expect((await t.getJob(ids[4] as string)).status).toBe('queued')
      expect(worker.activeJobs).toBe(4)
      expect(order).toEqual([ids[0]])
      for (const id of ids) gates.get(id)?.resolve()
      const jobs = await Promise.all(ids.map((id) => t.waitForJob(id, (j) => isTerminal(j.status))))
      expect(jobs.map((j) => j.status)).toEqual(Array(5).fill('completed'))
    })
    expect(maxRunning).toBe(1)
    expect(order).toEqual(ids)
    expect(errors).toEqual([])
  })

  it('drops a prefetched job cancelled while it waits, unrun, and gives its place to the next', async () => {
    const { worker, errors } = startTestWorker(t, { concurrency: 1, prefetch: 2 })
    const ran: string[] = []
    const gate = signalled()
    const firstRunning = signalled()
    worker.handle('prefetch-cancel', async (job) => {
      ran.push(job.id)
      if (ran.length === 1) {
        firstRunning.resolve()
        await gate.promise
      }
      return 'ok'
    })
    const ids: string[] = []
    for (let i = 0; i < 4; i++) ids.push((await t.createJob('prefetch-cancel')).id)
    const [first, waiting, next, last] = ids as [string, string, string, string]
    await withWorker(worker, async () => {
      await firstRunning.promise
      await t.waitForJob(next, (j) => j.status === 'running')
      expect(await t.cancel(waiting)).toBe(200)
      // Its place goes to the fourth job, claimed while the first still runs.
      await t.waitForJob(last, (j) => j.status === 'running')
      expect(ran).toEqual([first])
      gate.resolve()
      await Promise.all([first, next, last].map((id) => t.waitForJob(id, (j) => j.status === 'completed')))
    })
    expect(ran).toEqual([first, next, last])
    const log = await t.events(waiting)
    expect(log.map((event) => event.type)).toEqual(['created', 'started', 'cancelled'])
    expect(errors).toEqual([])
  })

  it('stop() releases prefetched jobs at once, unrun, while the running handler may finish', async () => {
    const { worker, errors } = startTestWorker(t, { concurrency: 1, prefetch: 2 })
    const ran: string[] = []
    const gate = signalled()
    const firstRunning = signalled()
    worker.handle('prefetch-stop', async (job) => {
      ran.push(job.id)
      firstRunning.resolve()
      await gate.promise
      return 'ok'
    })
    const ids: string[] = []
    for (let i = 0; i < 3; i++) ids.push((await t.createJob('prefetch-stop')).id)
    const [first, ...waiting] = ids as [string, string, string]
    await worker.start()
    await firstRunning.promise
    await Promise.all(waiting.map((id) => t.waitForJob(id, (j) => j.status === 'running')))
    const stopped = worker.stop({ timeoutMs: 30_000 })
    // Back in the queue while the first handler still runs, their attempts not counted (no handler ran them).
    const requeued = await Promise.all(waiting.map((id) => t.waitForJob(id, (j) => j.status === 'queued')))
    expect(requeued.map((job) => job.attempt)).toEqual([0, 0])
    for (const id of waiting) expect(ofType(await t.events(id), 'requeued').map((e) => e.data)).toMatchObject([{ reason: 'worker stopping', attempt: 1, counted: false }])
    expect(worker.state).toBe('stopping')
    gate.resolve()
    await stopped
    expect(ran).toEqual([first])
    expect((await t.getJob(first)).status).toBe('completed')
    expect(errors).toEqual([])
  })

  it('drops a prefetched job whose lease lapses while it waits, unrun, says so, and runs it again when claimed again', async () => {
    let waitingId = ''
    // Heartbeats of the waiting job do not get through; the running job's do.
    const blockOne: typeof fetch = async (input, init) => {
      if (waitingId !== '' && String(input).endsWith(`/${waitingId}/heartbeat`)) throw new TypeError('fetch failed (heartbeat blocked)')
      return fetch(input, init)
    }
    const { worker, errors } = startTestWorker(t, { concurrency: 1, prefetch: 1, leaseMs: 1_000, fetch: blockOne })
    const gate = signalled()
    const ran: { id: string; attempt: number }[] = []
    worker.handle('prefetch-lapse', async (job) => {
      ran.push({ id: job.id, attempt: job.attempt })
      if (ran.length === 1) await gate.promise
      return 'ok'
    })
    const running = (await t.createJob('prefetch-lapse')).id
    waitingId = (await t.createJob('prefetch-lapse')).id
    await withWorker(worker, async () => {
      // Taken back from this worker (re-queued by the lease sweep), then claimed by it again: attempt 2.
      await t.waitForJob(waitingId, (j) => j.attempt === 2 && j.status === 'running')
      expect(ran).toEqual([{ id: running, attempt: 1 }])
      gate.resolve()
      await Promise.all([running, waitingId].map((id) => t.waitForJob(id, (j) => j.status === 'completed')))
    })
    expect(ran).toEqual([
      { id: running, attempt: 1 },
      { id: waitingId, attempt: 2 },
    ])
    expect(ofType(await t.events(waitingId), 'requeued').map((e) => e.data.reason)).toEqual(['worker_lost'])
    expect(errors.some((e) => e.context.jobId === waitingId && e.error instanceof JobAbortedError && e.error.reason === 'lease_lost')).toBe(true)
    expect(errors.every((e) => e.context.jobId === waitingId)).toBe(true)
  })

  it('with `prefetch`, the next claim leaves while a line of short jobs still runs, and the line goes on while the server answers it', async () => {
    let handled = 0
    const lineDone = signalled()
    /** Jobs handled when each claim was sent. */
    const claimedAt: number[] = []
    const recording: typeof fetch = async (input, init) => {
      if (String(input).endsWith('/v1/workers/claim')) {
        claimedAt.push(handled)
        // The second claim reaches the server only once the first line has run to its end: the line must not wait for its answer.
        if (claimedAt.length === 2) await lineDone.promise
      }
      return fetch(input, init)
    }
    const { worker, errors } = startTestWorker(t, { concurrency: 1, prefetch: 8, fetch: recording })
    worker.handle('line', async () => {
      handled++
      if (handled === 9) lineDone.resolve()
      return 'ok'
    })
    const ids: string[] = []
    for (let i = 0; i < 20; i++) ids.push((await t.createJob('line')).id)
    await withWorker(worker, async () => {
      await Promise.all(ids.map((id) => t.waitForJob(id, (j) => j.status === 'completed')))
    })
    // The first claim took nine jobs (a slot and eight in line). The second left once half the
    // line had run (room for half a prefetch), not after the whole line.
    expect(claimedAt[0]).toBe(0)
    expect(claimedAt[1]).toBe(4)
    expect(errors).toEqual([])
  })

  it('refuses a `prefetch` out of 0–1,000', () => {
    for (const prefetch of [-1, 1.5, 1001, Number.NaN]) {
      expect(() => createWorker({ url: t.url, apiKey: 'k', prefetch })).toThrow(RangeError)
    }
  })

  it('claims one job per request from a server that refuses `max`, as servers before it did', async () => {
    const sent: Record<string, unknown>[] = []
    // What a server from before batch claims answers a body with `max`: its schema refuses the field.
    const { worker, errors } = startTestWorker(t, { concurrency: 3, fetch: olderServer((path) => path === '/v1/workers/claim', 'max', sent) })
    worker.handle('older', async () => 'ok')
    const ids: string[] = []
    for (let i = 0; i < 4; i++) ids.push((await t.createJob('older')).id)
    await withWorker(worker, async () => {
      const jobs = await Promise.all(ids.map((id) => t.waitForJob(id, (j) => isTerminal(j.status))))
      expect(jobs.map((j) => j.status)).toEqual(Array(4).fill('completed'))
    })
    expect(sent[0]).toMatchObject({ max: 3 })
    // Refused once, then never sent again.
    expect(sent.slice(1).every((body) => !('max' in body))).toBe(true)
    expect(errors).toEqual([])
  })

  it("carries each finished job's outcome in its next claim: one request per job, no write of its own", async () => {
    const sent: { path: string; body: Record<string, unknown> }[] = []
    const recordingFetch: typeof fetch = async (input, init) => {
      const path = new URL(String(input)).pathname
      if (path !== '/v1/workers/signals') sent.push({ path, body: JSON.parse(String(init?.body ?? '{}')) as Record<string, unknown> })
      return fetch(input, init)
    }
    const { worker, errors } = startTestWorker(t, { concurrency: 1, fetch: recordingFetch })
    worker.handle('carried', async (job) => ({ doubled: (job.input as number) * 2 }))
    const ids: string[] = []
    for (let i = 0; i < 4; i++) ids.push((await t.createJob('carried', i)).id)
    await withWorker(worker, async () => {
      const jobs = await Promise.all(ids.map((id) => t.waitForJob(id, (j) => isTerminal(j.status))))
      expect(jobs.map((j) => j.result)).toEqual([0, 2, 4, 6].map((doubled) => ({ doubled })))
      // The last outcome rode a claim that found no job and was answered at once; the next one waits.
      await until(() => sent.length >= 6, 'the claim after the last outcome')
    })
    expect(sent.filter((request) => request.path !== '/v1/workers/claim')).toEqual([])
    const carried = sent.map((request) => ((request.body.done ?? []) as { jobId: string; lease: string; batch: number; events: { type: string }[] }[]))
    expect(carried.slice(0, 5).map((done) => done.map((write) => write.jobId))).toEqual([[], ...ids.map((id) => [id])])
    for (const write of carried.flat()) expect(write).toMatchObject({ lease: expect.stringMatching(/^lease_/), batch: 1, events: [{ type: 'completed' }] })
    expect(errors).toEqual([])
  })

  it('sends outcomes on their own to a server that refuses `done` in a claim, as servers before it did', async () => {
    const claims: Record<string, unknown>[] = []
    const { worker, errors } = startTestWorker(t, { concurrency: 1, fetch: olderServer((path) => path === '/v1/workers/claim', 'done', claims) })
    worker.handle('older-done', async () => 'ok')
    const ids: string[] = []
    for (let i = 0; i < 3; i++) ids.push((await t.createJob('older-done')).id)
    await withWorker(worker, async () => {
      const jobs = await Promise.all(ids.map((id) => t.waitForJob(id, (j) => isTerminal(j.status))))
      expect(jobs.map((j) => [j.status, j.result])).toEqual(Array(3).fill(['completed', 'ok']))
    })
    // Refused once, then never sent again; every claim still asked for `max`.
    expect(claims.filter((body) => 'done' in body)).toHaveLength(1)
    expect(claims.every((body) => body.max === 1)).toBe(true)
    expect(errors).toEqual([])
  })

  it('releases unrun jobs without `ran` to a server that refuses the field, as servers before it did', async () => {
    const releases: Record<string, unknown>[] = []
    const { worker, errors } = startTestWorker(t, { concurrency: 1, prefetch: 2, fetch: olderServer((path) => path.endsWith('/release'), 'ran', releases) })
    const gate = signalled()
    const running = signalled()
    worker.handle('older-release', async () => {
      running.resolve()
      await gate.promise
      return 'ok'
    })
    const ids: string[] = []
    for (let i = 0; i < 3; i++) ids.push((await t.createJob('older-release')).id)
    await worker.start()
    await running.promise
    await Promise.all(ids.map((id) => t.waitForJob(id, (j) => j.status === 'running')))
    const stopped = worker.stop({ timeoutMs: 30_000 })
    const requeued = await Promise.all(ids.slice(1).map((id) => t.waitForJob(id, (j) => j.status === 'queued')))
    gate.resolve()
    await stopped
    // Back in the queue all the same (their attempts counted, as that server counts them): each release
    // went again without `ran` (the two left together, so each may have tried it once).
    expect(requeued.map((job) => job.attempt)).toEqual([1, 1])
    expect(releases.filter((body) => !('ran' in body)).length).toBe(2)
    expect(releases.filter((body) => 'ran' in body).length).toBeGreaterThanOrEqual(1)
    expect(releases.length).toBeLessThanOrEqual(4)
    expect(errors).toEqual([])
  })

  it('a worker stopped just as a job is created never strands it: the job is run, or given back unrun at once', async () => {
    // stop() ends the waiting claim; a job created at that moment can be claimed for the worker
    // and its answer sent before the node hears the worker go. The worker half-closes the claim's
    // connection instead of dropping it, so either the node hears of it first and gives the job
    // back, or the worker reads the answer and gives the job back itself. Dropped (as before), the
    // answer was lost and the job stayed `running` until its lease lapsed (33 of 60 such stops).
    const outcomes = new Set<string>()
    for (let round = 0; round < 12; round++) {
      const type = `stop-race-${round}`
      const { worker, errors } = startTestWorker(t, { concurrency: 1, leaseMs: 60_000 })
      worker.handle(type, async () => 'ok')
      await worker.start()
      await new Promise((resolve) => setTimeout(resolve, 40))
      const created = t.createJob(type)
      await new Promise((resolve) => setTimeout(resolve, round % 3))
      await worker.stop({ timeoutMs: 2_000 })
      const { id } = await created
      let job = await t.getJob(id)
      await until(async () => (job = await t.getJob(id)).status !== 'running', `job ${id} run or given back, not left under the stopped worker's lease`)
      expect(['completed', 'queued']).toContain(job.status)
      const log = await t.events(id)
      if (job.status === 'queued') {
        // Never claimed, or claimed and given back unrun: no attempt counted either way.
        expect(job.attempt).toBe(0)
        for (const requeued of ofType(log, 'requeued')) expect(requeued.data).toMatchObject({ counted: false })
      }
      outcomes.add(log.at(-1)?.type === 'requeued' ? (log.at(-1)?.data as { reason: string }).reason : (log.at(-1)?.type ?? ''))
      expect(errors).toEqual([])
    }
    // Each outcome is one of these (which ones a run meets depends on timing).
    for (const outcome of outcomes) expect(['completed', 'created', 'worker stopping', 'the claiming worker went away before the answer', 'the claiming worker never read the answer']).toContain(outcome)
  })

  it('stop() lets a running handler finish and claims nothing more', async () => {
    const { worker } = startTestWorker(t)
    const running = signalled()
    const gate = signalled()
    let calls = 0
    worker.handle('graceful', async () => {
      calls++
      running.resolve()
      await gate.promise
      return 'finished during stop'
    })
    await worker.start()
    const { id } = await t.createJob('graceful')
    await running.promise
    const stopped = worker.stop({ timeoutMs: 10_000 })
    expect(worker.state).toBe('stopping')
    gate.resolve()
    await stopped
    expect(worker.state).toBe('stopped')
    expect(await t.getJob(id)).toMatchObject({ status: 'completed', result: 'finished during stop' })
    expect(calls).toBe(1)
  })

  it('stop() past its timeout aborts the handler, keeps its last checkpoint and releases the job to another worker', async () => {
    const first = startTestWorker(t)
    const running = signalled()
    let abortReason: unknown
    first.worker.handle<unknown, { step: number }>('released', async (_job, ctx) => {
      await ctx.checkpoint({ step: 1 })
      running.resolve()
      await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve, { once: true }))
      abortReason = (ctx.signal.reason as JobAbortedError).reason
      // A handler told to stop may still save where it got to.
      await ctx.checkpoint({ step: 2 })
      throw ctx.signal.reason
    })
    await first.worker.start()
    const { id } = await t.createJob('released')
    await running.promise
    await first.worker.stop({ timeoutMs: 50 })
    expect(abortReason).toBe('stopped')
    const released = await t.getJob(id)
    expect(released).toMatchObject({ status: 'queued', checkpoint: { step: 2 }, attempt: 1 })
    // Its handler ran: the attempt counts.
    expect(ofType(await t.events(id), 'requeued').map((e) => e.data)).toEqual([{ reason: 'worker stopping', attempt: 1, retryAt: null }])
    expect(first.errors).toEqual([])

    const second = startTestWorker(t)
    second.worker.handle<unknown, { step: number }>('released', (job) => ({ resumedFrom: job.checkpoint, attempt: job.attempt }))
    await withWorker(second.worker, async () => {
      const job = await t.waitForJob(id, (j) => isTerminal(j.status))
      expect(job).toMatchObject({ status: 'completed', result: { resumedFrom: { step: 2 }, attempt: 2 } })
    })
  })

  it('keeps retrying a claim against a server that is down with jittered backoff, reporting through onError, and stops cleanly', async () => {
    const timers = new ManualTimers()
    let claims = 0
    const counting: typeof fetch = (input, init) => {
      claims++
      return fetch(input, init)
    }
    const { worker, errors } = startTestWorker({ ...t, url: 'http://127.0.0.1:9' }, { timers, random: () => 0.5, fetch: counting })
    worker.handle('unreachable', () => 'never')
    await worker.start()
    // Backoff 100 ms · 2^(n-1), full jitter at random 0.5: 50, 100, 200 ms. No claim a millisecond early.
    for (const [failures, delay] of [[1, 50], [2, 100], [3, 200]] as const) {
      await until(() => errors.length === failures, `failure ${failures}`)
      expect(claims).toBe(failures)
      await timers.advance(delay - 1)
      expect(claims).toBe(failures)
      await timers.advance(1)
      expect(claims).toBe(failures + 1)
    }
    await until(() => errors.length === 4, 'failure 4')
    await worker.stop()
    expect(errors.every((e) => e.context.operation === 'claim' && codeOf(e.error) === 'network_error')).toBe(true)
    expect(worker.state).toBe('stopped')
    await expect(worker.done).resolves.toBeUndefined()
  })

  it('done resolves once stop() has stopped the worker, and at the stop of a worker never started', async () => {
    const idle = startTestWorker(t).worker
    idle.handle('never-started', () => null)
    await idle.stop()
    await expect(idle.done).resolves.toBeUndefined()

    const { worker, errors } = startTestWorker(t)
    worker.handle('stopped-by-stop', () => null)
    let settled = false
    void worker.done.finally(() => (settled = true))
    await worker.start()
    await settle()
    expect(settled).toBe(false)
    await worker.stop()
    await expect(worker.done).resolves.toBeUndefined()
    expect(errors).toEqual([])
  })
})

describe('a claim the server refuses for good', () => {
  /** A fetch that counts every request the worker sends. */
  function counting(): { fetch: typeof fetch; sent: () => number } {
    let sent = 0
    return {
      fetch: (input, init) => {
        sent++
        return fetch(input, init)
      },
      sent: () => sent,
    }
  }

  const rejection = (promise: Promise<unknown>): Promise<unknown> =>
    promise.then(
      () => null,
      (error: unknown) => error,
    )

  it('a wrong key (401): the worker stops on its own, done rejects with the error, onError says it once, and no claim follows', async () => {
    const timers = new ManualTimers()
    const requests = counting()
    const { worker, errors } = startTestWorker(t, { apiKey: 'jw_not_a_key_at_all', timers, random: () => 0.5, fetch: requests.fetch })
    worker.handle('refused', () => 'never')
    await worker.start()
    const error = await rejection(worker.done)
    expect(error).toBeInstanceOf(WorkerRequestError)
    expect(error).toMatchObject({ operation: 'claim', status: 401, code: 'unauthorized', transient: false })
    expect(worker.state).toBe('stopped')
    expect(errors).toEqual([{ error, context: { operation: 'claim' } }])
    // Far past every backoff a retry would have waited: nothing was sent again, nothing is due.
    await timers.advance(60_000)
    expect(requests.sent()).toBe(1)
    expect(timers.scheduled).toBe(0)
    expect(errors).toHaveLength(1)
    // stop() after it resolves; done still says why the worker stopped.
    await worker.stop()
    expect(await rejection(worker.done)).toBe(error)
  })

  it('says so in one line by default, naming the operation once and saying the worker has stopped', async () => {
    const lines: string[] = []
    const original = console.warn
    console.warn = (line: string) => lines.push(line)
    try {
      const worker = createWorker({ url: t.url, apiKey: 'jw_not_a_key_at_all', pollWaitSeconds: 1 })
      worker.handle('refused-default', () => 'never')
      await worker.start()
      await rejection(worker.done)
    } finally {
      console.warn = original
    }
    expect(lines).toEqual(['jobwire worker: claim: A valid API key or token is required (Authorization: Bearer <credential>) — the worker has stopped'])
  })

  it('a url that is no Jobwire server (an HTTP server answering 501 without a Jobwire error): stops, naming the server', async () => {
    // What Python's http.server answers a POST: 501 is no outage that a retry outlives.
    const other = createServer((_request, response) => response.writeHead(501, { 'content-type': 'text/html' }).end('<h1>Unsupported method</h1>'))
    await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve))
    try {
      const url = `http://127.0.0.1:${(other.address() as AddressInfo).port}`
      const { worker, errors } = startTestWorker(t, { url, timers: new ManualTimers() })
      worker.handle('elsewhere', () => 'never')
      await worker.start()
      const error = await rejection(worker.done)
      expect(error).toBeInstanceOf(WorkerRequestError)
      expect(error).toMatchObject({ status: 501, code: 'http_501', transient: false })
      expect((error as Error).message).toBe(`claim: HTTP 501 from ${url}, without a Jobwire error: is it a Jobwire server?`)
      expect(errors).toHaveLength(1)
      expect(worker.state).toBe('stopped')
    } finally {
      other.close()
    }
  })

  it('a key that may not claim jobs (a backend key, 403): the worker stops on its own with forbidden', async () => {
    const { key } = await t.createKey('backend')
    const requests = counting()
    const { worker, errors } = startTestWorker(t, { apiKey: key, timers: new ManualTimers(), fetch: requests.fetch })
    worker.handle('forbidden', () => 'never')
    await worker.start()
    const error = await rejection(worker.done)
    expect(error).toMatchObject({ operation: 'claim', status: 403, code: 'forbidden' })
    expect(worker.state).toBe('stopped')
    expect(errors).toEqual([{ error, context: { operation: 'claim' } }])
    expect(requests.sent()).toBe(1)
  })

  it('a key revoked while a job runs: the handler is aborted at once with stopped, and done rejects with unauthorized', async () => {
    const { id: keyId, key } = await t.createKey('worker')
    // A free slot keeps a claim going out while the job runs; a short poll brings the next one soon.
    const { worker, errors } = startTestWorker(t, { apiKey: key, concurrency: 2, pollWaitSeconds: 1 })
    const running = signalled()
    let abortReason: AbortReason | undefined
    worker.handle('revoked', async (_job, ctx) => {
      running.resolve()
      await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve, { once: true }))
      abortReason = (ctx.signal.reason as JobAbortedError).reason
      throw ctx.signal.reason
    })
    await worker.start()
    await t.createJob('revoked')
    await running.promise
    await t.revokeKey(keyId)
    const error = await rejection(worker.done)
    expect(error).toMatchObject({ operation: 'claim', status: 401, code: 'unauthorized' })
    expect(abortReason).toBe('stopped')
    expect(worker.state).toBe('stopped')
    expect(worker.activeJobs).toBe(0)
    // The signals long-poll and the lease's release were refused too; the claim is said once.
    expect(errors.filter((e) => e.context.operation === 'claim')).toEqual([{ error, context: { operation: 'claim' } }])
  })

  it('a claim refused as too large for the outcomes it carried is no refusal of the worker: they go on their own, and it claims again', async () => {
    // The worker's limits above the server's body limit: four outcomes of ~6 KB together exceed it, each alone fits.
    const small = await startTestServer({ maxBodyBytes: 16 * 1024 })
    try {
      const refused: number[] = []
      const watching: typeof fetch = async (input, init) => {
        const answer = await fetch(input, init)
        if (answer.status === 413) refused.push(answer.status)
        return answer
      }
      const { worker, errors } = startTestWorker(small, { concurrency: 4, fetch: watching })
      const gate = signalled()
      worker.handle('bulky', async (job) => {
        await gate.promise
        return { index: job.input, padding: 'x'.repeat(6_000) }
      })
      const ids: string[] = []
      for (let i = 0; i < 4; i++) ids.push((await small.createJob('bulky', i)).id)
      await withWorker(worker, async () => {
        await until(() => worker.activeJobs === 4, 'four jobs running')
        gate.resolve()
        const jobs = await Promise.all(ids.map((id) => small.waitForJob(id, (j) => isTerminal(j.status))))
        expect(jobs.map((j) => [j.status, (j.result as { index: number }).index])).toEqual([0, 1, 2, 3].map((i) => ['completed', i]))
      })
      expect(refused.length).toBeGreaterThan(0)
      expect(worker.state).toBe('stopped')
      await expect(worker.done).resolves.toBeUndefined()
      expect(errors).toEqual([])
    } finally {
      await small.close()
    }
  })

  it('keeps retrying claims answered with a 5xx (a proxy while the server restarts), then runs the job; done resolves at stop()', async () => {
    let refused = 0
    // Three claims meet a proxy's 503 page, then the server answers.
    const restarting: typeof fetch = async (input, init) => {
      if (new URL(String(input)).pathname === '/v1/workers/claim' && refused < 3) {
        refused++
        return new Response('<html>503 Service Unavailable</html>', { status: 503, headers: { 'content-type': 'text/html' } })
      }
      return fetch(input, init)
    }
    // No jitter delay: retries go at once.
    const { worker, errors } = startTestWorker(t, { fetch: restarting, random: () => 0 })
    worker.handle('after-5xx', () => 'ran')
    const { id } = await t.createJob('after-5xx')
    await withWorker(worker, async () => {
      expect(await t.waitForJob(id, (j) => isTerminal(j.status))).toMatchObject({ status: 'completed', result: 'ran' })
      expect(worker.state).toBe('running')
    })
    expect(errors.map((e) => [e.context.operation, codeOf(e.error)])).toEqual(Array(3).fill(['claim', 'http_503']))
    await expect(worker.done).resolves.toBeUndefined()
  })
})
