// Agent jobs with checkpoint/resume and an activity panel: each step of the agent is an item (the
// panel), its reasoning streams as text, and a checkpoint saves the step reached. The first run stops
// at a failing tool; resuming the job (as a "Retry" button would) runs it again from its checkpoint,
// so finished steps are not redone.
//   npx jobwire serve            (another terminal)
//   node examples/agent/index.mjs
import { JobwireBackend } from '@jobwire/backend'
import { createJobwireClient } from '@jobwire/client'
import { createWorker, JobFailure } from '@jobwire/worker'
import WebSocket from 'ws'
import { runIfMain } from '../connect.mjs'

export const type = 'example-agent'
export const steps = ['Plan the research', 'Search the docs', 'Read the pages', 'Compare the answers', 'Draft the reply']
const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

export function agentWorker({ url, apiKey }) {
  // The planned failure is the job's outcome, not the worker's problem: nothing to log for it.
  const onError = (error) => (error instanceof JobFailure ? undefined : console.error(error))
  const worker = createWorker({ url, apiKey, name: 'agent-example', concurrency: 2, onError })
  worker.handle(type, async (job, ctx) => {
    const from = job.checkpoint?.step ?? 0
    if (from > 0) ctx.chunk(`[resumed at step ${from + 1}, attempt ${job.attempt}]\n`)
    for (let index = from; index < steps.length; index++) {
      const id = `step-${index + 1}`
      ctx.item(id, { label: steps[index], status: 'running' })
      ctx.progress({ stage: steps[index], percent: (index / steps.length) * 100 })
      // The search tool is down on the first attempt: the job fails, keeping its checkpoint.
      if (index === job.input.failAtStep && job.attempt === 1) {
        ctx.item(id, { status: 'failed', message: 'search tool unavailable' })
        await ctx.flush()
        throw new JobFailure('tool_unavailable', 'The search tool did not answer; resume the job to try again')
      }
      ctx.chunk(`${steps[index]}: done.\n`)
      await pause(30)
      ctx.item(id, { status: 'completed', message: index === from && from > 0 ? 'done on the resumed attempt' : 'done' })
      await ctx.checkpoint({ step: index + 1 })
    }
    return { answer: 'Use leases with heartbeats and resume from checkpoints.', steps: steps.length }
  })
  return worker
}

/** The activity panel: one line per step, as a UI would list them. */
const panel = (job) => job.items.map((item) => `  ${{ completed: '✓', failed: '✗', running: '…' }[item.status] ?? '·'} ${item.label}${item.message ? ` (${item.message})` : ''}`).join('\n')

async function follow(client, jobId, log) {
  let shown = ''
  let last = null
  for await (const state of client.watchJob(jobId)) {
    const frame = `${state.status} · attempt ${state.attempt}\n${panel(state)}`
    if (frame !== shown) log(frame)
    shown = frame
    last = state
  }
  return last
}

export async function main({ url, apiKey, log }) {
  const worker = agentWorker({ url, apiKey })
  await worker.start()
  const backend = new JobwireBackend({ url, apiKey })
  const job = await backend.createJob({ type, input: { question: 'How do workers survive crashes?', failAtStep: 2 }, owner: { tenant: 'acme', user: 'ann' } })
  const { token } = await backend.mintToken({ jobIds: [job.id] })
  const client = createJobwireClient({ url, getToken: async () => token, WebSocket })

  const failed = await follow(client, job.id, log)
  log(`first run: ${failed.status} (${failed.error?.message}); checkpoint ${JSON.stringify(failed.checkpoint)}`)
  await backend.resumeJob(job.id) // your backend's "Retry" route
  client.refollow(job.id) // the client follows the resumed job again, from a fresh snapshot
  const finished = await follow(client, job.id, log)
  log(`after resume: ${finished.status}, ${JSON.stringify(finished.result)}\n--- the agent's text ---\n${finished.text}`)
  client.close()
  await worker.stop({ timeoutMs: 5_000 })
  return { failed, finished }
}

runIfMain(import.meta.url, main)
