import { isTerminal } from '@jobwire/protocol'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { RetryableError } from '../src/index.js'
import { apiKey, startTestServer, startTestWorker, withWorker, type TestServer } from './harness.js'

let t: TestServer

beforeAll(async () => {
  t = await startTestServer({
    maxEventsPerJob: 100_000,
    retryBackoff: 0,
    stagePlans: { transcription: [{ name: 'validating', to: 10 }, { name: 'decoding', to: 20 }, { name: 'transcribing', to: 70 }, { name: 'synthesizing', to: 100 }] },
  })
})

afterAll(async () => {
  await t.close()
})

describe('metadata and stage plans from a handler', () => {
  it('ctx.stage reports fractions of the plan and metadata reaches the snapshot merged', async () => {
    const { worker, errors } = startTestWorker(t)
    worker.handle('transcription', async (job, ctx) => {
      expect(job.plan?.map((stage) => stage.name)).toEqual(['validating', 'decoding', 'transcribing', 'synthesizing'])
      ctx.stage('validating', 1)
      ctx.stage('transcribing', 0.5, { chunksProcessed: 20, totalChunks: 40 })
      ctx.progress({ metadata: { chunksProcessed: 21 } })
      ctx.item('a.wav', { status: 'running', metadata: { seconds: 3 } })
      ctx.item('a.wav', { metadata: { words: 9 } })
      await ctx.flush()
      const mid = await t.getJob(job.id)
      expect(mid.progress.percent).toBe(45)
      expect(mid.plan?.map((stage) => stage.status)).toEqual(['done', 'skipped', 'running', 'pending'])
      expect(mid.progress.metadata).toEqual({ chunksProcessed: 21, totalChunks: 40 })
      expect(mid.items[0]?.metadata).toEqual({ seconds: 3, words: 9 })
      ctx.stage('synthesizing')
      return 'ok'
    })
    await withWorker(worker, async () => {
      const { id } = await t.createJob('transcription')
      const job = await t.waitForJob(id, (j) => isTerminal(j.status))
      expect(job.status).toBe('completed')
      expect(job.plan?.map((stage) => stage.status)).toEqual(['done', 'skipped', 'done', 'done'])
    })
    expect(errors).toEqual([])
  })

  it('a handler may take the reports and the signal out of ctx: they do not need ctx as `this`', async () => {
    const { worker, errors } = startTestWorker(t)
    worker.handle('destructured', async (_job, { progress, item, chunk, flush, signal }) => {
      expect(signal.aborted).toBe(false)
      progress({ stage: 'reading', percent: 40 })
      item('page-1', { status: 'completed' })
      chunk('hello')
      await flush()
      return 'ok'
    })
    await withWorker(worker, async () => {
      const { id } = await t.createJob('destructured')
      const job = await t.waitForJob(id, (j) => isTerminal(j.status))
      expect(job.status).toBe('completed')
      expect(job.progress.stage).toBe('reading')
      expect(job.items.map((one) => [one.id, one.status])).toEqual([['page-1', 'completed']])
      expect(job.text).toBe('hello')
    })
    expect(errors).toEqual([])
  })

  it('throws at the call for a fraction outside the plan or metadata past the merged limits, and the job goes on', async () => {
    const { worker, errors } = startTestWorker(t)
    const thrown: string[] = []
    worker.handle('plain', (_job, ctx) => {
      for (const report of [
        () => ctx.stage('nowhere', 0.5),
        () => ctx.progress({ metadata: Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`k${i}`, i])) }),
        () => {
          ctx.item('x', { metadata: Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`a${i}`, i])) })
          ctx.item('x', { metadata: Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`b${i}`, i])) })
        },
      ]) {
        try {
          report()
        } catch (error) {
          thrown.push((error as Error).message)
        }
      }
      return 'done'
    })
    await withWorker(worker, async () => {
      const { id } = await t.createJob('plain')
      const job = await t.waitForJob(id, (j) => isTerminal(j.status))
      expect(job.status).toBe('completed')
      expect(Object.keys(job.items[0]?.metadata ?? {})).toHaveLength(20)
    })
    expect(thrown).toEqual([
      expect.stringContaining('the job has no plan'),
      expect.stringContaining('40 keys'),
      expect.stringContaining('merged'),
    ])
    expect(errors).toEqual([])
  })
})

describe('a retried attempt resumes its text from the checkpoint', () => {
  it('text streamed after the checkpoint is rolled back, not repeated, and watchers see the rollback in the log', async () => {
    const { worker, errors } = startTestWorker(t)
    worker.handle<unknown, { part: number }>('story', async (job, ctx) => {
      const parts = ['Once ', 'upon ', 'a ', 'time.']
      for (let part = job.checkpoint?.part ?? 0; part < parts.length; part++) {
        ctx.chunk(parts[part] as string)
        if (part === 1) await ctx.checkpoint({ part: 2 })
        // The first attempt dies after streaming past its checkpoint.
        if (part === 2 && job.attempt === 1) {
          await ctx.flush()
          throw new RetryableError('the model went away', { code: 'flaky' })
        }
      }
      return 'done'
    })
    await withWorker(worker, async () => {
      const { id } = await t.createJob('story')
      const job = await t.waitForJob(id, (j) => isTerminal(j.status))
      expect(job).toMatchObject({ status: 'completed', attempt: 2, text: 'Once upon a time.' })
      const log = await t.events(id)
      const requeue = log.find((event) => event.type === 'requeued')
      expect(requeue?.data).toMatchObject({ reason: 'flaky', textLength: 'Once upon '.length })
    })
    expect(errors.map((entry) => (entry as { error: Error }).error.message)).toEqual(['the model went away'])
  })
})

describe('large results and checkpoints', () => {
  it('a result far above an event completes: stored apart, the snapshot carries a ref, GET /result has it all (event_too_large before)', async () => {
    const { worker, errors } = startTestWorker(t)
    const transcript = 'word '.repeat(600_000) // 3 MB of JSON
    worker.handle('transcribe-long', () => ({ transcript }))
    await withWorker(worker, async () => {
      const { id } = await t.createJob('transcribe-long')
      const job = await t.waitForJob(id, (j) => isTerminal(j.status))
      expect(job.status).toBe('completed')
      expect(job.result).toBeNull()
      expect(job.resultRef?.size).toBe(JSON.stringify({ transcript }).length)
      const fetched = await fetch(`${t.url}/v1/jobs/${id}/result`, { headers: { authorization: `Bearer ${apiKey}` } })
      expect(((await fetched.json()) as { result: { transcript: string } }).result.transcript).toBe(transcript)
    })
    expect(errors).toEqual([])
  })

  it('a retried attempt gets a checkpoint too large for the claim in full, as job.checkpoint', async () => {
    const { worker, errors } = startTestWorker(t)
    const state = { pages: Array.from({ length: 2000 }, (_, i) => `page ${i} `.repeat(50)) }
    const seen: unknown[] = []
    worker.handle<unknown, typeof state>('agent-big', async (job, ctx) => {
      seen.push(job.checkpoint === null ? null : job.checkpoint.pages.length)
      if (job.attempt === 1) {
        await ctx.checkpoint(state)
        throw new RetryableError('try again', { code: 'flaky' })
      }
      expect(job.checkpoint).toEqual(state)
      return 'resumed'
    })
    await withWorker(worker, async () => {
      const { id } = await t.createJob('agent-big')
      const job = await t.waitForJob(id, (j) => isTerminal(j.status))
      expect(job).toMatchObject({ status: 'completed', result: 'resumed', attempt: 2, checkpoint: null })
      expect(job.checkpointRef?.size).toBe(JSON.stringify(state).length)
    })
    expect(seen).toEqual([null, 2000])
    expect(errors.map((entry) => (entry.error as Error).message)).toEqual(['try again'])
  })

  it('refuses a result over limits.maxValueBytes before sending it, with a clear error', async () => {
    const { worker, errors } = startTestWorker(t, { limits: { maxValueBytes: 100_000 } })
    let checkpointError: unknown
    worker.handle('too-big', async (_job, ctx) => {
      checkpointError = await ctx.checkpoint({ blob: 'c'.repeat(200_000) }).catch((error: unknown) => error)
      return { blob: 'r'.repeat(200_000) }
    })
    await withWorker(worker, async () => {
      const { id } = await t.createJob('too-big')
      const job = await t.waitForJob(id, (j) => isTerminal(j.status))
      expect(job.error).toMatchObject({ code: 'value_too_large', retryable: false })
      expect(job.error?.message).toContain('the limit is 100000')
      expect(job.checkpoint).toBeNull()
    })
    expect(checkpointError).toBeInstanceOf(RangeError)
    expect(errors.map((entry) => [entry.context.operation, (entry.error as Error).message])).toEqual([['handler', expect.stringMatching(/^The result is \d+ bytes of JSON; the limit is 100000/)]])
  })
})
