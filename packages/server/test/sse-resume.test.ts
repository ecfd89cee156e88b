import { afterEach, describe, expect, it } from 'vitest'
import { applyEvent, type JobState, type StreamMessage } from '@jobwire/protocol'
import { openSse, seededRandom, sleep, startTestServer, type Storage, type TestServer } from './fixtures.js'

/**
 * The resume stress test: one producer publishes 10,000 events as fast as HTTP allows while 20
 * subscribers connect at random points, drop the connection at random points and resume with
 * Last-Event-ID. Every subscriber must see seq 1..N exactly once, in order, with no gap (a
 * snapshot covers everything up to its seq), and end with the job's true state.
 *
 * The schedule is random but seeded: JOBWIRE_TEST_SEED=<seed> replays a failing run.
 */
const producerEvents = 10_000
const subscriberCount = 20

interface Scenario {
  storage: Storage
  /** Per-job log cap. Above the job's length every resume is an exact replay; below it, some are resets. */
  maxEventsPerJob: number
}

const scenarios: Scenario[] = [
  { storage: 'memory', maxEventsPerJob: 20_000 },
  { storage: 'sqlite', maxEventsPerJob: 20_000 },
  { storage: 'memory', maxEventsPerJob: 1_000 },
]

/** Lets subscribers wait until the producer's acknowledged head reaches some seq. */
class ProducerHead {
  seq = 1
  done = false
  #waiters: { seq: number; resolve: () => void }[] = []

  advance(seq: number, done = false): void {
    this.seq = seq
    this.done ||= done
    this.#waiters = this.#waiters.filter((waiter) => {
      if (waiter.seq > seq && !this.done) return true
      waiter.resolve()
      return false
    })
  }

  reach(seq: number): Promise<void> {
    if (seq <= this.seq || this.done) return Promise.resolve()
    return new Promise((resolve) => this.#waiters.push({ seq, resolve }))
  }
}

type ProducerEvent = Record<string, unknown> & { type: string }

function randomEvent(random: () => number, index: number): ProducerEvent {
  const pick = random()
  if (pick < 0.4) return { type: 'progress', percent: Math.floor(random() * 100), ...(index % 500 === 0 ? { stage: `stage-${index}` } : {}) }
  if (pick < 0.7) return { type: 'chunk', text: `t${index} ` }
  if (pick < 0.9) return { type: 'item', id: `item-${Math.floor(random() * 16)}`, status: 'running', percent: Math.floor(random() * 100) }
  return { type: 'checkpoint', data: { at: index } }
}

/** Posts the events in random batches (1-40), the last one ending with `completed`. */
async function produce(server: TestServer, jobId: string, random: () => number, head: ProducerHead): Promise<void> {
  let sent = 0
  while (sent < producerEvents) {
    const size = Math.min(producerEvents - sent, 1 + Math.floor(random() * 40))
    const events: ProducerEvent[] = []
    for (let i = 0; i < size; i++) {
      const index = sent + i
      events.push(index === producerEvents - 1 ? { type: 'completed', result: { events: producerEvents } } : randomEvent(random, index))
    }
    const answer = await server.api.call<{ seq: number; status: string }>('POST', `/v1/jobs/${jobId}/events`, { events })
    if (answer.status !== 200) throw new Error(`producer got HTTP ${answer.status}: ${JSON.stringify(answer.body)}`)
    sent += size
    head.advance(answer.body.seq, answer.body.status === 'completed')
  }
}

interface SubscriberReport {
  name: string
  last: number
  state: JobState | null
  sessions: number
  events: number
  snapshots: number
  problems: string[]
}

/**
 * One watcher: waits until the head reaches its start point, then reads, drops and resumes until
 * the server ends the stream after the terminal event. Checks every message against what it has.
 */
async function subscribe(
  server: TestServer,
  jobId: string,
  name: string,
  random: () => number,
  head: ProducerHead,
  trimmed: boolean,
): Promise<SubscriberReport> {
  const report: SubscriberReport = { name, last: 0, state: null, sessions: 0, events: 0, snapshots: 0, problems: [] }
  const problem = (text: string): void => {
    if (report.problems.length < 10) report.problems.push(`${name} session ${report.sessions}: ${text}`)
  }
  // A quarter start after the job finished; the rest somewhere along the way.
  await head.reach(random() < 0.25 ? Infinity : Math.floor(random() * producerEvents))
  // Half start from nothing (a snapshot), half replay the whole log from after=0.
  let position: number | undefined = random() < 0.5 ? undefined : 0
  let finished = false
  while (!finished && report.problems.length === 0) {
    report.sessions++
    const connection = await openSse(`${server.url}/v1/jobs/${jobId}/stream`, {
      headers: { authorization: `Bearer ${server.key}`, ...(position === undefined ? {} : { 'last-event-id': String(position) }) },
    })
    if (connection.status !== 200) {
      problem(`HTTP ${connection.status} ${connection.body}`)
      break
    }
    // Drop after a random number of messages; after a few sessions, read to the end.
    const dropAfter = report.sessions > 12 ? Infinity : random() < 0.2 ? 1 + Math.floor(random() * 3) : 1 + Math.floor(random() * 1500)
    let read = 0
    let first = true
    try {
      for await (const message of connection.messages()) {
        check(message, first, position)
        first = false
        if (report.problems.length > 0) break
        if (report.state !== null && report.state.status === 'completed' && report.state.seq === report.last) finished = true
        if (++read >= dropAfter && !finished) break
      }
    } finally {
      connection.close()
    }
    if (!finished && read < dropAfter && report.problems.length === 0 && report.state?.status !== 'completed') {
      // The server ended the stream without a terminal event: legitimate only after an error message.
      problem(`stream ended early at seq ${report.last}`)
    }
    position = report.last
    // Reconnect at once, after a short pause, once the producer moved on a little, or after a
    // long absence (with a capped log, long enough for the position to be trimmed).
    const pause = random()
    if (pause < 0.3) await sleep(Math.floor(random() * 15))
    else if (pause < 0.55) await head.reach(head.seq + Math.floor(random() * 300))
    else if (pause < 0.7) await head.reach(head.seq + 1000 + Math.floor(random() * 2000))
  }
  return report

  function check(message: StreamMessage, first: boolean, asked: number | undefined): void {
    switch (message.type) {
      case 'snapshot': {
        report.snapshots++
        if (!first) problem('snapshot in the middle of a stream')
        if (asked === undefined ? message.reset || message.reason !== 'initial' : !message.reset || message.reason !== 'trimmed') {
          problem(`snapshot reset=${message.reset} reason=${message.reason} for position ${asked}`)
        }
        if (asked !== undefined && !trimmed) problem(`reset snapshot at ${message.job.seq} though the log holds everything`)
        if (message.job.seq < report.last) problem(`snapshot at ${message.job.seq} goes back from ${report.last}`)
        report.last = message.job.seq
        report.state = message.job
        return
      }
      case 'recovered':
        if (!first || message.after !== asked) problem(`recovered after ${message.after}, asked ${asked}, first=${first}`)
        return
      case 'event': {
        const { seq } = message.event
        if (first) problem(`stream began with event ${seq} instead of a snapshot or recovered`)
        if (seq !== report.last + 1) {
          problem(`event ${seq} after ${report.last} (${seq <= report.last ? 'duplicate' : 'gap'})`)
          return
        }
        try {
          report.state = applyEvent(report.state, message.event)
        } catch (error) {
          problem(`reducer refused event ${seq}: ${(error as Error).message}`)
        }
        report.last = seq
        report.events++
        return
      }
      case 'error':
        problem(`error event ${message.error.code}: ${message.error.message}`)
        return
      case 'queue':
        return
      default:
        message satisfies never
    }
  }
}

describe('SSE resume under load', () => {
  let server: TestServer | null = null
  afterEach(async () => {
    await server?.close()
    server = null
  })

  it.for(scenarios)(
    `gives ${subscriberCount} subscribers that drop and resume at random points every seq exactly once, in order ($storage store, log cap $maxEventsPerJob)`,
    async ({ storage, maxEventsPerJob }) => {
      const seed = Number(process.env.JOBWIRE_TEST_SEED ?? Math.floor(Math.random() * 2 ** 31))
      const random = seededRandom(seed)
      // Large batches are fine; `normal` sync keeps the SQLite run about the fan-out, not fsync.
      server = await startTestServer({ storage, maxEventsPerJob, sqliteSync: 'normal', heartbeat: 1000 })
      const job = (await server.api.call<JobState>('POST', '/v1/jobs', { type: 'stress' })).body
      const head = new ProducerHead()

      const subscribers = Array.from({ length: subscriberCount }, (_, i) =>
        subscribe(server as TestServer, job.id, `subscriber ${i}`, seededRandom(seed + i + 1), head, maxEventsPerJob < producerEvents),
      )
      await produce(server, job.id, random, head)
      const reports = await Promise.all(subscribers)

      const final = (await server.api.call<JobState>('GET', `/v1/jobs/${job.id}`)).body
      // created + implicit started + the producer's events.
      expect(final).toMatchObject({ status: 'completed', seq: producerEvents + 2 })
      const context = `seed ${seed} (rerun with JOBWIRE_TEST_SEED=${seed})`
      expect(reports.flatMap((r) => r.problems), context).toEqual([])
      for (const report of reports) {
        expect(report.last, `${report.name}, ${context}`).toBe(final.seq)
        expect(report.state, `${report.name}, ${context}`).toEqual(final)
      }
      // The schedule really did exercise resumes, not 20 uninterrupted reads.
      expect(reports.reduce((n, r) => n + r.sessions, 0)).toBeGreaterThan(subscriberCount * 2)
    },
  )
})
