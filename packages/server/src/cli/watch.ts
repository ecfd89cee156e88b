import { watchJob as followJob, type JobState, type JobUpdate, type StateChange } from '@jobwire/client'
import type { StreamMessage } from '@jobwire/protocol'
import { WebSocket } from 'ws'
import type { Target } from './client.js'

export interface WatchOptions {
  /** Print one line per change instead of redrawing a bar (used when stdout is not a terminal). */
  plain: boolean
  write: (text: string) => void
  /** Emits the job's stream messages, as the client applied them, as JSON lines instead of a bar. */
  json?: boolean
  /** Where a line about the connection goes (stderr), when there is no bar to show it in. */
  notice: (text: string) => void
}

/** Exit codes of `jobwire watch`: the job's outcome. */
export const watchExitCodes = { completed: 0, failed: 1, cancelled: 2 } as const

/** Failed connection attempts in a row after which `watch` gives up. */
const maxRetries = 30

/**
 * Follows a job with @jobwire/client (WebSocket, else SSE or polling; resumed from the last seq
 * applied after a drop, so nothing is missed or shown twice) until it ends, redrawing a progress bar.
 */
export function watchJob(target: Target, jobId: string, options: WatchOptions): Promise<JobState> {
  let lastLine = ''
  const bar = !options.plain && options.json !== true

  const render = (job: JobState): void => {
    const line = describe(job)
    if (options.plain) {
      if (line !== lastLine) options.write(`${line}\n`)
    } else {
      options.write(`\r\x1b[2K${line}`)
    }
    lastLine = line
  }

  return new Promise<JobState>((resolve, reject) => {
    const watch = followJob(jobId, {
      url: target.url,
      getToken: () => target.key,
      WebSocket,
      maxRetries,
      onUpdate: (state, update) => {
        if (options.json === true) options.write(`${JSON.stringify(asStreamMessage(state, update))}\n`)
        else render(state)
      },
      onConnection: (change: StateChange) => {
        if (change.to === 'reconnecting') {
          if (bar) options.write(`\r\x1b[2K(reconnecting: ${change.reason}) ${lastLine}`)
          else options.notice(`reconnecting to ${target.url}: ${change.reason}\n`)
        }
        if (change.to === 'live' && change.from === 'reconnecting' && !bar) options.notice(`reconnected to ${target.url}\n`)
        if (change.to === 'offline') {
          watch.stop()
          reject(new Error(`Lost the connection to Jobwire at ${target.url}: ${change.reason}`))
        }
      },
      onEnd: (error) => {
        if (bar) options.write('\n')
        if (error !== null) reject(error)
        else if (watch.state === null) reject(new Error(`the watch of ${jobId} ended before the job's state arrived`))
        else resolve(watch.state)
      },
    })
  })
}

/** The stream message the client applied for this update, in the wire's shape. */
function asStreamMessage(state: JobState, update: JobUpdate): StreamMessage {
  switch (update.cause) {
    case 'snapshot':
      return { type: 'snapshot', job: state, reset: false, reason: 'initial' }
    case 'reset':
      return { type: 'snapshot', job: state, reset: true, reason: 'trimmed' }
    case 'queue':
      return { type: 'queue', position: state.queuePosition ?? 0 }
    case 'event':
      return update.event === undefined ? { type: 'snapshot', job: state, reset: false, reason: 'initial' } : { type: 'event', event: update.event }
  }
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
