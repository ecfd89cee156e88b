// AI suggestions streamed as text: a worker streams a model's tokens as `chunk` events; the client
// prints each new piece of text as it arrives and the structured result at the end.
//   npx jobwire serve            (another terminal)
//   node examples/ai-suggestions/index.mjs
import { JobwireBackend } from '@jobwire/backend'
import { createJobwireClient } from '@jobwire/client'
import { createWorker } from '@jobwire/worker'
import WebSocket from 'ws'
import { runIfMain } from '../connect.mjs'

export const type = 'example-suggestions'

/** Stands in for a model's token stream. */
async function* generate(prompt, signal) {
  const answer = `Three ideas for "${prompt}": lead with offline mode, give one number for the faster start-up, and link the migration steps.`
  for (const token of answer.match(/\S+\s*/g) ?? []) {
    if (signal.aborted) return
    await new Promise((resolve) => setTimeout(resolve, 15))
    yield token
  }
}

export function suggestionWorker({ url, apiKey }) {
  const worker = createWorker({ url, apiKey, name: 'suggestions-example', concurrency: 2 })
  worker.handle(type, async (job, ctx) => {
    ctx.progress({ stage: 'writing', message: 'Streaming suggestions' })
    for await (const token of generate(job.input.prompt, ctx.signal)) ctx.chunk(token)
    return { suggestions: ['Lead with offline mode', 'One number for start-up time', 'Link the migration steps'] }
  })
  return worker
}

export async function main({ url, apiKey, log, write = () => {} }) {
  const worker = suggestionWorker({ url, apiKey })
  await worker.start()
  const backend = new JobwireBackend({ url, apiKey })
  // A suggestion nobody reads is not worth generating: it may run 2 minutes, wait 10 for a worker,
  // and is cancelled (reason `unwatched`) once nobody has watched it for 30 s.
  const job = await backend.createJob({
    type,
    input: { prompt: 'our release notes' },
    owner: { tenant: 'acme', user: 'ann' },
    timeout: '2m',
    queueTimeout: '10m',
    cancelWhenUnwatched: '30s',
  })
  const { token } = await backend.mintToken({ jobIds: [job.id] })

  // The browser's side (here in Node, so it is given the `ws` WebSocket).
  const client = createJobwireClient({ url, getToken: async () => token, WebSocket })
  let shown = 0
  let last = null
  for await (const state of client.watchJob(job.id)) {
    if (state.text.length > shown) {
      write(state.text.slice(shown)) // only the new text: a typing effect
      shown = state.text.length
    }
    last = state
  }
  write('\n')
  log(`${last.status}: ${JSON.stringify(last.result)}`)
  client.close()
  await worker.stop({ timeoutMs: 5_000 })
  return last
}

runIfMain(import.meta.url, main)
