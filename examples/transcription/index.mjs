// Transcription with a stage plan and per-file progress: the job declares its stages (validating
// 0–10 %, transcribing 10–90 %, aligning 90–100 %), the worker reports how far the current stage is
// and the server computes the overall percent; each file is an item with its own percent and
// metadata, with a checkpoint after every file; the client redraws one line per file as the job moves.
//   npx jobwire serve            (another terminal)
//   node examples/transcription/index.mjs a.mp3 b.wav c.m4a
import { JobwireBackend } from '@jobwire/backend'
import { createJobwireClient } from '@jobwire/client'
import { createWorker } from '@jobwire/worker'
import WebSocket from 'ws'
import { runIfMain } from '../connect.mjs'

export const type = 'example-transcription'
const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** The job's stage plan: each stage owns a slice of the overall percent. */
export const stages = [
  { name: 'validating', to: 10 },
  { name: 'transcribing', to: 90 },
  { name: 'aligning', to: 100 },
]

export function transcriptionWorker({ url, apiKey }) {
  const worker = createWorker({ url, apiKey, name: 'transcription-example', concurrency: 2 })
  worker.handle(type, async (job, ctx) => {
    const files = job.input.files
    const done = new Set(job.checkpoint?.done ?? []) // a retry skips what an earlier attempt finished
    ctx.progress({ stage: 'validating', fraction: 0, message: `Checking ${files.length} files` })
    for (const file of files) ctx.item(file, { label: file, status: done.has(file) ? 'completed' : 'pending', percent: done.has(file) ? 100 : 0 })
    await pause(50)

    ctx.stage('transcribing')
    const words = {}
    for (const [index, file] of files.entries()) {
      if (done.has(file)) continue
      for (let part = 1; part <= 4; part++) {
        if (ctx.signal.aborted) return undefined
        await pause(40)
        ctx.item(file, { status: 'running', percent: part * 25, metadata: { secondsDone: part * 15 } })
        ctx.stage('transcribing', (index + part / 4) / files.length, { filesDone: done.size, totalFiles: files.length })
      }
      words[file] = 100 + file.length * 10
      ctx.item(file, { status: 'completed', percent: 100 })
      done.add(file)
      await ctx.checkpoint({ done: [...done] })
    }

    ctx.progress({ stage: 'aligning', fraction: 0, message: 'Aligning timestamps' })
    await pause(50)
    return { files: files.map((file) => ({ file, words: words[file] ?? null })) }
  })
  return worker
}

/** The plan (`validating ✓ · transcribing 50% · aligning …`), then one line per file: `a.mp3  ██████░░  75%  running`. */
function render(job) {
  const plan = (job.plan ?? []).map((stage) => `${stage.name} ${stage.status === 'running' ? `${Math.round(stage.fraction * 100)}%` : stage.status}`).join(' · ')
  const head = `${job.status} · ${job.progress.stage ?? '-'} · ${Math.round(job.progress.percent ?? 0)}% [${plan}]`
  const rows = job.items.map((item) => {
    const filled = Math.round((item.percent ?? 0) / 12.5)
    return `  ${(item.label ?? item.id).padEnd(12)} ${'█'.repeat(filled)}${'░'.repeat(8 - filled)} ${String(Math.round(item.percent ?? 0)).padStart(3)}%  ${item.status}`
  })
  return [head, ...rows].join('\n')
}

export async function main({ url, apiKey, log, args = [] }) {
  const worker = transcriptionWorker({ url, apiKey })
  await worker.start()
  const backend = new JobwireBackend({ url, apiKey })
  const input = { files: args.length > 0 ? args : ['interview.mp3', 'intro.wav', 'outro.m4a'] }
  const job = await backend.createJob({ type, input, stages, owner: { tenant: 'acme', user: 'ann' } })

  // The client says which jobs it needs a credential for; your backend checks the user may see
  // them and mints a token for exactly those (one client can carry many jobs, each with its own).
  const getToken = async (request) => {
    if (request.scope !== 'jobs') return null
    log(`token for ${request.jobIds.join(', ')}`)
    return (await backend.mintToken({ jobIds: [...request.jobIds] })).token
  }
  const client = createJobwireClient({ url, getToken, WebSocket })
  let shown = ''
  let last = null
  for await (const state of client.watchJob(job.id)) {
    const frame = render(state)
    if (frame !== shown) log(frame)
    shown = frame
    last = state
  }
  log(`result: ${JSON.stringify(last.result)}`)
  client.close()
  await worker.stop({ timeoutMs: 5_000 })
  return last
}

runIfMain(import.meta.url, main)
