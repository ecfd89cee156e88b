import { useEffect, useState, type ReactNode } from 'react'
import type { JobState } from '@jobwire/client'
import { useJob, useJobResult, type JobView } from '@jobwire/react'
import type { JobActions } from './actions.js'
import { formatDuration, formatTime, jobDuration, useNow } from './format.js'
import { JsonView } from './json-view.js'
import { ProgressBar } from './progress-bar.js'
import { MetadataList, StagePlanTimeline } from './stage-plan.js'
import { jobHref } from './route.js'

/** One job, live: its timeline, items, streamed text, result or error, and what may be done to it. */
interface Props {
  jobId: string
  actions: JobActions
  canCancel: boolean
  backHref: string
  /** Each state the page sees (the list keeps it, so its row is current when you go back). */
  onState: (job: JobState) => void
}

export function JobPage({ jobId, actions, canCancel, backHref, onState }: Props): ReactNode {
  const view = useJob(jobId)
  useEffect(() => {
    if (view.job !== null) onState(view.job)
  }, [view.job, onState])
  const active = view.status === 'queued' || view.status === 'running'
  const now = useNow(active)
  return (
    <article className="job-page" aria-labelledby="job-title">
      <p>
        <a href={backHref}>← All jobs</a>
      </p>
      <Body view={view} now={now} actions={actions} canCancel={canCancel} />
    </article>
  )
}

function Body({ view, now, actions, canCancel }: { view: JobView; now: number; actions: JobActions; canCancel: boolean }): ReactNode {
  switch (view.status) {
    case 'idle':
    case 'loading':
      return (
        <h2 id="job-title" className="muted">
          Loading job {view.jobId}…
        </h2>
      )
    case 'error':
      return (
        <>
          <h2 id="job-title">Job {view.jobId}</h2>
          <p role="alert" className="error-text">
            <code>{view.error.code}</code> {view.error.message}
          </p>
        </>
      )
    case 'queued':
    case 'running':
    case 'completed':
    case 'failed':
    case 'cancelled':
      return <KnownJob view={view} job={view.job} now={now} actions={actions} canCancel={canCancel} />
  }
}

function KnownJob({ view, job, now, actions, canCancel }: { view: JobView; job: JobState; now: number; actions: JobActions; canCancel: boolean }): ReactNode {
  const streaming = job.status === 'running'
  return (
    <>
      <header className="job-head">
        <h2 id="job-title">
          {job.type} <span className="id">{job.id}</span>
        </h2>
        <span className={`badge ${job.status}`} data-testid="job-status">
          {job.status}
        </span>
      </header>
      <Controls view={view} job={job} actions={actions} canCancel={canCancel} />
      <section aria-label="Progress" className="card">
        <ProgressBar percent={job.progress.percent} label="Overall progress" tone={job.status} />
        <p className="meta">
          <span>{job.progress.stage ?? (job.status === 'queued' ? 'waiting' : '—')}</span>
          {job.progress.percent !== null && <span>{Math.round(job.progress.percent)}%</span>}
          {job.queuePosition !== null && <span>#{job.queuePosition} in queue</span>}
          <span>ran {jobDuration(job, now)}</span>
        </p>
        {job.progress.message !== null && <p className="muted">{job.progress.message}</p>}
        <MetadataList metadata={job.progress.metadata} label="Progress metadata" />
      </section>

      {job.plan !== undefined && <StagePlanTimeline plan={job.plan} />}

      {job.error !== null && (
        <Card id="error" title="Error" tone="failed">
          <p>
            <code data-testid="error-code">{job.error.code}</code> {job.error.message}
            {job.error.retryable ? ' (retryable)' : ''}
          </p>
        </Card>
      )}

      {job.stages.length > 0 && (
        <Card id="stages" title="Stages">
          <ol className="timeline">
            {job.stages.map((entry, index) => {
              const next = job.stages[index + 1]
              const end = next !== undefined ? Date.parse(next.at) : job.finishedAt !== null ? Date.parse(job.finishedAt) : now
              return (
                <li key={`${entry.stage}-${entry.at}`} className={next === undefined && streaming ? 'current' : ''}>
                  <span className="stage-name">{entry.stage}</span>
                  <time dateTime={entry.at}>{formatTime(entry.at)}</time>
                  <span className="muted">{formatDuration(end - Date.parse(entry.at))}</span>
                </li>
              )
            })}
          </ol>
        </Card>
      )}

      {job.items.length > 0 && (
        <Card id="items" title="Items">
          <ul className="items">
            {job.items.map((item) => (
              <li key={item.id} data-item-status={item.status}>
                <span className="item-label">{item.label ?? item.id}</span>
                <ProgressBar percent={item.status === 'completed' ? 100 : item.percent} label={`${item.label ?? item.id} progress`} tone={item.status} />
                <span className="item-status">{item.status === 'running' && item.percent !== null ? `${Math.round(item.percent)}%` : item.status}</span>
                {item.metadata !== undefined && (
                  <span className="item-metadata">
                    <MetadataList metadata={item.metadata} label={`${item.label ?? item.id} metadata`} />
                  </span>
                )}
              </li>
            ))}
          </ul>
        </Card>
      )}

      {(job.text !== '' || streaming) && (
        <Card id="text" title="Output">
          <pre className={`stream ${streaming ? 'streaming' : ''}`} aria-live="off" data-testid="job-text">
            {job.text}
          </pre>
        </Card>
      )}

      {job.status === 'completed' && ((job.result !== undefined && job.result !== null) || job.resultRef !== undefined) && <ResultCard job={job} />}

      <Card id="details" title="Details">
        <dl className="details">
          <dt>Attempt</dt>
          <dd data-testid="attempts">
            {job.attempt} of {job.maxAttempts}
          </dd>
          <dt>Worker</dt>
          <dd>{job.worker ?? '—'}</dd>
          <dt>Owner</dt>
          <dd>{job.owner === null ? '—' : `${job.owner.tenant}:${job.owner.user}`}</dd>
          <dt>Created</dt>
          <dd>{formatTime(job.createdAt)}</dd>
          <dt>Seq</dt>
          <dd>{job.seq}</dd>
          <dt>Link</dt>
          <dd>
            <a href={jobHref(job.id)}>{jobHref(job.id)}</a>
          </dd>
        </dl>
        {job.checkpointRef !== undefined && (
          <>
            <h4>Checkpoint</h4>
            <p className="muted small">{job.checkpointRef.size.toLocaleString()} bytes, stored apart (GET /v1/jobs/:id/checkpoint)</p>
          </>
        )}
        {job.checkpoint !== null && job.checkpoint !== undefined && (
          <>
            <h4>Checkpoint</h4>
            <JsonView value={job.checkpoint} label="Checkpoint" />
          </>
        )}
      </Card>
    </>
  )
}

/** The result, fetched once when the server keeps it apart (too large for an event). */
function ResultCard({ job }: { job: JobState }): ReactNode {
  const view = useJobResult(job.id)
  return (
    <Card id="result" title="Result">
      {job.resultRef !== undefined && <p className="muted small">{job.resultRef.size.toLocaleString()} bytes, stored apart</p>}
      {view.status === 'ready' && <JsonView value={view.result} label="Result" />}
      {view.status === 'pending' && <p className="muted">Loading…</p>}
      {view.status === 'error' && (
        <p role="alert" className="error-text">
          <code>{view.error.code}</code> {view.error.message}
        </p>
      )}
    </Card>
  )
}

/** Cancel, Resume and Retry, each only where it applies and the credential allows. */
function Controls({ view, job, actions, canCancel }: { view: JobView; job: JobState; actions: JobActions; canCancel: boolean }): ReactNode {
  const [busy, setBusy] = useState(false)
  const [error, setError] = useState<string | null>(null)
  const run = (action: () => Promise<unknown>): void => {
    setBusy(true)
    setError(null)
    action()
      .catch((failure: unknown) => setError((failure as Error).message))
      .finally(() => setBusy(false))
  }
  const active = job.status === 'queued' || job.status === 'running'
  const resumable = job.status === 'cancelled' || job.status === 'failed'
  const buttons = [
    active && canCancel && view.status !== 'idle' && (
      <button key="cancel" type="button" className="danger" disabled={busy} onClick={() => run(() => view.cancel('cancelled from the dashboard'))}>
        Cancel
      </button>
    ),
    resumable && actions.canResume && (
      <button key="resume" type="button" disabled={busy} onClick={() => run(() => actions.resume(job.id))}>
        Resume
      </button>
    ),
    !active && actions.canCreate && (
      <button key="retry" type="button" disabled={busy} onClick={() => run(async () => (location.hash = jobHref(await actions.retry(job))))}>
        Retry as a new job
      </button>
    ),
  ].filter(Boolean)
  if (buttons.length === 0 && error === null) return null
  return (
    <div className="controls" role="group" aria-label="Job actions">
      {buttons}
      {error !== null && (
        <span role="alert" className="error-text small">
          {error}
        </span>
      )}
    </div>
  )
}

/** A titled card of the job page; its heading labels it for assistive technology. */
function Card({ id, title, tone, children }: { id: string; title: string; tone?: 'failed'; children: ReactNode }): ReactNode {
  return (
    <section className={tone === undefined ? 'card' : `card ${tone}`} aria-labelledby={`${id}-title`}>
      <h3 id={`${id}-title`}>{title}</h3>
      {children}
    </section>
  )
}
