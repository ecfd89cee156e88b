// The analysis worker: weighted stages, each with its own share of the bar.
import { createWorker } from '@jobwire/worker'

export const type = 'example-analysis'
export const stages = [
  ['parsing', 0, 15, 'Parsing 42 pages'],
  ['extracting', 15, 55, 'Extracting entities'],
  ['scoring', 55, 90, 'Scoring clauses'],
  ['summarizing', 90, 100, 'Writing the summary'],
]

/** `stepMs`: the pause per step (six steps a stage); the one-command demo runs slowly enough to watch. */
export function analysisWorker({ url, apiKey, stepMs = 400, fetch }) {
  const worker = createWorker({ url, apiKey, name: 'analysis-example', concurrency: 2, ...(fetch === undefined ? {} : { fetch }) })
  worker.handle(type, async (job, ctx) => {
    for (const [stage, from, to, message] of stages) {
      for (let step = 0; step < 6; step++) {
        if (ctx.signal.aborted) return undefined
        ctx.progress({ stage, percent: from + ((to - from) * step) / 6, message })
        await new Promise((resolve) => setTimeout(resolve, stepMs))
      }
    }
    return { documentId: job.input.documentId, risk: 'low', clauses: 37, flagged: [12, 30] }
  })
  return worker
}
