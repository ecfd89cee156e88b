import {
  applyEvent,
  createSseParser,
  decodeSseMessage,
  isTerminal,
  JobwireError,
  type JobState,
  type StreamMessage,
} from '@jobwire/protocol'
import type { Target } from './client.js'

export interface WatchOptions {
  /** Print one line per change instead of redrawing a bar (used when stdout is not a terminal). */
  plain: boolean
  write: (text: string) => void
  /** Emits the job's raw stream messages as JSON lines instead of a bar. */
  json?: boolean
}

/** Exit codes of `jobwire watch`: the job's outcome. */
export const watchExitCodes = { completed: 0, failed: 1, cancelled: 2 } as const

/**
 * Follows a job over SSE until it ends, redrawing a progress bar. A dropped connection is resumed
 * from the last seq applied (Last-Event-ID), so nothing is missed or shown twice.
 */
export async function watchJob(target: Target, jobId: string, options: WatchOptions): Promise<JobState> {
  let state: JobState | null = null
  let position: number | undefined
  let lastLine = ''
  let failures = 0

  const render = (job: JobState): void => {
    if (options.json === true) return
    const line = describe(job)
    if (options.plain) {
      if (line !== lastLine) options.write(`${line}\n`)
    } else {
      options.write(`\r\x1b[2K${line}`)
    }
    lastLine = line
  }

  const apply = (message: StreamMessage): void => {
    if (options.json === true) options.write(`${JSON.stringify(message)}\n`)
    switch (message.type) {
      case 'snapshot':
        state = message.job
        position = message.job.seq
        break
      case 'event':
        if (state !== null && message.event.seq === state.seq + 1) {
          state = applyEvent(state, message.event)
          position = state.seq
        }
        break
      case 'recovered':
        break
      case 'queue':
        if (state !== null) state = { ...state, queuePosition: message.position }
        break
      case 'error':
        throw JobwireError.fromBody(message.error)
      default:
        message satisfies never
    }
    if (state !== null) render(state)
  }

  for (;;) {
    const current = state as JobState | null
    if (current !== null && isTerminal(current.status)) break
    try {
      const headers: Record<string, string> = { authorization: `Bearer ${target.key}`, accept: 'text/event-stream' }
      if (position !== undefined) headers['last-event-id'] = String(position)
      const response = await fetch(`${target.url}/v1/jobs/${encodeURIComponent(jobId)}/stream`, { headers })
      if (!response.ok) {
        const body = (await response.json().catch(() => null)) as { error?: { code: never; message: string } } | null
        if (body?.error !== undefined) throw JobwireError.fromBody(body.error)
        throw new Error(`HTTP ${response.status}`)
      }
      failures = 0
      const parser = createSseParser((frame) => {
        const message = decodeSseMessage(frame)
        if (message !== null) apply(message)
      })
      const decoder = new TextDecoder()
      for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) parser.push(decoder.decode(chunk, { stream: true }))
    } catch (error) {
      if (error instanceof JobwireError && !error.retryable) throw error
      failures++
      if (failures > 30) throw error
      const delay = Math.random() * Math.min(10_000, 250 * 2 ** failures)
      if (!options.plain && options.json !== true) options.write(`\r\x1b[2K(reconnecting…) ${lastLine}`)
      await new Promise((resolve) => setTimeout(resolve, delay))
    }
  }
  if (!options.plain && options.json !== true) options.write('\n')
  return state as unknown as JobState
}

function describe(job: JobState): string {
  const percent = job.progress.percent
  const width = 30
  const filled = percent === null ? 0 : Math.round((percent / 100) * width)
  const bar = `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}]`
  const pct = percent === null ? '   ' : `${String(Math.round(percent)).padStart(3)}%`
  const parts = [bar, pct, job.status]
  if (job.status === 'queued' && job.queuePosition !== null) parts.push(`#${job.queuePosition} in queue`)
  if (job.attempt > 1) parts.push(`attempt ${job.attempt}`)
  if (job.progress.stage !== null) parts.push(job.progress.stage)
  if (job.progress.message !== null) parts.push(`— ${job.progress.message}`)
  const items = job.items
  if (items.length > 0) parts.push(`(${items.filter((i) => i.status === 'completed').length}/${items.length} items)`)
  if (job.text.length > 0) parts.push(`text: ${job.text.length} chars`)
  if (job.status === 'failed' && job.error !== null) parts.push(`${job.error.code}: ${job.error.message}`)
  return parts.join(' ')
}
