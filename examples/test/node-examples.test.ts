/**
 * The Node examples, each run against a real Jobwire server started here: their own code, as
 * `node examples/<name>/index.mjs` runs it, with its output collected instead of printed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { JobState } from '@jobwire/protocol'
import { startTestServer, type TestServer } from '../../packages/server/test/fixtures.js'

type Main<Result> = (options: { url: string; apiKey: string; log: (line: string) => void; write?: (text: string) => void; args?: string[] }) => Promise<Result>
/** The examples are plain ES modules (runnable without a build step); loaded by path and typed here. */
const load = <Module>(path: string): Promise<Module> => import(/* @vite-ignore */ new URL(path, import.meta.url).href) as Promise<Module>

let server: TestServer
beforeAll(async () => {
  server = await startTestServer()
})
afterAll(async () => {
  await server?.close()
})

describe('examples/ai-suggestions', () => {
  it('streams the suggestion as text, printing each new piece once, then the structured result', async () => {
    const { main } = await load<{ main: Main<JobState> }>('../ai-suggestions/index.mjs')
    let written = ''
    const lines: string[] = []
    const job = await main({ url: server.url, apiKey: server.key, log: (line) => lines.push(line), write: (text) => (written += text) })
    expect(job.status).toBe('completed')
    expect(job.text).toMatch(/^Three ideas for "our release notes": lead with offline mode/)
    expect(written).toBe(`${job.text}\n`)
    expect(job.result).toEqual({ suggestions: ['Lead with offline mode', 'One number for start-up time', 'Link the migration steps'] })
    expect(lines.at(-1)).toMatch(/^completed: \{"suggestions"/)
  })
})

describe('examples/transcription', () => {
  it('moves through its stages with a bar per file and checkpoints each file', async () => {
    const { main } = await load<{ main: Main<JobState> }>('../transcription/index.mjs')
    const frames: string[] = []
    const job = await main({ url: server.url, apiKey: server.key, log: (line) => frames.push(line), args: ['a.mp3', 'b.wav'] })
    expect(job.status).toBe('completed')
    expect(job.items.map((item) => [item.id, item.status, item.percent])).toEqual([
      ['a.mp3', 'completed', 100],
      ['b.wav', 'completed', 100],
    ])
    expect(job.checkpoint).toEqual({ done: ['a.mp3', 'b.wav'] })
    // The stage plan: the server computed the overall percent, every stage ran to done.
    expect(job.plan?.map((stage) => [stage.name, stage.from, stage.to, stage.status])).toEqual([
      ['validating', 0, 10, 'done'],
      ['transcribing', 10, 90, 'done'],
      ['aligning', 90, 100, 'done'],
    ])
    expect(job.progress.percent).toBe(100)
    expect(job.progress.metadata).toEqual({ filesDone: 1, totalFiles: 2 })
    expect(job.items.map((item) => item.metadata)).toEqual([{ secondsDone: 60 }, { secondsDone: 60 }])
    expect(job.result).toEqual({ files: [{ file: 'a.mp3', words: 150 }, { file: 'b.wav', words: 150 }] })
    // The client asked for a credential for this job alone (a per-job token).
    expect(frames[0]).toBe(`token for ${job.id}`)
    const all = frames.join('\n')
    expect(all).toContain('· aligning ·')
    expect(all).toMatch(/validating done · transcribing \d+% · aligning pending/)
    // Per-file progress: b.wav was seen pending or running while a.mp3 was already done.
    expect(frames.some((frame) => /a\.mp3 .* completed/.test(frame) && /b\.wav .* (pending|running)/.test(frame))).toBe(true)
  })
})

describe('examples/agent', () => {
  it('fails at the broken tool keeping its checkpoint, and a resume finishes from there without redoing steps', async () => {
    const { main, steps } = await load<{ main: Main<{ failed: JobState; finished: JobState }>; steps: string[] }>('../agent/index.mjs')
    const frames: string[] = []
    const { failed, finished } = await main({ url: server.url, apiKey: server.key, log: (line) => frames.push(line) })
    expect(failed.status).toBe('failed')
    expect(failed.error?.code).toBe('tool_unavailable')
    expect(failed.checkpoint).toEqual({ step: 2 })
    expect(finished.status).toBe('completed')
    expect(finished.attempt).toBe(2)
    // The activity panel: every step once, all done; the step that failed says it was done on the resumed attempt.
    expect(finished.items.map((item) => [item.label, item.status])).toEqual(steps.map((step) => [step, 'completed']))
    expect(finished.items[2]?.message).toBe('done on the resumed attempt')
    for (const step of steps) expect(finished.text.split(`${step}: done.`)).toHaveLength(2)
    expect(finished.text).toContain('[resumed at step 3, attempt 2]')
    expect(frames.some((frame) => frame.includes('✗ Read the pages (search tool unavailable)'))).toBe(true)
  })
})
