import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import Database from 'better-sqlite3'
import { applyEvent, JobwireError, type JobEvent, type JobState } from '@jobwire/protocol'
import { applyPlan, createdEvent, decodeCursor, encodeCursor, expiryOf } from '../core/apply.js'
import { FanOut } from '../core/fan-out.js'
import {
  defaultRetention,
  type AppendPlan,
  type AppendResult,
  type CreateResult,
  type EventListener,
  type JobPage,
  type JobQuery,
  type LogRange,
  type NewJob,
  type Retention,
  type Store,
  type SweepResult,
  type Unsubscribe,
} from '../core/store.js'

export interface SqliteStoreOptions {
  /** Path of the database file; created with its folder if missing. */
  path: string
  retention?: Retention
  /**
   * `full` (default) fsyncs the WAL on every commit: an acknowledged write survives a power cut.
   * `normal` survives a process crash (`kill -9`) but may lose the last commits on power loss.
   */
  synchronous?: 'full' | 'normal'
}

interface JobRow {
  ordinal: number
  state: string
  first_seq: number
}

const cacheSize = 10_000

const schema = `
CREATE TABLE IF NOT EXISTS jobs (
  ordinal INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  type TEXT NOT NULL,
  status TEXT NOT NULL,
  tenant TEXT,
  user TEXT,
  idempotency_key TEXT UNIQUE,
  seq INTEGER NOT NULL,
  first_seq INTEGER NOT NULL,
  state TEXT NOT NULL,
  expires_at INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, ordinal);
CREATE INDEX IF NOT EXISTS jobs_by_type ON jobs (type, ordinal);
CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (tenant, user, ordinal);
CREATE INDEX IF NOT EXISTS jobs_by_expiry ON jobs (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS events (
  job_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  body TEXT NOT NULL,
  PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
`

/**
 * The embedded default: one SQLite file in WAL mode. Each append is one transaction that updates
 * the job row and inserts its events, committed before the caller is answered. One process owns
 * the file (fan-out is in-process); several nodes need the Redis store.
 */
export class SqliteStore implements Store {
  readonly kind = 'sqlite'
  readonly #db: Database.Database
  readonly #fanOut = new FanOut()
  readonly #retention: Retention
  readonly #statements
  readonly #appendTx
  readonly #createTx
  readonly #sweepTx
  /**
   * Recently touched jobs, parsed. This process is the file's only writer, so the cache is
   * coherent; it spares a JSON parse of the whole state (text included) on every append.
   */
  readonly #cache = new Map<string, { job: JobState; firstSeq: number }>()
  #closed = false

  constructor(options: SqliteStoreOptions) {
    this.#retention = options.retention ?? defaultRetention
    if (options.path !== ':memory:') mkdirSync(dirname(options.path), { recursive: true })
    const db = new Database(options.path)
    this.#db = db
    db.pragma('journal_mode = WAL')
    db.pragma(`synchronous = ${options.synchronous === 'normal' ? 'NORMAL' : 'FULL'}`)
    db.pragma('busy_timeout = 5000')
    db.pragma('foreign_keys = ON')
    db.exec(schema)
    const s = {
      jobById: db.prepare<[string], JobRow>('SELECT ordinal, state, first_seq FROM jobs WHERE id = ?'),
      jobByKey: db.prepare<[string], JobRow>('SELECT ordinal, state, first_seq FROM jobs WHERE idempotency_key = ?'),
      insertJob: db.prepare(
        `INSERT INTO jobs (id, type, status, tenant, user, idempotency_key, seq, first_seq, state)
         VALUES (@id, @type, @status, @tenant, @user, @key, @seq, 1, @state)`,
      ),
      updateJob: db.prepare(
        'UPDATE jobs SET status = @status, seq = @seq, first_seq = @firstSeq, state = @state, expires_at = @expiresAt WHERE id = @id',
      ),
      insertEvent: db.prepare('INSERT INTO events (job_id, seq, body) VALUES (?, ?, ?)'),
      trimEvents: db.prepare('DELETE FROM events WHERE job_id = ? AND seq < ?'),
      readEvents: db.prepare<[string, number, number], { body: string }>(
        'SELECT body FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?',
      ),
      expired: db.prepare<[number], { id: string }>('SELECT id FROM jobs WHERE expires_at <= ? LIMIT 500'),
      deleteEvents: db.prepare('DELETE FROM events WHERE job_id = ?'),
      deleteJob: db.prepare('DELETE FROM jobs WHERE id = ?'),
    }
    this.#statements = s

    this.#createTx = db.transaction((input: NewJob): CreateResult => {
      if (input.idempotencyKey !== null) {
        const existing = s.jobByKey.get(input.idempotencyKey)
        if (existing !== undefined) return { job: JSON.parse(existing.state) as JobState, created: false }
      }
      const event = createdEvent(input)
      const job = applyEvent(null, event)
      s.insertJob.run({
        id: job.id,
        type: job.type,
        status: job.status,
        tenant: job.owner?.tenant ?? null,
        user: job.owner?.user ?? null,
        key: input.idempotencyKey,
        seq: job.seq,
        state: JSON.stringify(job),
      })
      s.insertEvent.run(job.id, 1, JSON.stringify(event))
      return { job, created: true }
    })

    this.#appendTx = db.transaction((jobId: string, plan: AppendPlan, at: string): AppendResult & { firstSeq: number } => {
      const current = this.#load(jobId)
      if (current === null) throw new JobwireError('job_not_found', { jobId })
      const { job, events } = applyPlan(current.job, plan, at)
      if (events.length === 0) return { job, events, firstSeq: current.firstSeq }
      for (const event of events) s.insertEvent.run(jobId, event.seq, JSON.stringify(event))
      let firstSeq = current.firstSeq
      const keepFrom = job.seq - this.#retention.maxEventsPerJob + 1
      if (keepFrom > firstSeq) {
        s.trimEvents.run(jobId, keepFrom)
        firstSeq = keepFrom
      }
      s.updateJob.run({
        id: jobId,
        status: job.status,
        seq: job.seq,
        firstSeq,
        state: JSON.stringify(job),
        expiresAt: expiryOf(job, this.#retention),
      })
      return { job, events, firstSeq }
    })

    this.#sweepTx = db.transaction((now: number): number => {
      const ids = s.expired.all(now)
      for (const { id } of ids) {
        s.deleteEvents.run(id)
        s.deleteJob.run(id)
        this.#cache.delete(id)
      }
      return ids.length
    })
  }

  async createJob(input: NewJob): Promise<CreateResult> {
    this.#open()
    const result = this.#createTx.immediate(input)
    if (result.created) {
      this.#remember(result.job, 1)
      this.#fanOut.publish(input.id, [createdEvent(input)])
    }
    return result
  }

  async getJob(id: string): Promise<JobState | null> {
    this.#open()
    return this.#load(id)?.job ?? null
  }

  async listJobs(query: JobQuery): Promise<JobPage> {
    this.#open()
    const params: Record<string, string | number> = { limit: query.limit + 1 }
    const before = decodeCursor(query.cursor)
    if (before !== null) params.before = before
    for (const key of ['status', 'type', 'tenant', 'user'] as const) {
      const value = query[key]
      if (value !== undefined) params[key] = value
    }
    const where = Object.keys(params)
      .filter((key) => key !== 'limit')
      .map((key) => (key === 'before' ? 'ordinal < @before' : `${key} = @${key}`))
    const sql = `SELECT ordinal, state FROM jobs ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''}
      ORDER BY ordinal DESC LIMIT @limit`
    const rows = this.#db.prepare<[Record<string, string | number>], { ordinal: number; state: string }>(sql).all(params)
    const page = rows.slice(0, query.limit)
    const last = page.at(-1)
    return {
      jobs: page.map((row) => JSON.parse(row.state) as JobState),
      nextCursor: rows.length > query.limit && last !== undefined ? encodeCursor(last.ordinal) : null,
    }
  }

  async append(jobId: string, plan: AppendPlan): Promise<AppendResult> {
    this.#open()
    const { job, events, firstSeq } = this.#appendTx.immediate(jobId, plan, new Date().toISOString())
    if (events.length > 0) {
      // Only after the commit: a refused or failed transaction leaves the cache as it was.
      this.#remember(job, firstSeq)
      this.#fanOut.publish(jobId, events)
    }
    return { job, events }
  }

  async readLog(jobId: string, after: number, limit: number): Promise<LogRange | null> {
    this.#open()
    // One read transaction, so the range and the head agree.
    return this.#db.transaction((): LogRange | null => {
      const current = this.#load(jobId)
      if (current === null) return null
      const events = this.#statements.readEvents.all(jobId, after, limit).map((r) => JSON.parse(r.body) as JobEvent)
      return { events, firstSeq: current.firstSeq, head: current.job.seq, status: current.job.status }
    })()
  }

  subscribe(jobId: string, listener: EventListener): Unsubscribe {
    return this.#fanOut.subscribe(jobId, listener)
  }

  async sweep(now: number): Promise<SweepResult> {
    this.#open()
    let expiredJobs = 0
    for (let batch = this.#sweepTx.immediate(now); batch > 0; batch = this.#sweepTx.immediate(now)) expiredJobs += batch
    return { expiredJobs }
  }

  async ping(): Promise<void> {
    this.#open()
    this.#db.prepare('SELECT 1').get()
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#db.close()
  }

  #load(id: string): { job: JobState; firstSeq: number } | null {
    const cached = this.#cache.get(id)
    if (cached !== undefined) return cached
    const row = this.#statements.jobById.get(id)
    if (row === undefined) return null
    return this.#remember(JSON.parse(row.state) as JobState, row.first_seq)
  }

  #remember(job: JobState, firstSeq: number): { job: JobState; firstSeq: number } {
    const entry = { job, firstSeq }
    this.#cache.delete(job.id)
    this.#cache.set(job.id, entry)
    if (this.#cache.size > cacheSize) this.#cache.delete(this.#cache.keys().next().value as string)
    return entry
  }

  #open(): void {
    if (this.#closed) throw new JobwireError('unavailable', { reason: 'the store is closed' })
  }
}
