import { useEffect, useMemo, useRef, useState, useSyncExternalStore, type FormEvent, type ReactNode, type RefObject } from 'react'
import { isTerminal, jobStatuses, type JobState, type JobStatus } from '@jobwire/client'
import { useJobs, useJobwireClient } from '@jobwire/react'
import { jobDuration, useNow } from './format.js'
import type { JobListStore, ListedJob } from './job-list-store.js'
import { ProgressBar } from './progress-bar.js'
import { filtersKey, jobHref, type ListFilters } from './route.js'

/** Live watches at most at once: the rows on screen, never the thousands behind them. */
const maxWatched = 100

interface Props {
  list: JobListStore
  filters: ListFilters
  onFilters: (filters: ListFilters) => void
  /** Whose jobs these are, in words ("all owners", "demo:demo"…). */
  scope: string
  /** API keys may name an owner; people's credentials see their own jobs only. */
  ownerFilter: boolean
  knownTypes: readonly string[]
}

/**
 * Every job the credential may see, newest first: pages of the job list with "load more", the
 * rows on screen watched live over the client's one socket (`useJobs`), new jobs joining at the top.
 */
export function JobsList({ list, filters, onFilters, scope, ownerFilter, knownTypes }: Props): ReactNode {
  const client = useJobwireClient()
  const snapshot = useSyncExternalStore(list.subscribe, list.getSnapshot, list.getSnapshot)
  const listRef = useRef<HTMLOListElement>(null)
  const visible = useVisibleRows(listRef, snapshot.rows)
  const watched = useMemo(
    () =>
      snapshot.rows
        .filter((row) => visible.has(row.id) && !isTerminal(row.status))
        .slice(0, maxWatched)
        .map((row) => row.id),
    [snapshot.rows, visible],
  )
  const views = useJobs(watched)
  const live = useMemo(() => {
    const states = new Map<string, JobState>()
    for (const view of views) if (view.job !== null) states.set(view.jobId, view.job)
    return states
  }, [views])
  // Live states go into the list too, so a row keeps its last state once off screen.
  useEffect(() => {
    for (const job of live.values()) list.note(job)
  }, [list, live])
  // A finished watch behind a newer listed state: the job was resumed elsewhere, follow it again.
  useEffect(() => {
    for (const view of views) {
      const row = list.row(view.jobId)
      if (view.job !== null && isTerminal(view.job.status) && row !== undefined && row.seq > view.job.seq && !isTerminal(row.status)) client.refollow(view.jobId)
    }
  }, [client, list, views])

  const rows = snapshot.rows
  const now = useNow(rows.some((row) => row.status === 'running'))
  const types = useMemo(() => [...new Set([...knownTypes, ...rows.map((row) => row.type)])].sort(), [knownTypes, rows])
  const owners = useMemo(() => [...new Set(rows.flatMap((row) => (row.owner === null ? [] : [row.owner.tenant, `${row.owner.tenant}:${row.owner.user}`])))].sort(), [rows])
  const filtered = filters.status !== '' || filters.type !== '' || filters.owner !== ''

  // What the inputs say; applied on submit (the status at once). Reset when the address changes (back, a shared link).
  const [draft, setDraft] = useState(filters)
  const key = filtersKey(filters)
  useEffect(() => setDraft(filters), [key])
  const apply = (next: ListFilters): void => onFilters({ status: next.status, type: next.type.trim(), owner: ownerFilter ? next.owner.trim() : '' })
  const [announcement, setAnnouncement] = useState('')
  const loadMore = (): void => {
    const before = list.getSnapshot().rows.length
    void list.loadMore().then(() => {
      const after = list.getSnapshot()
      setAnnouncement(after.error !== null ? '' : `Loaded ${after.rows.length - before} older jobs; ${after.rows.length} shown.`)
    })
  }
  const submit = (event: FormEvent<HTMLFormElement>): void => {
    event.preventDefault()
    apply(draft)
  }

  return (
    <section aria-labelledby="jobs-title">
      <div className="list-head">
        <h2 id="jobs-title">Jobs</h2>
        <span className="muted" data-testid="scope">
          {scope}
        </span>
      </div>
      <form className="filters" role="search" aria-label="Filter jobs" onSubmit={submit}>
        <div className="field">
          <label htmlFor="filter-status">Status</label>
          <select
            id="filter-status"
            name="status"
            value={draft.status}
            onChange={(event) => {
              const next = { ...draft, status: event.target.value as JobStatus | '' }
              setDraft(next)
              apply(next)
            }}
          >
            <option value="">any</option>
            {jobStatuses.map((name) => (
              <option key={name} value={name}>
                {name}
              </option>
            ))}
          </select>
        </div>
        <SuggestField field="type" label="Type" value={draft.type} onChange={(type) => setDraft({ ...draft, type })} suggestions={types} placeholder="any" />
        {ownerFilter && (
          <SuggestField field="owner" label="Owner" value={draft.owner} onChange={(owner) => setDraft({ ...draft, owner })} suggestions={owners} placeholder="all owners" hint="tenant or tenant:user" />
        )}
        <div className="filter-buttons">
          <button type="submit">Apply</button>
          {filtered && (
            <button type="button" className="quiet" onClick={() => onFilters({ status: '', type: '', owner: '' })}>
              Clear filters
            </button>
          )}
        </div>
      </form>

      {snapshot.error !== null && (
        <p role="alert" className="error-text">
          <code>{snapshot.error.code}</code> {snapshot.error.message}
        </p>
      )}
      {snapshot.phase === 'loading' ? (
        <p className="muted">Loading jobs…</p>
      ) : rows.length === 0 ? (
        snapshot.phase === 'ready' && <p className="muted">{filtered ? 'No jobs match these filters.' : 'No jobs yet.'}</p>
      ) : (
        <ol className="jobs" ref={listRef} aria-label="Jobs, newest first">
          {rows.map((row) => (
            <JobRow key={row.id} job={newest(row, live.get(row.id))} now={now} showOwner={ownerFilter} />
          ))}
        </ol>
      )}
      {snapshot.phase === 'ready' && rows.length > 0 && (
        <div className="pager">
          <p className="muted" data-testid="list-count">
            {rows.length === 1 ? '1 job' : `${rows.length} jobs`}
            {snapshot.hasMore ? ' shown, newest first' : filtered ? ' match' : ', all of them'}
          </p>
          {snapshot.hasMore && (
            <button type="button" onClick={loadMore} disabled={snapshot.loadingMore}>
              {snapshot.loadingMore ? 'Loading…' : 'Load older jobs'}
            </button>
          )}
        </div>
      )}
      {/* Said once per "load more"; new jobs arriving at the top are not read out (there can be many). */}
      <p role="status" className="visually-hidden">
        {announcement}
      </p>
    </section>
  )
}

/** A text filter with a datalist of suggestions (what the list has shown). */
function SuggestField(props: { field: 'type' | 'owner'; label: string; value: string; onChange: (value: string) => void; suggestions: readonly string[]; placeholder: string; hint?: string }): ReactNode {
  const { field, hint } = props
  return (
    <>
      <div className="field">
        <label htmlFor={`filter-${field}`}>{props.label}</label>
        <input
          id={`filter-${field}`}
          name={field}
          value={props.value}
          onChange={(event) => props.onChange(event.target.value)}
          list={`job-${field}s`}
          placeholder={props.placeholder}
          aria-describedby={hint === undefined ? undefined : `${field}-hint`}
          autoComplete="off"
          spellCheck={false}
        />
        {hint !== undefined && (
          <span id={`${field}-hint`} className="hint">
            {hint}
          </span>
        )}
      </div>
      <datalist id={`job-${field}s`}>
        {props.suggestions.map((name) => (
          <option key={name} value={name} />
        ))}
      </datalist>
    </>
  )
}

function JobRow({ job, now, showOwner }: { job: ListedJob; now: number; showOwner: boolean }): ReactNode {
  const owner = job.owner === null ? 'no owner' : `${job.owner.tenant}:${job.owner.user}`
  return (
    <li className={`job-row ${job.status}`} data-job-id={job.id} data-status={job.status} data-owner={owner}>
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
        {job.status === 'failed' && job.error !== null && <code className="error-text">{job.error.code}</code>}
        {job.attempt > 1 && <span>attempt {job.attempt}</span>}
        {showOwner && <span className="owner">{owner}</span>}
      </div>
    </li>
  )
}

/** The state with the newer seq (a live watch is usually ahead of the list, but not always). */
function newest(row: ListedJob, live: JobState | undefined): ListedJob {
  return live !== undefined && (live.seq > row.seq || (live.seq === row.seq && live.queuePosition !== row.queuePosition)) ? live : row
}

/**
 * The ids of the rows on screen (and a screen's height around them), so only those are watched;
 * settles 100 ms after scrolling stops.
 */
function useVisibleRows(listRef: RefObject<HTMLOListElement | null>, rows: readonly ListedJob[]): ReadonlySet<string> {
  const [visible, setVisible] = useState<ReadonlySet<string>>(() => new Set())
  const ids = rows.map((row) => row.id).join(' ')
  useEffect(() => {
    const root = listRef.current
    if (root === null) return
    const shown = new Set<string>()
    let timer: ReturnType<typeof setTimeout> | null = null
    const observer = new IntersectionObserver(
      (entries) => {
        for (const entry of entries) {
          const id = (entry.target as HTMLElement).dataset.jobId
          if (id === undefined) continue
          if (entry.isIntersecting) shown.add(id)
          else shown.delete(id)
        }
        if (timer !== null) clearTimeout(timer)
        timer = setTimeout(() => setVisible((previous) => (sameSet(previous, shown) ? previous : new Set(shown))), 100)
      },
      { rootMargin: '100% 0px' },
    )
    for (const row of root.querySelectorAll('[data-job-id]')) observer.observe(row)
    return () => {
      observer.disconnect()
      if (timer !== null) clearTimeout(timer)
    }
  }, [listRef, ids])
  return visible
}

function sameSet(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  if (a.size !== b.size) return false
  for (const value of a) if (!b.has(value)) return false
  return true
}
