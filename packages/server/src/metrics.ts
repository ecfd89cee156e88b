import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client'
import type { JobEvent, JobState } from '@jobwire/protocol'
import type { JobObserver, SubscriptionStart } from './core/observer.js'
import { SeriesCounter, SeriesHistogram } from './metric-series.js'

export type TransportName = 'sse' | 'ws' | 'poll'

/** Job run times span milliseconds to hours. */
const jobBuckets = [0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600]
const storeBuckets = [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1]
/** Publish→deliver: well under a millisecond on an idle node, seconds for a reader far behind. */
const deliveryBuckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

/** A counter on `registry`, by `labelNames`. */
function counter<L extends string>(registry: Registry, name: string, help: string, labelNames: readonly L[]): Counter<L> {
  return new Counter({ name, help, labelNames, registers: [registry] })
}

const seconds = (from: string, to: string): number => Math.max(0, (isoMillis(to) - isoMillis(from)) / 1000)

/**
 * The time of an ISO 8601 timestamp as `Date.toISOString` writes them (`2026-12-07T18:59:56.014Z`,
 * what every event's `at` is), read digit by digit; any other form goes to `Date.parse`. Four per
 * claimed job (queue wait, run time): ~100 ns each here against ~300–400 for `Date.parse`.
 */
export function isoMillis(text: string): number {
  if (text.length !== 24 || text.charCodeAt(10) !== 84 /* T */ || text.charCodeAt(23) !== 90 /* Z */) return Date.parse(text)
  const month = twoDigits(text, 5)
  const day = twoDigits(text, 8)
  const hour = twoDigits(text, 11)
  const minute = twoDigits(text, 14)
  const second = twoDigits(text, 17)
  const millis = twoDigits(text, 20) * 10 + digit(text, 22)
  const year = twoDigits(text, 0) * 100 + twoDigits(text, 2)
  // Anything out of place or out of range (Date.UTC would roll a 13th month over into the next year) is left to Date.parse.
  const separators = text.charCodeAt(4) === 45 && text.charCodeAt(7) === 45 && text.charCodeAt(13) === 58 && text.charCodeAt(16) === 58 && text.charCodeAt(19) === 46
  if (!(separators && year >= 0 && month >= 1 && month <= 12 && day >= 1 && day <= 31 && hour >= 0 && hour <= 23 && minute >= 0 && minute <= 59 && second >= 0 && second <= 59 && millis >= 0)) return Date.parse(text)
  // Days since 1970-01-01 of a proleptic Gregorian date, counted in 400-year eras that start in March
  // (so that a leap day ends its year): Date.UTC's own arithmetic, on doubles, cost more than the rest.
  const y = month <= 2 ? year - 1 : year
  const era = Math.floor(y / 400)
  const yearOfEra = y - era * 400
  const dayOfYear = Math.floor((153 * (month > 2 ? month - 3 : month + 9) + 2) / 5) + day - 1
  const days = era * 146_097 + yearOfEra * 365 + Math.floor(yearOfEra / 4) - Math.floor(yearOfEra / 100) + dayOfYear - 719_468
  return ((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis
}

/** The digit at `at` in `text`, or -1000 (a whole number, as every digit is, so the arithmetic stays on small integers) for any other character. */
function digit(text: string, at: number): number {
  const value = text.charCodeAt(at) - 48
  return value >= 0 && value <= 9 ? value : -1000
}

/** The two-digit number at `at` in `text`, negative if either is not a digit. */
function twoDigits(text: string, at: number): number {
  return digit(text, at) * 10 + digit(text, at + 1)
}

/**
 * Prometheus metrics of one node (scraped at GET /metrics with an admin credential). Core reports
 * through `observer` (a JobObserver); transports through `deliveryObserver`, `slowConsumerCloses`
 * and the counts `trackTransport` reads at each scrape (nothing is counted per event on the hot path).
 */
export class Metrics {
  readonly registry = new Registry()
  readonly limitRejections = counter(this.registry, 'jobwire_limit_rejections_total', 'Requests refused by a limit, by limit', ['limit'])
  readonly jobsCreated = new SeriesCounter(this.registry, 'jobwire_jobs_created_total', 'Jobs created (idempotent repeats not counted), by type', ['type'])
  readonly jobsStarted = new SeriesCounter(this.registry, 'jobwire_jobs_started_total', 'Attempts started, by type', ['type'])
  readonly jobsFinished = new SeriesCounter(this.registry, 'jobwire_jobs_finished_total', 'Jobs that reached a terminal status (completed, failed, cancelled), by type and status', ['type', 'status'])
  readonly jobsRequeued = new SeriesCounter(this.registry, 'jobwire_jobs_requeued_total', 'Jobs put back in the queue (retryable failure, lost worker, release, resume), by type and reason', ['type', 'reason'])
  readonly jobDuration = new SeriesHistogram(this.registry, 'jobwire_job_duration_seconds', 'From a job first starting to its terminal event, by type and status', ['type', 'status'], jobBuckets)
  readonly queueWait = new SeriesHistogram(this.registry, 'jobwire_job_queue_wait_seconds', 'From a job being created to its first start, by type', ['type'], jobBuckets)
  readonly deadlinesFired = counter(this.registry, 'jobwire_deadlines_fired_total', 'Jobs ended (or re-queued) by a deadline, by type and code: timed_out, queue_timeout, runner_lost, unwatched', ['type', 'code'])
  readonly jobsExpired = counter(this.registry, 'jobwire_jobs_expired_total', 'Finished jobs deleted with their logs once their retention passed (counted by the node that swept them)', [])
  readonly subscriptionStarts = new SeriesCounter(this.registry, 'jobwire_subscription_starts_total', 'Stream and long-poll starts: initial snapshot, recovered (exact replay after a seq) or reset (snapshot: the log was trimmed), by transport', ['start', 'transport'])
  readonly deliveryLatency = new SeriesHistogram(this.registry, 'jobwire_delivery_latency_seconds', "From a live event reaching this node's fan-out to its transport writing it to the socket, by transport (SSE and WebSocket: once per flush, its oldest event; poll: once per answer woken by an event)", ['transport'], deliveryBuckets)
  readonly slowConsumerCloses = counter(this.registry, 'jobwire_slow_consumer_closes_total', 'Streams closed because the reader fell too far behind, by transport', ['transport'])
  readonly storeOperations = new SeriesHistogram(this.registry, 'jobwire_store_operation_seconds', 'Latency of store calls, by operation', ['operation'], storeBuckets)
  readonly storeErrors = counter(this.registry, 'jobwire_store_errors_total', 'Store calls that failed in the store (not refused by a rule), by operation', ['operation'])
  readonly webhookDeliveries = counter(this.registry, 'jobwire_webhook_deliveries_total', 'Webhook attempts by outcome: delivered (2xx), retried (will try again), failed (attempts used up)', ['outcome'])
  readonly #transports = new Map<TransportName, TransportCounts>()

  constructor() {
    const transports = this.#transports
    /** Sets a per-transport value read at each scrape; a transport that does not count it is left out. */
    const readEach = (read: (counts: TransportCounts) => (() => number) | undefined, set: (transport: TransportName, value: number) => void): void => {
      for (const [transport, counts] of transports) {
        const value = read(counts)
        if (value !== undefined) set(transport, value())
      }
    }
    new Gauge({
      name: 'jobwire_open_connections',
      help: 'Open streaming connections on this node, by transport (a WebSocket counts once, however many jobs it follows)',
      labelNames: ['transport'] as const,
      registers: [this.registry],
      collect() {
        readEach((counts) => counts.connections, (transport, value) => this.set({ transport }, value))
      },
    })
    new Gauge({
      name: 'jobwire_open_subscriptions',
      help: 'Job streams open on this node, by transport (an SSE stream is one, a WebSocket counts each job it follows, poll counts long-polls in progress)',
      labelNames: ['transport'] as const,
      registers: [this.registry],
      collect() {
        readEach((counts) => counts.subscriptions, (transport, value) => this.set({ transport }, value))
      },
    })
    new Counter({
      name: 'jobwire_coalesced_events_total',
      help: 'Latest-wins events (progress, item) merged into a later one for a reader that was behind, by transport',
      labelNames: ['transport'] as const,
      registers: [this.registry],
      collect() {
        this.reset()
        readEach((counts) => counts.coalesced, (transport, value) => this.inc({ transport }, value))
      },
    })
    // Every transport shows from the first scrape, with a count of 0 until it delivers.
    for (const transport of ['sse', 'ws', 'poll'] as const) this.deliveryLatency.labels(transport)
    collectDefaultMetrics({ register: this.registry, prefix: 'jobwire_' })
  }

  /** Reads a transport's open connections, subscriptions and coalesced events at each scrape. */
  trackTransport(transport: TransportName, counts: TransportCounts): void {
    this.#transports.set(transport, counts)
  }

  /** What a transport calls with each publish→deliver latency, in seconds. */
  deliveryObserver(transport: TransportName): (seconds: number) => void {
    const series = this.deliveryLatency.labels(transport)
    return (seconds) => series.observe(seconds)
  }

  /**
   * `jobwire_redis_up`: 1 while the Redis store's connections are up and its pub/sub probe comes
   * back, else 0. Registered only on nodes that use Redis, so other nodes do not report a 0.
   */
  trackRedis(live: () => boolean): void {
    this.#readGauge('jobwire_redis_up', "1 while this node's Redis connections are up and its pub/sub probe comes back, else 0", () => (live() ? 1 : 0))
  }

  /** `jobwire_http_body_bytes_in_flight`: request bodies admitted and not yet parsed (`--max-body-bytes-in-flight`). */
  trackBodies(read: () => number): void {
    this.#readGauge(
      'jobwire_http_body_bytes_in_flight',
      'Bytes of request bodies this node is reading and parsing, by their Content-Length; past --max-body-bytes-in-flight it answers bodies of 64 KiB or more with 503 overloaded',
      read,
    )
  }

  /**
   * `jobwire_state_cache_jobs` and `jobwire_state_cache_bytes`: the parsed job states a SQLite or
   * Redis node keeps in memory (`--state-cache-bytes`), read at each scrape. Bytes are the store's
   * estimate (core/store.ts: stateWeight).
   */
  trackStateCache(read: () => { jobs: number; bytes: number }): void {
    const gauges = {
      jobs: 'Job states this node keeps parsed in memory so that their next write need not read them first (SQLite, Redis)',
      bytes: 'What those states weigh, estimated (text at 2 bytes a character); at most about twice --state-cache-bytes',
    }
    for (const [which, help] of Object.entries(gauges) as ['jobs' | 'bytes', string][]) this.#readGauge(`jobwire_state_cache_${which}`, help, () => read()[which])
  }

  /** A gauge without labels whose value `read` gives at each scrape. */
  #readGauge(name: string, help: string, read: () => number): void {
    new Gauge({
      name,
      help,
      registers: [this.registry],
      collect() {
        this.set(read())
      },
    })
  }

  /** The hooks core calls (see JobObserver). */
  readonly observer: JobObserver = {
    jobCreated: (job: JobState) => this.jobsCreated.labels(job.type).inc(),
    committed: (job: JobState, events: readonly JobEvent[]) => {
      const type = job.type
      for (const event of events) {
        switch (event.type) {
          case 'started':
            this.jobsStarted.labels(type).inc()
            if (event.data.attempt === 1) this.queueWait.labels(type).observe(seconds(job.createdAt, event.at))
            break
          case 'requeued':
            this.jobsRequeued.labels(type, requeueReason(event.data)).inc()
            if (event.data.reason === 'timed_out') this.deadlinesFired.inc({ type, code: 'timed_out' })
            break
          case 'completed':
          case 'failed':
          case 'cancelled':
            this.jobsFinished.labels(type, event.type).inc()
            if (event.type === 'failed' && deadlineCodes.has(event.data.code)) this.deadlinesFired.inc({ type, code: event.data.code })
            if (event.type === 'cancelled' && event.data.reason === 'unwatched') this.deadlinesFired.inc({ type, code: 'unwatched' })
            if (job.startedAt !== null) this.jobDuration.labels(type, event.type).observe(seconds(job.startedAt, event.at))
            break
          default:
            break
        }
      }
    },
    subscriptionStarted: (start: SubscriptionStart, via: string) => this.subscriptionStarts.labels(start, via).inc(),
    storeOperation: (operation: string, took: number, failed: boolean) => {
      this.storeOperations.labels(operation).observe(took)
      if (failed) this.storeErrors.inc({ operation })
    },
  }
}

/** What `trackTransport` reads at each scrape. */
export interface TransportCounts {
  connections?: () => number
  subscriptions: () => number
  /** Running total. */
  coalesced?: () => number
}

/** A bounded label: a release or retry reason is free text chosen by workers. */
/** Failure codes only a deadline sets (a producer may send any code, but these are the server's). */
const deadlineCodes = new Set(['timed_out', 'queue_timeout', 'runner_lost'])

function requeueReason(data: { reason: string; error?: unknown }): string {
  if (data.error !== undefined) return 'retry'
  return data.reason === 'worker_lost' || data.reason === 'resumed' ? data.reason : 'released'
}
