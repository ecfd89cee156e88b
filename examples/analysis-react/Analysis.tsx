import { useJob } from '@jobwire/react'

/**
 * One analysis, live. Mounted late (the job is already half done), it shows where the job is now,
 * not from the start: the first thing it gets is a snapshot. `connection` says how it is followed:
 * `live` (WebSocket or SSE) or `polling` when neither gets through.
 */
export function Analysis({ jobId }: { jobId: string }) {
  const job = useJob(jobId)
  switch (job.status) {
    case 'idle':
    case 'loading':
      return <p>Loading the analysis…</p>
    case 'queued':
      return <p>Queued, {job.queuePosition ?? 0} ahead</p>
    case 'running': {
      const percent = Math.round(job.progress.percent ?? 0)
      return (
        <section aria-label="analysis">
          <p>
            {job.progress.stage}: {percent}% — {job.progress.message}
          </p>
          <progress max={100} value={percent} aria-label="progress" />
          <p data-testid="connection">followed: {job.connection}</p>
          <button onClick={() => void job.cancel()}>Cancel</button>
        </section>
      )
    }
    case 'completed': {
      const result = job.result as { risk: string; clauses: number; flagged: number[] }
      return (
        <p>
          Risk {result.risk}: {result.clauses} clauses, {result.flagged.length} flagged (followed: {job.connection})
        </p>
      )
    }
    case 'failed':
      return <p>Failed: {job.error.message}</p>
    case 'cancelled':
      return <p>Cancelled.</p>
    case 'error':
      return <p>Cannot show this analysis ({job.error.code}).</p>
  }
}
