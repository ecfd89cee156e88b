import { JobwireError, type JobEvent, type JobState } from '@jobwire/protocol'
import type { Store } from './store.js'

/** How a subscription began: a first snapshot, an exact replay after a seq, or a snapshot because the log was trimmed. */
export type SubscriptionStart = 'initial' | 'recovered' | 'reset'

/**
 * What core tells whoever watches it (metrics). Every hook is optional and synchronous, and must
 * not throw: it runs right after a commit. Core knows nothing of what the observer does with it.
 */
export interface JobObserver {
  /** A job was created (not an idempotent repeat). */
  jobCreated?(job: JobState): void
  /** Events committed for `job` (its state after them), whoever wrote them: producer, worker, dispatcher, sweep. */
  committed?(job: JobState, events: readonly JobEvent[]): void
  /** A subscription or long-poll started or restarted from a snapshot or a replay; `via` names the transport (a label). */
  subscriptionStarted?(start: SubscriptionStart, via: string): void
  /** A store call took `seconds`; `failed` when the store itself failed (not when a plan refused). */
  storeOperation?(operation: string, seconds: number, failed: boolean): void
  /** A subscription's transport could not take events from `seq` on (see DeliveryFailure): it ended with an error. */
  deliveryFailed?(failure: { jobId: string; after: number; seq: number; errorId: string; error: unknown }): void
}

type TimedOperation = 'createJob' | 'getJob' | 'listJobs' | 'append' | 'readLog' | 'claim' | 'getRecord' | 'expiredLeases' | 'dueDeadlines' | 'queuePosition' | 'sweep' | 'ping'

/**
 * The same store, reporting commits and the latency of each call to `observer`. Wrapping the
 * store catches every commit in one place: JobService's, the Dispatcher's claims and lease sweeps.
 */
export function observeStore(store: Store, observer: JobObserver): Store {
  // Plain promise chains, not async wrappers: every append of every request passes through here.
  const timed = <A extends unknown[], R>(operation: TimedOperation, call: (...args: A) => Promise<R>) =>
    (...args: A): Promise<R> => {
      const started = performance.now()
      let pending: Promise<R>
      try {
        pending = call(...args)
      } catch (error) {
        pending = Promise.reject(error as Error)
      }
      return pending.then(
        (value) => {
          observer.storeOperation?.(operation, (performance.now() - started) / 1000, false)
          return value
        },
        (error: unknown) => {
          // A plan refusing (lease_lost, job_finished…) is the store working as asked.
          const failed = !(error instanceof JobwireError) || error.code === 'unavailable' || error.code === 'internal'
          observer.storeOperation?.(operation, (performance.now() - started) / 1000, failed)
          throw error
        },
      )
    }
  const observed: Store = {
    get kind() {
      return store.kind
    },
    createJob: timed('createJob', async (job) => {
      const result = await store.createJob(job)
      if (result.created) observer.jobCreated?.(result.job)
      return result
    }),
    getJob: timed('getJob', (id) => store.getJob(id)),
    listJobs: timed('listJobs', (query) => store.listJobs(query)),
    append: timed('append', (jobId, plan) =>
      store.append(jobId, plan).then((result) => {
        if (result.events.length > 0) observer.committed?.(result.job, result.events)
        return result
      }),
    ),
    readLog: timed('readLog', (jobId, after, limit) => store.readLog(jobId, after, limit)),
    claim: timed('claim', async (types, now, max, plan) => {
      const results = await store.claim(types, now, max, plan)
      for (const result of results) if (result.events.length > 0) observer.committed?.(result.job, result.events)
      return results
    }),
    getRecord: timed('getRecord', (id) => store.getRecord(id)),
    expiredLeases: timed('expiredLeases', (now, limit) => store.expiredLeases(now, limit)),
    dueDeadlines: timed('dueDeadlines', (now, limit) => store.dueDeadlines(now, limit)),
    queuePosition: timed('queuePosition', (jobId) => store.queuePosition(jobId)),
    subscribe: (jobId, listener) => store.subscribe(jobId, listener),
    subscribeQueue: (type, listener) => store.subscribeQueue(type, listener),
    putValue: (jobId, ref, json) => store.putValue(jobId, ref, json),
    getValue: (jobId, ref) => store.getValue(jobId, ref),
    deleteValue: (jobId, ref) => store.deleteValue(jobId, ref),
    sweep: timed('sweep', (now) => store.sweep(now)),
    ping: timed('ping', () => store.ping()),
    close: () => store.close(),
  }
  if (store.subscribeOwner !== undefined) {
    const subscribeOwner = store.subscribeOwner.bind(store)
    observed.subscribeOwner = (owner, listener) => subscribeOwner(owner, listener)
  }
  return observed
}

/** One observer that tells each of `observers` in turn. */
export function combineObservers(...observers: JobObserver[]): JobObserver {
  return {
    jobCreated: (job) => observers.forEach((o) => o.jobCreated?.(job)),
    committed: (job, events) => observers.forEach((o) => o.committed?.(job, events)),
    subscriptionStarted: (start, via) => observers.forEach((o) => o.subscriptionStarted?.(start, via)),
    storeOperation: (operation, seconds, failed) => observers.forEach((o) => o.storeOperation?.(operation, seconds, failed)),
    deliveryFailed: (failure) => observers.forEach((o) => o.deliveryFailed?.(failure)),
  }
}
