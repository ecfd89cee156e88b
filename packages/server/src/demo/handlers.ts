import { JobFailure, type JobContext, type Worker } from '@jobwire/worker'

/** The four demo job types, each shaped like a real use (see docs/getting-started.md, "Demo mode"). */
export const demoTypes = ['analysis', 'transcription', 'suggestion', 'agent'] as const

/** The transcription demo's stage plan: its jobs are created with it, so the dashboard draws it. */
export const transcriptionPlan = [
  { name: 'validating', from: 0, to: 10 },
  { name: 'decoding', from: 10, to: 20 },
  { name: 'transcribing', from: 20, to: 70 },
  { name: 'synthesizing', from: 70, to: 100 },
]

export interface DemoOptions {
  /** Multiplies every pause (tests run the demo faster). Default 1. */
  pace?: number
  /** Chance that a transcription fails with a realistic error. Default 0.1. */
  failureRate?: number
  random?: () => number
}

/** Registers handlers for every demo type on a worker (in `serve --demo`, or `jobwire demo-worker`). */
export function registerDemoHandlers(worker: Worker, options: DemoOptions = {}): void {
  const pace = options.pace ?? 1
  const random = options.random ?? Math.random
  const failureRate = options.failureRate ?? 0.1
  const pause = (ctx: JobContext, ms: number) => sleep(ms * pace, ctx.signal)

  // Document analysis: weighted stages, each with its own share of the bar.
  worker.handle('analysis', async (_job, ctx) => {
    const stages: [string, number, number, string][] = [
      ['parsing', 0, 15, 'Parsing 42 pages'],
      ['extracting', 15, 55, 'Extracting entities'],
      ['scoring', 55, 90, 'Scoring clauses'],
      ['summarizing', 90, 100, 'Writing the summary'],
    ]
    for (const [stage, from, to, message] of stages) {
      for (let step = 0; step < 6; step++) {
        ctx.progress({ stage, percent: from + ((to - from) * step) / 6, message })
        await pause(ctx, 250)
      }
    }
    return { risk: 'low', clauses: 37, flagged: [{ clause: 12, reason: 'unlimited liability' }, { clause: 30, reason: 'auto-renewal' }] }
  })

  // Audio pipeline: a stage plan (fractions of each stage move the bar), per-file progress with
  // metadata, a checkpoint per file, results per file.
  worker.handle<{ files?: string[] }, { done: string[] }>('transcription', async (job, ctx) => {
    const files = job.input?.files ?? ['interview.mp3', 'intro.wav', 'outro.m4a', 'b-roll.wav'].slice(0, 3 + Math.floor(random() * 2))
    const done = new Set(job.checkpoint?.done ?? [])
    // Jobs created without the plan (through the API) report percents from the same table.
    const report = (stage: string, fraction: number, extra: { message?: string; metadata?: Record<string, number> } = {}): void => {
      const range = transcriptionPlan.find((entry) => entry.name === stage) ?? { from: 0, to: 100 }
      if (job.plan !== undefined) ctx.progress({ stage, fraction, ...extra })
      else ctx.progress({ stage, percent: range.from + (range.to - range.from) * fraction, ...extra })
    }
    report('validating', 0, { message: `Checking ${files.length} files` })
    for (const [i, name] of files.entries()) {
      ctx.item(name, { label: name, status: done.has(name) ? 'completed' : 'pending', percent: done.has(name) ? 100 : 0 })
      report('validating', (i + 1) / files.length)
      await pause(ctx, 150)
    }
    if (random() < failureRate) {
      const bad = files[Math.floor(random() * files.length)] ?? 'file'
      ctx.item(bad, { status: 'failed', message: 'Not valid audio' })
      await ctx.flush()
      throw new JobFailure('audio_corrupt', `${bad} is not valid audio: the RIFF header is damaged (byte 0x2C). Re-export it and try again.`)
    }
    report('decoding', 0, { message: 'Decoding audio' })
    for (let step = 1; step <= 5; step++) {
      report('decoding', step / 5)
      await pause(ctx, 150)
    }
    const chunksPerFile = 5
    report('transcribing', 0, { message: 'Transcribing', metadata: { filesDone: done.size, totalFiles: files.length } })
    for (const [i, name] of files.entries()) {
      if (done.has(name)) continue
      for (let part = 1; part <= chunksPerFile; part++) {
        ctx.item(name, { status: 'running', percent: part * 20, metadata: { chunksProcessed: part, totalChunks: chunksPerFile } })
        report('transcribing', (i + part / chunksPerFile) / files.length, { message: `Transcribing ${name}` })
        await pause(ctx, 220)
      }
      ctx.item(name, { status: 'completed', percent: 100 })
      done.add(name)
      ctx.progress({ metadata: { filesDone: done.size } })
      await ctx.checkpoint({ done: [...done] })
    }
    report('synthesizing', 0, { message: 'Aligning timestamps' })
    for (let step = 1; step <= 6; step++) {
      report('synthesizing', step / 6)
      await pause(ctx, 150)
    }
    return { files: files.map((name) => ({ name, words: 300 + name.length * 41, transcript: `/transcripts/${name}.txt` })) }
  })

  // AI suggestions: token deltas at about 50 tokens/s, then a structured result.
  worker.handle('suggestion', async (_job, ctx) => {
    ctx.progress({ stage: 'thinking', message: 'Reading your draft' })
    await pause(ctx, 600)
    ctx.progress({ stage: 'writing', message: 'Streaming suggestions' })
    const tokens = suggestionText.match(/\S+\s*/g) ?? []
    for (const token of tokens) {
      ctx.chunk(token)
      await pause(ctx, 20)
    }
    return {
      suggestions: [
        { title: 'Lead with offline mode', confidence: 0.92 },
        { title: 'One number for start-up time', confidence: 0.81 },
        { title: 'Link the migration steps', confidence: 0.77 },
      ],
    }
  })

  // An agent: steps that stream their reasoning and checkpoint; a resumed run skips finished steps.
  worker.handle<unknown, { step: number }>('agent', async (job, ctx) => {
    const steps = ['Plan the research', 'Search the docs', 'Read 4 pages', 'Compare the answers', 'Draft the reply', 'Check the sources']
    const from = job.checkpoint?.step ?? 0
    if (from > 0) ctx.chunk(`\n[resumed at step ${from + 1} on attempt ${job.attempt}]\n`)
    for (let index = from; index < steps.length; index++) {
      const step = steps[index] as string
      ctx.progress({ stage: step, percent: (index / steps.length) * 100, message: `Step ${index + 1} of ${steps.length}` })
      for (const word of `${step}: ${agentThoughts[index % agentThoughts.length]}\n`.match(/\S+\s*/g) ?? []) {
        ctx.chunk(word)
        await pause(ctx, 300)
      }
      await ctx.checkpoint({ step: index + 1 })
    }
    return { answer: 'The docs agree: use leases with heartbeats and resume from checkpoints.', sources: 4 }
  })
}

const suggestionText =
  'Here are three ideas for your release notes. First, lead with the new offline mode: it is what users asked for most, ' +
  'and one sentence about how it works is enough. Second, show the faster start-up with a single number rather than a chart, ' +
  'because people remember numbers. Third, close with the migration steps, linked, in two short lines, so nobody has to search.'

const agentThoughts = [
  'three sources look relevant, starting with the official guide.',
  'found the section on leases and one on retries with backoff.',
  'the pages agree on heartbeats every third of the lease.',
  'two answers differ on checkpoint size; the smaller one wins.',
  'a short reply with one example should do.',
  'all four links resolve and say what the reply claims.',
]

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason as Error)
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    const onAbort = () => {
      clearTimeout(timer)
      reject(signal.reason as Error)
    }
    signal.addEventListener('abort', onAbort, { once: true })
  })
}
