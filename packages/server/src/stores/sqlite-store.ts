import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { setImmediate } from 'node:timers'
import Database from 'better-sqlite3'
import { applyEvent, JobwireError, type JobEvent, type JobState } from '@jobwire/protocol'
import { applyPlan, createdEvent, decodeCursor, encodeCursor, expiryOf, initialTimers, isQueuedForDispatch, nextDeadline, noTimers, type AppliedPlan } from '../core/apply.js'
import { defaultRetention } from '../options.js'
import { RecentMap } from '../core/recent-map.js'
import { runAtEndOfTurn } from '../core/turn.js'
import { InProcessStore } from './in-process.js'
import { QueueOrder } from './queue-order.js'
import { Checkpointer, WalSync, type CheckpointOptions } from './sqlite-wal.js'
import { changedItemPlaces, defaultStateCacheBytes, inputKeptApart, listedJob, stateWeights, storedStateJson, withInputKeptApart } from '../core/store.js'
import type * as core from '../core/store.js'

export interface SqliteStoreOptions {
  /** Path of the database file; created with its folder if missing. */
  path: string
  retention?: core.Retention
  /**
   * `full` (default) fsyncs the WAL after every group commit, off the event loop, and answers and
   * publishes the group's writes only then: an acknowledged write survives a power cut.
   * `normal` survives a process crash (`kill -9`) but may lose the last commits on power loss.
   */
  synchronous?: 'full' | 'normal'
  /** How the WAL is checkpointed off the loop (sqlite-wal.ts); the defaults suit every load. */
  checkpoint?: CheckpointOptions
  /** The byte budget of the parsed states kept in memory (`--state-cache-bytes`; core/store.ts: defaultStateCacheBytes). */
  cacheBytes?: number
}

interface JobRow {
  ordinal: number
  state: string
  input: string | null
  first_seq: number
  lease: string | null
  timers: string | null
}

interface Cached extends core.JobRecord {
  ordinal: number
  firstSeq: number
  /** The JSON length of an input kept in the row's `input` column, not in its state (core.inputKeptApart); 0 when the state holds it. */
  inputBytes: number
  /** What its items weigh (core.itemsWeight), kept for the next write that leaves them as they are. */
  itemsBytes: number
  /** About what this entry holds in memory (core.stateWeight): what the cache's byte budget counts. */
  bytes: number
}

/**
 * Parsed states kept at least (and at most twice as many), unless the byte budget binds first; as
 * many as the jobs' facts (core/jobs.ts). A queue drains oldest first, so a backlog larger than this
 * is claimed with many of its states (past twice this, every one) read back and parsed: about 20 µs
 * more CPU per job run, in process. A trivial job's parsed state holds ~500 bytes of heap.
 */
const cacheSize = 50_000

/** What a create's transaction hands to its commit. */
interface CreateOutcome {
  result: core.CreateResult
  ordinal: number
  timers: core.JobTimers
  /** The new job's weights in the cache (core.stateWeights); 0 for an idempotent repeat, which is not cached. */
  inputBytes: number
  itemsBytes: number
  bytes: number
}

/** A create or append waiting for the next group commit. */
interface GroupedWrite {
  /**
   * Runs inside the group's transaction. `guarded`: in a savepoint of its own, so that a throw
   * undoes only this write; otherwise bare (see #runGroup).
   */
  work(guarded: boolean): unknown
  /** Runs after the group committed, with what `work` returned; its result answers the caller. */
  done(value: unknown): unknown
  resolve(value: unknown): void
  reject(error: unknown): void
}

/** A unit of a group commit, run as it is or (`guarded`) in a savepoint of its own (a nested better-sqlite3 transaction). */
type TwoWays<A extends unknown[], R> = (guarded: boolean, ...args: A) => R

function twoWays<A extends unknown[], R>(db: Database.Database, body: (...args: A) => R): TwoWays<A, R> {
  const inSavepoint = db.transaction(body)
  return (guarded, ...args) => (guarded ? inSavepoint(...args) : body(...args))
}

/**
 * Thrown out of a group's bare run when a write failed after it had changed the database: the
 * whole group is rolled back and run again with each write in its own savepoint.
 */
class PartlyWritten extends Error {
  constructor(cause: unknown) {
    super('a write failed part-way', { cause })
  }
}

/** The `timers` and `deadline_at` columns of a job. */
function timerColumns(timers: core.JobTimers): { timers: string | null; deadlineAt: number | null } {
  return { timers: Object.keys(timers.settings).length === 0 ? null : JSON.stringify(timers), deadlineAt: nextDeadline(timers) }
}

/** Which of the job row's indexed (or large) columns an append changed: bits of the UPDATE it needs. */
const updateStatus = 1
const updateExpiry = 2
const updateLease = 4
const updateAvailable = 8
const updateTimers = 16
const updateTextLength = 32

/** Bumped with every schema change; a newer file than this code knows is refused. */
const schemaVersion = 5

/** Version 2: each job's deadlines (JSON) and the earliest of them, indexed for the deadline sweep. */
const deadlineColumns = `
ALTER TABLE jobs ADD COLUMN timers TEXT;
ALTER TABLE jobs ADD COLUMN deadline_at INTEGER;
`
/**
 * Version 3: the log keyed by the job's ordinal (`job_log`) instead of its random id (`events`): a
 * group commit's events then share leaf pages (jobs are claimed and finished in ordinal order)
 * where each job's used to dirty a page of its own — most of the WAL a worker's cycle wrote.
 */
const logByOrdinal = `
INSERT INTO job_log (ordinal, seq, body) SELECT jobs.ordinal, events.seq, events.body FROM events JOIN jobs ON jobs.id = events.job_id;
DROP TABLE events;
`
/** Version 4: a large input kept once, apart from the state that every write rewrites (core.inputKeptApart); NULL where the state holds it. */
const inputColumn = 'ALTER TABLE jobs ADD COLUMN input TEXT'
/**
 * Version 5 also: the length of each job's text (in UTF-16 code units, as JavaScript counts it), so
 * that a list shows it without reading the text. NULL in rows written before, until their next chunk.
 */
const textLengthColumn = 'ALTER TABLE jobs ADD COLUMN text_length INTEGER'
/**
 * Version 5: each job's items in rows of their own (`job_items`), out of the state that every write
 * rewrote whole: at 1,000 items that was ~100 KB of JSON per write, a progress tick's included.
 */
const itemsApart = `
INSERT OR REPLACE INTO job_items (ordinal, idx, item) SELECT jobs.ordinal, items.key, items.value FROM jobs, json_each(jobs.state, '$.items') AS items;
UPDATE jobs SET state = json_set(state, '$.items', json('[]')) WHERE json_array_length(state, '$.items') > 0;
`
const deadlineIndex = 'CREATE INDEX IF NOT EXISTS jobs_by_deadline ON jobs (deadline_at) WHERE deadline_at IS NOT NULL'

/**
 * Makes this process the only one using the database at `path`: several processes on one file
 * would each keep their own cache, queue order and fan-out, and so answer and publish from states
 * the other changed (or collide on a seq). The lock is an exclusive SQLite transaction on a file of
 * its own beside the database (`<path>-lock`, left in place), held until the store closes; the
 * operating system releases it when the process dies, even by `kill -9`, so it never goes stale.
 * A second process is refused at once, naming the file.
 */
function ownerLock(path: string): Database.Database {
  const lock = new Database(`${path}-lock`, { timeout: 0 })
  try {
    lock.pragma('locking_mode = EXCLUSIVE')
    // Nothing is ever written in it: no journal file beside it.
    lock.pragma('journal_mode = MEMORY')
    lock.exec('BEGIN EXCLUSIVE')
  } catch (error) {
    lock.close()
    if ((error as { code?: unknown }).code === 'SQLITE_BUSY') {
      throw new Error(`${path} is in use by another Jobwire process: one process owns a SQLite store (stop the other one, or use another --data-dir; several nodes share --redis)`, { cause: error })
    }
    throw error
  }
  return lock
}

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
  expires_at INTEGER,
  dispatch INTEGER NOT NULL,
  available_at INTEGER NOT NULL DEFAULT 0,
  lease TEXT,
  lease_expires_at INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, ordinal);
CREATE INDEX IF NOT EXISTS jobs_by_type ON jobs (type, ordinal);
CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (tenant, user, ordinal);
CREATE INDEX IF NOT EXISTS jobs_by_expiry ON jobs (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (type, ordinal) WHERE status = 'queued' AND dispatch = 1;
CREATE INDEX IF NOT EXISTS jobs_by_lease_expiry ON jobs (lease_expires_at) WHERE lease_expires_at IS NOT NULL;
-- Streamed text, one row per chunk event: appending text never rewrites what came before.
CREATE TABLE IF NOT EXISTS texts (
  job_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  text TEXT NOT NULL,
  PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
-- Large values (results, checkpoints) stored apart from the log; deleted with their job.
CREATE TABLE IF NOT EXISTS job_values (
  job_id TEXT NOT NULL,
  ref TEXT NOT NULL,
  json TEXT NOT NULL,
  PRIMARY KEY (job_id, ref)
) WITHOUT ROWID;
-- Each job's items (per-item progress) by the job's ordinal and the item's place in the job's list:
-- an item's update rewrites its row, never the job's other items (the state holds none).
CREATE TABLE IF NOT EXISTS job_items (
  ordinal INTEGER NOT NULL,
  idx INTEGER NOT NULL,
  item TEXT NOT NULL,
  PRIMARY KEY (ordinal, idx)
) WITHOUT ROWID;
-- Each job's log, by the job's ordinal (never reused: AUTOINCREMENT) and seq.
CREATE TABLE IF NOT EXISTS job_log (
  ordinal INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  body TEXT NOT NULL,
  PRIMARY KEY (ordinal, seq)
) WITHOUT ROWID;
`

/**
 * The embedded default: one SQLite file in WAL mode. Each append updates the job row and inserts
 * its events atomically, committed (and with `synchronous=full`, fsynced) before the caller is
 * answered or any subscriber hears of it. One process owns the file (fan-out is in-process);
 * several nodes need the Redis store.
 *
 * Group commit: creates, appends and claims that arrive in the same turn of the event loop (every request
 * read in one poll phase) are committed together in one transaction with one fsync; a refused
 * write (a lost lease, a finished job) changes nothing, and one that fails part-way undoes only
 * itself (#runGroup). Under load this turns N fsyncs into one; alone, a write waits only for the
 * end of the current turn.
 */
export class SqliteStore extends InProcessStore implements core.Store {
  readonly kind = 'sqlite'
  readonly #db: Database.Database
  /** The lock that makes this process the file's only owner (see ownerLock); null in memory. */
  readonly #lock: Database.Database | null
  readonly #retention: core.Retention
  readonly #statements
  readonly #appendTx: TwoWays<[string, core.AppendPlan, string], { applied: AppliedPlan; before: Cached; after: Cached | null }>
  readonly #claimTx: TwoWays<[readonly string[], number, number, core.AppendPlan], { applied: AppliedPlan; before: Cached; after: Cached }[]>
  readonly #createTx: TwoWays<[core.NewJob], CreateOutcome>
  readonly #sweepTx
  /**
   * Recently touched jobs, parsed: at least the last `cacheSize` remembered, at most twice as many.
   * This process is the file's only writer, so the cache is coherent; it spares a JSON parse of the
   * whole state (text included) on every append.
   */
  readonly #cache: RecentMap<string, Cached>
  /** Queue positions without counting rows: rebuilt at open, updated after each commit. */
  readonly #queue = new QueueOrder()
  readonly #groupTx
  #group: GroupedWrite[] = []
  #closed = false
  /** Durability off the loop (sqlite-wal.ts): null for `:memory:` or with `synchronous: 'normal'`. */
  readonly #walSync: WalSync | null
  /** Checkpoints off the loop: null for `:memory:`. */
  readonly #checkpointer: Checkpointer | null
  /**
   * Jobs with a commit whose fsync is still running, and the promise of that fsync: a read of such
   * a job waits for it, so nobody sees a state a power cut could still take back.
   */
  readonly #unsynced = new Map<string, Promise<void>>()
  /** The latest group's fsync (a list waits for it). */
  #lastSync: Promise<void> | null = null
  /** Jobs the group being committed wrote. */
  #touched: string[] = []
  /** Counts the writes' first changing statements: a failure after one needs its savepoint. */
  #changes = 0

  constructor(options: SqliteStoreOptions) {
    super()
    this.#retention = options.retention ?? defaultRetention
    this.#cache = new RecentMap(cacheSize, { bytes: options.cacheBytes ?? defaultStateCacheBytes, weigh: (entry) => entry.bytes })
    if (options.path !== ':memory:') mkdirSync(dirname(options.path), { recursive: true })
    this.#lock = options.path === ':memory:' ? null : ownerLock(options.path)
    // Anything that fails from here on (a file that is not a database, a schema from a newer
    // Jobwire) closes what was opened: the lock above all, or this process would refuse itself the
    // file until it exits.
    const opened: { db?: Database.Database; checkpointer?: Checkpointer | null } = {}
    try {
      const db = new Database(options.path)
      this.#db = opened.db = db
      db.pragma('journal_mode = WAL')
      // Commits only write the WAL; its fsync (for `full`) and the checkpoints run off the loop.
      db.pragma('synchronous = NORMAL')
      db.pragma('busy_timeout = 5000')
      // The page cache stays better-sqlite3's 16 MiB. A commit after a b-tree split walks all of it
      // (SQLite's balancing renumbers pages through the lock-byte page's number, which leaves the
      // cache's highest key there): 3.6 % of the server's CPU for trivial jobs at 16 workers, 0.9 %
      // with 4 MiB. But the fleet's working set (a log and a text page per running job: ~2,200 pages
      // for 1,000 jobs) no longer fits in 4 MiB, and its latency rose (docs/benchmarks.md).
      // When a group's writes run in savepoints (#runGroup), its statement journal (the pages they
      // may roll back) soon outgrows SQLite's 64 KiB in-memory default: spilled, it cost a temp file
      // (create, writes, unlink) per group and ~4 writes per job.
      db.pragma('temp_store = MEMORY')
      const onDisk = options.path !== ':memory:'
      if (onDisk) db.pragma('wal_autocheckpoint = 0')
      this.#walSync = onDisk && options.synchronous !== 'normal' ? new WalSync(options.path) : null
      const version = db.pragma('user_version', { simple: true }) as number
      if (version > schemaVersion) {
        throw new Error(`${options.path} was written by a newer Jobwire (schema ${version}; this one knows ${schemaVersion})`)
      }
      db.transaction(() => {
        db.exec(schema)
        const columns = db.prepare<[], { name: string }>('PRAGMA table_info(jobs)').all()
        if (!columns.some((column) => column.name === 'deadline_at')) db.exec(deadlineColumns)
        if (!columns.some((column) => column.name === 'input')) db.exec(inputColumn)
        if (!columns.some((column) => column.name === 'text_length')) db.exec(textLengthColumn)
        db.exec(deadlineIndex)
        const oldLog = db.prepare<[], { name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'events'").get()
        if (oldLog !== undefined) db.exec(logByOrdinal)
        if (version < 5) db.exec(itemsApart)
        db.pragma(`user_version = ${schemaVersion}`)
      }).immediate()

      const s = {
        jobById: db.prepare<[string], JobRow>('SELECT ordinal, state, input, first_seq, lease, timers FROM jobs WHERE id = ?'),
        jobByKey: db.prepare<[string], JobRow>('SELECT ordinal, state, input, first_seq, lease, timers FROM jobs WHERE idempotency_key = ?'),
        insertJob: db.prepare(
          `INSERT INTO jobs (id, type, status, tenant, user, idempotency_key, seq, first_seq, state, input, dispatch, timers, deadline_at, text_length)
           VALUES (@id, @type, @status, @tenant, @user, @key, @seq, 1, @state, @input, @dispatch, @timers, @deadlineAt, 0)`,
        ),
        dueDeadlines: db.prepare<[number, number], { id: string }>(
          'SELECT id FROM jobs WHERE deadline_at <= ? ORDER BY deadline_at LIMIT ?',
        ),
        insertEvent: db.prepare<[number, number, string]>('INSERT INTO job_log (ordinal, seq, body) VALUES (?, ?, ?)'),
        trimEvents: db.prepare<[number, number]>('DELETE FROM job_log WHERE ordinal = ? AND seq < ?'),
        readEvents: db.prepare<[number, number, number], { body: string }>(
          'SELECT body FROM job_log WHERE ordinal = ? AND seq > ? ORDER BY seq LIMIT ?',
        ),
        expired: db.prepare<[number], { id: string; ordinal: number }>('SELECT id, ordinal FROM jobs WHERE expires_at <= ? LIMIT 500'),
        expiredLeases: db.prepare<[number, number], { id: string }>(
          'SELECT id FROM jobs WHERE lease_expires_at < ? ORDER BY lease_expires_at LIMIT ?',
        ),
        queued: db.prepare<[], { id: string; type: string; ordinal: number }>(
          `SELECT id, type, ordinal FROM jobs WHERE status = 'queued' AND dispatch = 1 ORDER BY ordinal`,
        ),
        deleteEvents: db.prepare<[number]>('DELETE FROM job_log WHERE ordinal = ?'),
        insertText: db.prepare('INSERT INTO texts (job_id, seq, text) VALUES (?, ?, ?)'),
        readText: db.prepare<[string], { text: string | null }>('SELECT group_concat(text, \'\') AS text FROM (SELECT text FROM texts WHERE job_id = ? ORDER BY seq)'),
        deleteTexts: db.prepare('DELETE FROM texts WHERE job_id = ?'),
        upsertItem: db.prepare<[number, number, string]>('INSERT OR REPLACE INTO job_items (ordinal, idx, item) VALUES (?, ?, ?)'),
        readItems: db.prepare<[number], { item: string }>('SELECT item FROM job_items WHERE ordinal = ? ORDER BY idx'),
        deleteItems: db.prepare<[number]>('DELETE FROM job_items WHERE ordinal = ?'),
        deleteJob: db.prepare('DELETE FROM jobs WHERE id = ?'),
        insertValue: db.prepare('INSERT OR REPLACE INTO job_values (job_id, ref, json) VALUES (?, ?, ?)'),
        readValue: db.prepare<[string, string], { json: string }>('SELECT json FROM job_values WHERE job_id = ? AND ref = ?'),
        deleteValue: db.prepare('DELETE FROM job_values WHERE job_id = ? AND ref = ?'),
        deleteValues: db.prepare('DELETE FROM job_values WHERE job_id = ?'),
      }
      this.#statements = s
      for (const { id, type, ordinal } of s.queued.iterate()) this.#queue.add(type, ordinal, id)
      this.#checkpointer = opened.checkpointer = onDisk ? new Checkpointer(options.path, options.checkpoint) : null

      this.#createTx = twoWays(db, (input: core.NewJob): CreateOutcome => {
        if (input.idempotencyKey !== null) {
          const existing = s.jobByKey.get(input.idempotencyKey)
          if (existing !== undefined) return { result: { job: this.#restore(existing), created: false }, ordinal: existing.ordinal, timers: noTimers, inputBytes: 0, itemsBytes: 0, bytes: 0 }
        }
        const event = createdEvent(input)
        const job = applyEvent(null, event)
        const timers = initialTimers(input.deadlines, input.dispatch, Date.parse(input.at))
        const inputJson = inputKeptApart(job.input)
        const inputBytes = inputJson?.length ?? 0
        const state = storedStateJson(job, inputBytes > 0, true)
        this.#changes++
        const inserted = s.insertJob.run({
          id: job.id,
          type: job.type,
          status: job.status,
          tenant: job.owner?.tenant ?? null,
          user: job.owner?.user ?? null,
          key: input.idempotencyKey,
          seq: job.seq,
          state,
          input: inputJson,
          dispatch: job.dispatch ? 1 : 0,
          ...timerColumns(timers),
        })
        const ordinal = Number(inserted.lastInsertRowid)
        s.insertEvent.run(ordinal, 1, JSON.stringify(event))
        this.#touched.push(job.id)
        return { result: { job, created: true }, ordinal, timers, ...stateWeights(job, state.length, inputBytes) }
      })

      // The job row's UPDATE for each set of changed columns (see `write`), prepared when first needed.
      const updateStatements = new Map<number, Database.Statement<[Record<string, unknown>]>>()
      const updateJob = (changed: number) => {
        let statement = updateStatements.get(changed)
        if (statement === undefined) {
          const sets = ['seq = @seq', 'first_seq = @firstSeq', 'state = @state']
          if (changed & updateStatus) sets.push('status = @status')
          if (changed & updateExpiry) sets.push('expires_at = @expiresAt')
          if (changed & updateLease) sets.push('lease = @lease', 'lease_expires_at = @leaseExpiresAt')
          if (changed & updateAvailable) sets.push('available_at = @availableAt')
          if (changed & updateTimers) sets.push('timers = @timers', 'deadline_at = @deadlineAt')
          if (changed & updateTextLength) sets.push('text_length = @textLength')
          statement = db.prepare<[Record<string, unknown>]>(`UPDATE jobs SET ${sets.join(', ')} WHERE id = @id`)
          updateStatements.set(changed, statement)
        }
        return statement
      }

      const write = (current: Cached, applied: AppliedPlan): Cached => {
        const { job, events, lease, timers } = applied
        this.#changes++
        for (const event of events) {
          s.insertEvent.run(current.ordinal, event.seq, JSON.stringify(event))
          if (event.type === 'chunk') s.insertText.run(job.id, event.seq, event.data.text)
          // A requeue that rolls the text back to its checkpoint: the kept text becomes one row.
          if (event.type === 'requeued' && event.data.textLength !== undefined) {
            s.deleteTexts.run(job.id)
            if (event.data.textLength > 0) s.insertText.run(job.id, event.seq, job.text.slice(0, event.data.textLength))
          }
        }
        for (const index of changedItemPlaces(job, events) ?? []) s.upsertItem.run(current.ordinal, index, JSON.stringify(job.items[index]))
        let firstSeq = current.firstSeq
        const keepFrom = job.seq - this.#retention.maxEventsPerJob + 1
        if (keepFrom > firstSeq) {
          s.trimEvents.run(current.ordinal, keepFrom)
          firstSeq = keepFrom
        }
        // Only the columns this write changed: SQLite rewrites every index over a column an UPDATE
        // sets, changed or not, so setting them all dirtied 3–4 times the pages (and WAL frames) a
        // progress tick needs (seq and state).
        const state = storedStateJson(job, current.inputBytes > 0, true)
        const row: Record<string, unknown> = { id: job.id, seq: job.seq, firstSeq, state }
        let changed = 0
        if (job.status !== current.job.status) {
          changed |= updateStatus
          row.status = job.status
        }
        const expiresAt = expiryOf(job, this.#retention, timers)
        if (expiresAt !== expiryOf(current.job, this.#retention, current.timers)) {
          changed |= updateExpiry
          row.expiresAt = expiresAt
        }
        if (applied.leaseChanged) {
          changed |= updateLease
          row.lease = lease === null ? null : JSON.stringify(lease)
          row.leaseExpiresAt = lease === null || lease.ended === true ? null : lease.expiresAt
        }
        if (applied.availableAt !== undefined) {
          changed |= updateAvailable
          row.availableAt = applied.availableAt
        }
        if (applied.timersChanged) {
          changed |= updateTimers
          Object.assign(row, timerColumns(timers))
        }
        if (job.text.length !== current.job.text.length) {
          changed |= updateTextLength
          row.textLength = job.text.length
        }
        updateJob(changed).run(row)
        this.#touched.push(job.id)
        return { job, lease, timers, ordinal: current.ordinal, firstSeq, ...stateWeights(job, state.length, current.inputBytes, current) }
      }

      this.#appendTx = twoWays(db, (jobId: string, plan: core.AppendPlan, at: string) => {
        const current = this.#load(jobId)
        if (current === null) throw new JobwireError('job_not_found', { jobId })
        const applied = applyPlan(current.job, current.lease, plan, at, current.timers)
        const changed = applied.events.length > 0 || applied.leaseChanged || applied.timersChanged
        return { applied, before: current, after: changed ? write(current, applied) : null }
      })

      // One prepared statement per number of types asked for.
      const claimStatements = new Map<number, Database.Statement<[number, ...(string | number)[]], { id: string }>>()
      const claimable = (types: readonly string[]) => {
        let statement = claimStatements.get(types.length)
        if (statement === undefined) {
          statement = db.prepare<[number, ...(string | number)[]], { id: string }>(
            `SELECT id FROM jobs WHERE status = 'queued' AND dispatch = 1 AND available_at <= ?
               AND type IN (${types.map(() => '?').join(', ')}) ORDER BY ordinal LIMIT ?`,
          )
          claimStatements.set(types.length, statement)
        }
        return statement
      }
      this.#claimTx = twoWays(db, (types: readonly string[], now: number, max: number, plan: core.AppendPlan) => {
        const at = new Date(now).toISOString()
        const outcomes: { applied: AppliedPlan; before: Cached; after: Cached }[] = []
        for (const row of claimable(types).all(now, ...types, max)) {
          const current = this.#load(row.id)
          if (current === null) continue
          const applied = applyPlan(current.job, current.lease, plan, at, current.timers)
          outcomes.push({ applied, before: current, after: write(current, applied) })
        }
        return outcomes
      })

      this.#groupTx = db.transaction((writes: readonly GroupedWrite[], guarded: boolean) =>
        writes.map((write): { ok: true; value: unknown } | { ok: false; error: unknown } => {
          const changes = this.#changes
          try {
            return { ok: true, value: write.work(guarded) }
          } catch (error) {
            // Bare, a write refused before it changed anything (a lost lease, a finished job: what
            // refuses writes) has nothing to undo; one that failed after must not stay half-done.
            if (!guarded && this.#changes !== changes) throw new PartlyWritten(error)
            return { ok: false, error }
          }
        }),
      )

      this.#sweepTx = db.transaction((now: number): number => {
        const ids = s.expired.all(now)
        for (const { id, ordinal } of ids) {
          s.deleteEvents.run(ordinal)
          s.deleteItems.run(ordinal)
          s.deleteTexts.run(id)
          s.deleteValues.run(id)
          s.deleteJob.run(id)
          this.#cache.delete(id)
        }
        return ids.length
      })
    } catch (error) {
      void opened.checkpointer?.close()
      opened.db?.close()
      this.#lock?.close()
      throw error
    }
  }

  createJob(input: core.NewJob): Promise<core.CreateResult> {
    return this.#grouped(
      (guarded) => {
        const created = this.#createTx(guarded, input)
        if (created.result.created) this.#remember({ job: created.result.job, lease: null, timers: created.timers, ordinal: created.ordinal, firstSeq: 1, inputBytes: created.inputBytes, itemsBytes: created.itemsBytes, bytes: created.bytes })
        return created
      },
      (created) => this.#created(input, created),
    )
  }

  /** After the commit: queue order and subscribers (the cache was updated in the transaction). */

  #created(input: core.NewJob, { result, ordinal }: CreateOutcome): core.CreateResult {
    if (result.created) {
      if (isQueuedForDispatch(result.job)) {
        this.#queue.add(result.job.type, ordinal, result.job.id)
        this.fanOut.publishQueue(result.job.type)
      }
      const created = createdEvent(input)
      this.fanOut.publish(input.id, [created])
      this.fanOut.publishCreated(created)
    }
    return result
  }

  async getJob(id: string): Promise<JobState | null> {
    this.#open()
    await this.#synced(id)
    return this.#load(id)?.job ?? null
  }

  async getRecord(id: string): Promise<core.JobRecord | null> {
    this.#open()
    await this.#synced(id)
    const cached = this.#load(id)
    return cached === null ? null : { job: cached.job, lease: cached.lease, timers: cached.timers }
  }

  async listJobs(query: core.JobQuery): Promise<core.JobPage> {
    this.#open()
    await this.#lastSync?.catch(() => undefined)
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
    const sql = `SELECT ordinal, id, state, text_length FROM jobs ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''}
      ORDER BY ordinal DESC LIMIT @limit`
    const rows = this.#db.prepare<[Record<string, string | number>], { ordinal: number; id: string; state: string; text_length: number | null }>(sql).all(params)
    const page = rows.slice(0, query.limit)
    const last = page.at(-1)
    return {
      jobs: page.map((row) => {
        const cached = this.#cache.get(row.id)
        return cached === undefined ? this.#listed(row) : listedJob(cached.job)
      }),
      nextCursor: rows.length > query.limit && last !== undefined ? encodeCursor(last.ordinal) : null,
    }
  }

  append(jobId: string, plan: core.AppendPlan): Promise<core.AppendResult> {
    return this.#grouped(
      (guarded) => {
        const outcome = this.#appendTx(guarded, jobId, plan, new Date().toISOString())
        // Later writes of this group to the same job must start from this one.
        if (outcome.after !== null) this.#remember(outcome.after)
        return outcome
      },
      (outcome) => this.#publish(outcome),
    )
  }

  /** Queues a write for the group commit at the end of this turn of the event loop. */
  #grouped<W, R>(work: (guarded: boolean) => W, done: (value: W) => R): Promise<R> {
    try {
      this.#open()
    } catch (error) {
      return Promise.reject(error)
    }
    return new Promise<R>((resolve, reject) => {
      if (this.#group.length === 0) setImmediate(() => this.#startGroup())
      this.#group.push({ work, done: done as (value: unknown) => unknown, resolve: resolve as (value: unknown) => void, reject })
    })
  }

  /**
   * Commits the turn's group — unless the WAL has outgrown its checkpoints: then the writes wait
   * (queued, the loop free) until a checkpoint has caught up, and this commit starts the WAL over.
   */
  #startGroup(): void {
    const checkpointer = this.#checkpointer
    if (checkpointer?.behind === true && !this.#closed) {
      void checkpointer.catchUp().then(() => setImmediate(() => runAtEndOfTurn(() => this.#commitGroup())))
      return
    }
    runAtEndOfTurn(() => this.#commitGroup())
  }

  #commitGroup(): void {
    const writes = this.#group
    this.#group = []
    if (writes.length === 0) return
    let outcomes: ({ ok: true; value: unknown } | { ok: false; error: unknown })[]
    try {
      if (this.#closed) throw new JobwireError('unavailable', { reason: 'the store is closed' })
      outcomes = this.#runGroup(writes)
    } catch (error) {
      // Nothing of the group was committed; the cache may hold what its writes did.
      this.#cache.clear()
      for (const write of writes) write.reject(error)
      return
    }
    this.#checkpointer?.committed()
    const settle = (): void => this.#settle(writes, outcomes)
    if (this.#walSync === null || this.#touched.length === 0) return settle()
    // Answered and published once on disk; reads of these jobs wait for it meanwhile.
    const synced = this.#walSync.durable()
    const touched = this.#touched
    for (const id of touched) this.#unsynced.set(id, synced)
    this.#lastSync = synced
    synced.then(settle, (error: unknown) => {
      const failure = new JobwireError('unavailable', { reason: `the database could not be synced to disk: ${String(error)}` })
      for (const write of writes) write.reject(failure)
    }).finally(() => {
      for (const id of touched) if (this.#unsynced.get(id) === synced) this.#unsynced.delete(id)
      if (this.#lastSync === synced) this.#lastSync = null
    })
  }

  /**
   * Runs a group's writes in one transaction, bare: a savepoint per write (SAVEPOINT, RELEASE, and
   * SQLite keeping each page's first version in the statement journal) cost 4–8 % of a write's
   * CPU (`bench/sqlite-writes.mjs`).
   * Writes are refused (a lost lease, a finished job) before they change anything, so bare is
   * right for them; only a statement failing after a write began changing the database (an I/O
   * or constraint error) needs its savepoint. Then the whole group is rolled back and run again,
   * each write in its own savepoint, so that the failure undoes only its own write.
   */
  #runGroup(writes: readonly GroupedWrite[]): ({ ok: true; value: unknown } | { ok: false; error: unknown })[] {
    this.#touched = []
    try {
      return this.#groupTx.immediate(writes, false)
    } catch (error) {
      if (!(error instanceof PartlyWritten)) throw error
    }
    // What the bare run remembered of its writes was rolled back with them.
    this.#cache.clear()
    this.#touched = []
    return this.#groupTx.immediate(writes, true)
  }

  /** Answers a committed group's writes (and runs their `done`: queue order, fan-out). */
  #settle(writes: readonly GroupedWrite[], outcomes: readonly ({ ok: true; value: unknown } | { ok: false; error: unknown })[]): void {
    outcomes.forEach((outcome, i) => {
      const write = writes[i] as GroupedWrite
      if (!outcome.ok) write.reject(outcome.error)
      else {
        try {
          write.resolve(write.done(outcome.value))
        } catch (error) {
          write.reject(error)
        }
      }
    })
  }

  async claim(types: readonly string[], now: number, max: number, plan: core.AppendPlan): Promise<core.AppendResult[]> {
    this.#open()
    if (types.length === 0 || max < 1) return []
    // The claimed jobs commit together in the group commit, beside the turn's other writes.
    return this.#grouped(
      (guarded) => {
        const outcomes = this.#claimTx(guarded, types, now, max, plan)
        // Later writes of this group to the same jobs must start from these.
        for (const outcome of outcomes) this.#remember(outcome.after)
        return outcomes
      },
      (outcomes) => outcomes.map((outcome) => this.#publish(outcome)),
    )
  }

  async expiredLeases(now: number, limit: number): Promise<string[]> {
    this.#open()
    return this.#statements.expiredLeases.all(now, limit).map((row) => row.id)
  }

  async dueDeadlines(now: number, limit: number): Promise<string[]> {
    this.#open()
    return this.#statements.dueDeadlines.all(now, limit).map((row) => row.id)
  }

  async queuePosition(jobId: string): Promise<number | null> {
    this.#open()
    await this.#synced(jobId)
    const current = this.#load(jobId)
    if (current === null || !isQueuedForDispatch(current.job)) return null
    return this.#queue.position(current.job.type, current.ordinal)
  }

  async readLog(jobId: string, after: number, limit: number): Promise<core.LogRange | null> {
    this.#open()
    await this.#synced(jobId)
    const current = this.#load(jobId)
    if (current === null) return null
    const events = this.#statements.readEvents.all(current.ordinal, after, limit).map((r) => JSON.parse(r.body) as JobEvent)
    return { events, firstSeq: current.firstSeq, head: current.job.seq, status: current.job.status }
  }


  // Values are written on their own, before the append that refers to them (whose fsync covers them too).
  async putValue(jobId: string, ref: string, json: string): Promise<void> {
    this.#open()
    this.#statements.insertValue.run(jobId, ref, json)
  }

  async getValue(jobId: string, ref: string): Promise<string | null> {
    this.#open()
    return this.#statements.readValue.get(jobId, ref)?.json ?? null
  }

  async deleteValue(jobId: string, ref: string): Promise<void> {
    this.#open()
    this.#statements.deleteValue.run(jobId, ref)
  }

  async sweep(now: number): Promise<core.SweepResult> {
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
    this.#commitGroup()
    this.#closed = true
    // The last fsync, then the checkpointer's connection, so this one is the last and checkpoints.
    await this.#walSync?.close()
    await this.#checkpointer?.close()
    this.#db.close()
    // Released last: the next owner finds the WAL checkpointed and gone.
    this.#lock?.close()
  }

  /** After the commit only (the cache was updated in the transaction): queue order and subscribers. */
  #publish(outcome: { applied: AppliedPlan; before: Cached; after: Cached | null }): core.AppendResult {
    const { applied, after } = outcome
    if (after !== null) {
      if (this.#queue.sync(after.job.type, after.ordinal, after.job.id, isQueuedForDispatch(after.job))) this.fanOut.publishQueue(after.job.type)
      this.fanOut.publish(after.job.id, applied.events)
    }
    return { job: applied.job, events: applied.events, lease: applied.lease }
  }

  /** A stored state as a list shows it: its items put back, its text only counted (read only for a row written before its length was kept). */
  #listed(row: { ordinal: number; state: string; text_length: number | null }): core.ListedJob {
    const { text, input: _input, ...rest } = JSON.parse(row.state) as JobState
    const textLength = row.text_length ?? (text !== '' ? text.length : (this.#statements.readText.get(rest.id)?.text ?? '').length)
    if (rest.items.length === 0) rest.items = this.#readItems(row.ordinal)
    return { ...rest, textLength }
  }

  #readItems(ordinal: number): JobState['items'] {
    return this.#statements.readItems.all(ordinal).map((r) => JSON.parse(r.item) as JobState['items'][number])
  }

  /** A stored state (kept without its text, its items and an input kept apart) with all put back. */
  #restore(row: { ordinal: number; state: string; input: string | null }): JobState {
    const job = withInputKeptApart(JSON.parse(row.state) as JobState, row.input)
    if (job.text === '') job.text = this.#statements.readText.get(job.id)?.text ?? ''
    if (job.items.length === 0) job.items = this.#readItems(row.ordinal)
    return job
  }

  #load(id: string): Cached | null {
    const cached = this.#cache.get(id)
    if (cached !== undefined) return cached
    const row = this.#statements.jobById.get(id)
    if (row === undefined) return null
    const job = this.#restore(row)
    return this.#remember({
      job,
      lease: row.lease === null ? null : (JSON.parse(row.lease) as core.Lease),
      timers: row.timers === null ? noTimers : (JSON.parse(row.timers) as core.JobTimers),
      ordinal: row.ordinal,
      firstSeq: row.first_seq,
      ...stateWeights(job, row.state.length, row.input?.length ?? 0),
    })
  }

  /** The parsed states kept in memory (#cache): how many, and what they weigh (core.stateWeight). */
  get stateCache(): { jobs: number; bytes: number } {
    return { jobs: this.#cache.size, bytes: this.#cache.bytes }
  }

  #remember(entry: Cached): Cached {
    this.#cache.set(entry.job.id, entry)
    return entry
  }

  /** Waits until the job's last commit is on disk (see #unsynced). */
  async #synced(id: string): Promise<void> {
    const pending = this.#unsynced.get(id)
    if (pending !== undefined) await pending.catch(() => undefined)
  }

  #open(): void {
    if (this.#closed) throw new JobwireError('unavailable', { reason: 'the store is closed' })
  }
}
