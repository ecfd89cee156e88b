import { useEffect, useMemo, useState, useSyncExternalStore } from 'react'
import type { ConnectionState, JobState, JobStatus, JobWatch, JobwireClient, MyJobsWatch, JobwireError, Owner, StateChange } from '@jobwire/client'
import { useJobwireClient } from './context.js'
import { connectionOf, viewOf, type JobConnection, type JobView } from './job-view.js'

export interface UseJobOptions {
  /** The client to use instead of the JobwireProvider's. */
  client?: JobwireClient
}

/**
 * A store for useSyncExternalStore over some watches: they start with the first subscriber and
 * stop with the last, so StrictMode's mount–unmount–mount only re-attaches (the client keeps a
 * job's feed for a moment, and the socket with it). Snapshots change only when something did.
 */
interface Store<T> {
  subscribe(onChange: () => void): () => void
  getSnapshot(): T
}

function createStore<T, W>(initial: T, start: (update: () => void) => W, stop: (watch: W) => void, read: (watch: W) => T): Store<T> {
  let snapshot = initial
  let watch: W | null = null
  const listeners = new Set<() => void>()
  const update = (): void => {
    if (watch === null) return
    snapshot = read(watch)
    for (const listener of [...listeners]) listener()
  }
  return {
    subscribe(onChange) {
      listeners.add(onChange)
      if (watch === null) {
        watch = start(update)
        update()
      }
      return () => {
        listeners.delete(onChange)
        if (listeners.size > 0 || watch === null) return
        stop(watch)
        watch = null
      }
    },
    getSnapshot: () => snapshot,
  }
}

/**
 * What a store's watch reports to: `handlers` re-read the view on every change and keep the last
 * connection change's reason; `connection` turns the watch's state into what a component shows,
 * remembering the last one for finished jobs.
 */
function watchReporting(client: JobwireClient) {
  let last: JobConnection = 'reconnecting'
  let reason = 'connecting'
  return {
    handlers: (update: () => void) => ({
      onUpdate: update,
      onConnection: (change: StateChange) => {
        reason = change.reason
        update()
      },
      onEnd: update,
    }),
    connection: (state: ConnectionState): JobConnection => (last = connectionOf(state, reason, client.online, last)),
  }
}

function jobStore(client: JobwireClient, jobId: string | null | undefined): Store<JobView> {
  if (jobId === null || jobId === undefined || jobId === '') {
    const idle: JobView = { status: 'idle', jobId: '', job: null, connection: 'reconnecting' }
    return { subscribe: () => () => {}, getSnapshot: () => idle }
  }
  const cancel = (reason?: string): Promise<void> => client.cancel(jobId, reason)
  const reporting = watchReporting(client)
  return createStore<JobView, JobWatch>(
    viewOf(jobId, null, null, 'reconnecting', cancel),
    (update) => client.watchJob(jobId, reporting.handlers(update)),
    (watch) => watch.stop(),
    (watch) => viewOf(jobId, watch.state, watch.error, reporting.connection(watch.connection), cancel),
  )
}

/**
 * Watches one job: `{status, progress, items, text, result | error, queuePosition, connection}`,
 * live, from the first snapshot to the terminal event (after which nothing polls or listens).
 * The same whatever transport carries it; cleans up on unmount.
 */
export function useJob(jobId: string | null | undefined, options: UseJobOptions = {}): JobView {
  const client = useJobwireClient(options.client)
  const store = useMemo(() => jobStore(client, jobId), [client, jobId])
  return useSyncExternalStore(store.subscribe, store.getSnapshot, store.getSnapshot)
}

/** A job's result: `pending` until it completes, then `ready` — fetched once when the server stores it apart. */
export type JobResultView =
  | { status: 'pending'; result: null; error: null }
  | { status: 'ready'; result: unknown; error: null }
  | { status: 'error'; result: null; error: JobwireError }

const pendingResult: JobResultView = { status: 'pending', result: null, error: null }

/**
 * Watches a job (as `useJob`) and gives its result in full once it completed: inline results at
 * once, a result too large for an event (the state's `resultRef`) fetched once with
 * `client.fetchResult`, and never fetched again for the same ref.
 */
export function useJobResult(jobId: string | null | undefined, options: UseJobOptions = {}): JobResultView {
  const client = useJobwireClient(options.client)
  const { job } = useJob(jobId, options)
  const ref = job?.status === 'completed' ? job.resultRef?.ref : undefined
  const [fetched, setFetched] = useState<{ ref: string; view: JobResultView } | null>(null)
  useEffect(() => {
    if (ref === undefined || jobId === null || jobId === undefined) return
    const controller = new AbortController()
    client.fetchResult(jobId, { signal: controller.signal }).then(
      (result) => setFetched({ ref, view: { status: 'ready', result, error: null } }),
      (error: JobwireError) => {
        if (!controller.signal.aborted) setFetched({ ref, view: { status: 'error', result: null, error } })
      },
    )
    return () => controller.abort()
  }, [client, jobId, ref])
  if (job === null || job.status !== 'completed') return pendingResult
  if (ref === undefined) return { status: 'ready', result: job.result, error: null }
  return fetched?.ref === ref ? fetched.view : pendingResult
}

/** Watches several jobs on the same socket; the views come in the order of `jobIds`. */
export function useJobs(jobIds: readonly string[], options: UseJobOptions = {}): JobView[] {
  const client = useJobwireClient(options.client)
  const key = jobIds.join('\u0000')
  const store = useMemo(() => {
    const ids = key === '' ? [] : key.split('\u0000')
    const stores = ids.map((id) => jobStore(client, id))
    return createStore<JobView[], (() => void)[]>(
      stores.map((s) => s.getSnapshot()),
      (update) => stores.map((s) => s.subscribe(update)),
      (unsubscribes) => {
        for (const unsubscribe of unsubscribes) unsubscribe()
      },
      () => stores.map((s) => s.getSnapshot()),
    )
  }, [client, key])
  return useSyncExternalStore(store.subscribe, store.getSnapshot, store.getSnapshot)
}

export interface MyJobsFilter {
  /** Only jobs of these types. */
  type?: string | readonly string[]
  /** Only jobs in these statuses (e.g. `['queued', 'running']` for an activity indicator). */
  status?: JobStatus | readonly JobStatus[]
}

export interface UseMyJobsOptions extends UseJobOptions {
  /** With an API key: whose jobs. A person's token or JWT implies their own. */
  owner?: Owner
}

/** What `useMyJobs` returns. */
export type MyJobsView =
  | { status: 'loading'; jobs: readonly JobState[]; connection: JobConnection }
  | { status: 'ready'; jobs: readonly JobState[]; connection: JobConnection }
  | { status: 'error'; jobs: readonly JobState[]; connection: JobConnection; error: JobwireError }

/**
 * "All my jobs", newest first: the ones unfinished when the component mounted and every one
 * created since, each kept up to date; finished ones stay with their final state.
 */
export function useMyJobs(filter: MyJobsFilter = {}, options: UseMyJobsOptions = {}): MyJobsView {
  const client = useJobwireClient(options.client)
  const ownerKey = options.owner === undefined ? '' : `${options.owner.tenant}\u0000${options.owner.user}`
  const store = useMemo(() => {
    const owner = options.owner
    const reporting = watchReporting(client)
    const initial: MyJobsView = { status: 'loading', jobs: [], connection: 'reconnecting' }
    return createStore<MyJobsView, MyJobsWatch>(
      initial,
      (update) => client.watchMyJobs({ ...(owner === undefined ? {} : { owner }), ...reporting.handlers(update) }),
      (watch) => watch.stop(),
      (watch): MyJobsView => {
        const shown = reporting.connection(watch.connection)
        if (watch.error !== null) return { status: 'error', jobs: watch.jobs, connection: shown, error: watch.error }
        return { status: watch.loaded ? 'ready' : 'loading', jobs: watch.jobs, connection: shown }
      },
    )
    // options.owner is compared by value, through ownerKey.
  }, [client, ownerKey])
  const view = useSyncExternalStore(store.subscribe, store.getSnapshot, store.getSnapshot)
  const types = filter.type === undefined ? null : typeof filter.type === 'string' ? [filter.type] : filter.type
  const statuses = filter.status === undefined ? null : typeof filter.status === 'string' ? [filter.status] : filter.status
  const typeKey = types?.join('\u0000') ?? ''
  const statusKey = statuses?.join('\u0000') ?? ''
  return useMemo(() => {
    if (types === null && statuses === null) return view
    const jobs = view.jobs.filter((job) => (types === null || types.includes(job.type)) && (statuses === null || statuses.includes(job.status)))
    return { ...view, jobs }
    // The filter is compared by value, through its keys.
  }, [view, typeKey, statusKey])
}
