import { useMemo, useState, type FormEvent, type ReactNode } from 'react'
import type { JobState, JobStatus, Owner } from '@jobwire/client'
import type { MyJobsView } from '@jobwire/react'
import { jobDuration, useNow } from './format.js'
import { ProgressBar } from './progress-bar.js'
import { jobHref } from './route.js'

const statuses: readonly JobStatus[] = ['queued', 'running', 'completed', 'failed', 'cancelled']
const pageSize = 20

interface Props {
  view: MyJobsView
  /** API keys must name an owner; tokens imply theirs. */
  needsOwner: boolean
  owner: Owner | undefined
  onOwner: (owner: Owner | undefined) => void
}

/** Every job the credential may see, newest first, live; filtered and paginated here. */
export function JobsList({ view, needsOwner, owner, onOwner }: Props): ReactNode {
  const [status, setStatus] = useState<JobStatus | ''>('')
  const [type, setType] = useState('')
  const [ownerText, setOwnerText] = useState('')
  const [page, setPage] = useState(0)
  const types = useMemo(() => [...new Set(view.jobs.map((job) => job.type))].sort(), [view.jobs])
  const owners = useMemo(() => [...new Set(view.jobs.map(ownerName))].sort(), [view.jobs])
  const shown = useMemo(
    () => view.jobs.filter((job) => (status === '' || job.status === status) && (type === '' || job.type === type) && (ownerText === '' || ownerName(job) === ownerText)),
    [view.jobs, status, type, ownerText],
  )
  const pages = Math.max(1, Math.ceil(shown.length / pageSize))
  const current = Math.min(page, pages - 1)
  const rows = shown.slice(current * pageSize, (current + 1) * pageSize)
  const now = useNow(rows.some((job) => job.status === 'running'))

  const chooseOwner = (event: FormEvent<HTMLFormElement>): void => {
    event.preventDefault()
    const value = String(new FormData(event.currentTarget).get('owner') ?? '')
    const [tenant, user] = value.split(':')
    onOwner(tenant && user ? { tenant, user } : undefined)
  }

  return (
    <section aria-labelledby="jobs-title">
      <h2 id="jobs-title">Jobs</h2>
      {needsOwner && (
        <form className="filters" onSubmit={chooseOwner}>
          <label>
            Owner (tenant:user)
            <input name="owner" defaultValue={owner === undefined ? '' : `${owner.tenant}:${owner.user}`} placeholder="acme:alice" />
          </label>
          <button type="submit">Follow</button>
        </form>
      )}
      <div className="filters" role="group" aria-label="Filters">
        <label>
          Status
          <select value={status} onChange={(event) => (setStatus(event.target.value as JobStatus | ''), setPage(0))}>
            <option value="">all</option>
            {statuses.map((name) => (
              <option key={name}>{name}</option>
            ))}
          </select>
        </label>
        <label>
          Type
          <select value={type} onChange={(event) => (setType(event.target.value), setPage(0))}>
            <option value="">all</option>
            {types.map((name) => (
              <option key={name}>{name}</option>
            ))}
          </select>
        </label>
        <label>
          Owner
          <select value={ownerText} onChange={(event) => (setOwnerText(event.target.value), setPage(0))}>
            <option value="">all</option>
            {owners.map((name) => (
              <option key={name}>{name}</option>
            ))}
          </select>
        </label>
      </div>
      {view.status === 'error' && (
        <p role="alert" className="error-text">
          {view.error.code}: {view.error.message}
        </p>
      )}
      {needsOwner && owner === undefined ? (
        <p className="muted">An API key follows one owner's jobs: name the owner above.</p>
      ) : view.status === 'loading' ? (
        <p className="muted">Loading jobs…</p>
      ) : shown.length === 0 ? (
        <p className="muted">No jobs{view.jobs.length > 0 ? ' match these filters' : ' yet'}.</p>
      ) : (
        <ol className="jobs" aria-label={`Jobs, page ${current + 1} of ${pages}`}>
          {rows.map((job) => (
            <JobRow key={job.id} job={job} now={now} />
          ))}
        </ol>
      )}
      {pages > 1 && (
        <nav className="pager" aria-label="Pages">
          <button type="button" onClick={() => setPage(current - 1)} disabled={current === 0}>
            Newer
          </button>
          <span>
            Page {current + 1} of {pages} · {shown.length} jobs
          </span>
          <button type="button" onClick={() => setPage(current + 1)} disabled={current >= pages - 1}>
            Older
          </button>
        </nav>
      )}
    </section>
  )
}

function JobRow({ job, now }: { job: JobState; now: number }): ReactNode {
  return (
    <li className={`job-row ${job.status}`} data-job-id={job.id}>
      <a href={jobHref(job.id)} className="row-link">
        <span className="type">{job.type}</span>
        <span className={`badge ${job.status}`}>{job.status}</span>
        <span className="id">{job.id}</span>
      </a>
      <ProgressBar percent={job.progress.percent} label={`${job.type} ${job.id} progress`} tone={job.status} />
      <div className="meta">
        <span>{job.progress.stage ?? (job.status === 'queued' ? 'waiting' : '—')}</span>
        {job.queuePosition !== null && <span>#{job.queuePosition} in queue</span>}
        <span>{jobDuration(job, now)}</span>
        {job.progress.percent !== null && <span>{Math.round(job.progress.percent)}%</span>}
      </div>
    </li>
  )
}

function ownerName(job: JobState): string {
  return job.owner === null ? '—' : `${job.owner.tenant}:${job.owner.user}`
}
