import { spawn } from 'node:child_process'
import { closeSync, existsSync, openSync, readSync, statSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { JobState, StreamMessage } from '@jobwire/protocol'
import { defaultCoreLimits, defaultRetention, Dispatcher, JobService, MemoryStore, SqliteStore, type Retention } from '@jobwire/server'
import Database from 'better-sqlite3'
import { Checkpointer } from '../src/stores/sqlite-wal.js'
import { listedJob } from '../src/core/store.js'
import { describeStoreConformance } from './store-conformance.js'

describeStoreConformance('memory', ({ retention }) => new MemoryStore(retention === undefined ? {} : { retention }))

let sqliteDir = ''
let sqliteFiles = 0
beforeAll(async () => {
  sqliteDir = await mkdtemp(join(tmpdir(), 'jobwire-sqlite-'))
})

// A fresh file per store, so tests share nothing.
describeStoreConformance(
  'sqlite (WAL file)',
  ({ retention }) => new SqliteStore({ path: join(sqliteDir, `store-${++sqliteFiles}.db`), ...(retention === undefined ? {} : { retention }) }),
  () => rm(sqliteDir, { recursive: true, force: true }),
)

describe('SqliteStore: group commit', () => {
  let dir = ''
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'jobwire-group-'))
  })
  afterAll(() => rm(dir, { recursive: true, force: true }))

  it('writes issued in one turn commit together: a refused one undoes only itself, order holds per job, and the file agrees with what callers and subscribers were told', async () => {
    const path = join(dir, 'group.db')
    const store = new SqliteStore({ path })
    const service = new JobService(store, defaultCoreLimits)
    const a = (await service.createJob({ type: 'group' })).job.id
    const b = (await service.createJob({ type: 'group' })).job.id
    const heard: { jobId: string; seq: number; type: string }[] = []
    store.subscribe(a, (events) => heard.push(...events.map((e) => ({ jobId: e.jobId, seq: e.seq, type: e.type }))))
    store.subscribe(b, (events) => heard.push(...events.map((e) => ({ jobId: e.jobId, seq: e.seq, type: e.type }))))
    const progress = (percent: number) => [{ type: 'progress' as const, data: { percent } }]
    // All issued before any is answered: one group. The third refuses (throws) inside its savepoint.
    const writes = [
      store.append(a, () => [{ type: 'started', data: { attempt: 1, worker: null } }, ...progress(10)]),
      store.append(b, () => [{ type: 'started' as const, data: { attempt: 1, worker: null } }]),
      store.append(a, () => {
        throw new Error('refused by its plan')
      }),
      store.append(a, () => progress(20)),
      store.append(b, () => [{ type: 'completed' as const, data: { result: { ok: true } } }]),
      store.append(a, () => progress(30)),
      store.createJob({ id: 'job_grouped00000000000', type: 'group', input: null, owner: null, idempotencyKey: null, dispatch: true, maxAttempts: 1, at: new Date().toISOString() }),
      store.append('job_grouped00000000000', () => [{ type: 'started', data: { attempt: 1, worker: null } }, ...progress(5)]),
    ]
    const settled = await Promise.allSettled(writes)
    expect(settled.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'fulfilled', 'fulfilled', 'fulfilled', 'fulfilled', 'fulfilled'])
    const seqOf = (i: number) => ((settled[i] as PromiseFulfilledResult<{ events: { seq: number }[] }>).value.events[0]?.seq ?? null)
    expect([seqOf(0), seqOf(3), seqOf(5)]).toEqual([2, 4, 5])
    expect([seqOf(1), seqOf(4)]).toEqual([2, 3])
    expect(heard.filter((e) => e.jobId === a).map((e) => e.seq)).toEqual([2, 3, 4, 5])
    expect(heard.filter((e) => e.jobId === b).map((e) => e.type)).toEqual(['started', 'completed'])
    const live = await Promise.all([a, b, 'job_grouped00000000000'].map((id) => store.getJob(id)))
    expect(live.map((job) => [job?.seq, job?.status, job?.progress.percent])).toEqual([
      [5, 'running', 30],
      [3, 'completed', 100],
      [3, 'running', 5],
    ])
    await store.close()
    // What a reopened file holds is exactly what the callers were answered.
    const reopened = new SqliteStore({ path })
    expect(await Promise.all([a, b, 'job_grouped00000000000'].map((id) => reopened.getJob(id)))).toEqual(live)
    expect((await reopened.readLog(a, 0, 100))?.events.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5])
    await reopened.close()
  })

  it('a write that fails part-way (a statement after it began changing the file) undoes only itself; its group commits the rest', async () => {
    const path = join(dir, 'part-way.db')
    const store = new SqliteStore({ path })
    const service = new JobService(store, defaultCoreLimits)
    const a = (await service.createJob({ type: 'group' })).job.id
    const b = (await service.createJob({ type: 'group' })).job.id
    const started = [{ type: 'started' as const, data: { attempt: 1, worker: null } }]
    await Promise.all([store.append(a, () => started), store.append(b, () => started)])
    // A failure inside SQLite after the write's first statements ran: its events are in the log
    // when the job row's UPDATE is refused (the store runs a group's writes without savepoints).
    const other = new Database(path)
    other.exec(`CREATE TRIGGER refuse_boom BEFORE UPDATE ON jobs WHEN NEW.state LIKE '%boom%' BEGIN SELECT RAISE(ABORT, 'boom refused'); END`)
    other.close()
    const heard: { jobId: string; seq: number; message: unknown }[] = []
    for (const id of [a, b]) store.subscribe(id, (events) => heard.push(...events.map((e) => ({ jobId: e.jobId, seq: e.seq, message: (e.data as { message?: unknown }).message }))))
    const progress = (percent: number, message: string) => () => [{ type: 'progress' as const, data: { percent, message } }]
    const settled = await Promise.allSettled([
      store.append(a, progress(10, 'a1')),
      store.append(b, progress(10, 'boom')),
      store.append(a, progress(20, 'a2')),
      store.append(b, progress(30, 'b2')),
    ])
    expect(settled.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'fulfilled'])
    expect(String((settled[1] as PromiseRejectedResult).reason)).toContain('boom refused')
    expect(heard).toEqual([
      { jobId: a, seq: 3, message: 'a1' },
      { jobId: a, seq: 4, message: 'a2' },
      { jobId: b, seq: 3, message: 'b2' },
    ])
    // Nothing of the failed write is left: the log goes on without a hole or a stray event.
    expect((await store.readLog(b, 0, 100))?.events.map((e) => [e.seq, e.type])).toEqual([[1, 'created'], [2, 'started'], [3, 'progress']])
    await expect(store.append(b, progress(40, 'b3'))).resolves.toMatchObject({ job: { seq: 4 } })
    const live = await Promise.all([a, b].map((id) => store.getJob(id)))
    await store.close()
    const reopened = new SqliteStore({ path })
    expect(await Promise.all([a, b].map((id) => reopened.getJob(id)))).toEqual(live)
    expect((await reopened.readLog(b, 0, 100))?.events.map((e) => e.seq)).toEqual([1, 2, 3, 4])
    await reopened.close()
  })

  it('a write issued before close is committed by close, and one issued after is refused with unavailable', async () => {
    const path = join(dir, 'close.db')
    const store = new SqliteStore({ path })
    const service = new JobService(store, defaultCoreLimits)
    const id = (await service.createJob({ type: 'group' })).job.id
    const pending = store.append(id, () => [{ type: 'started', data: { attempt: 1, worker: null } }, { type: 'progress', data: { percent: 50 } }])
    await store.close()
    await expect(pending).resolves.toMatchObject({ job: { seq: 3 } })
    await expect(store.append(id, () => [{ type: 'progress', data: { percent: 60 } }])).rejects.toMatchObject({ code: 'unavailable' })
    const reopened = new SqliteStore({ path })
    expect((await reopened.getJob(id))?.progress.percent).toBe(50)
    await reopened.close()
  })
})

describe('SqliteStore: the WAL is synced and checkpointed off the event loop', () => {
  let dir = ''
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'jobwire-wal-'))
  })
  afterAll(() => rm(dir, { recursive: true, force: true }))

  it('a steady stream of commits never lets the WAL outgrow its catch-up bound, and every event is in the file after reopen', async () => {
    const path = join(dir, 'steady.db')
    // A small bound, so a few thousand writes cross it many times.
    const store = new SqliteStore({ path, checkpoint: { intervalMs: 0, catchUpPages: 64, catchUpCommits: 8 } })
    const service = new JobService(store, defaultCoreLimits)
    const ids = await Promise.all(Array.from({ length: 20 }, async () => (await service.createJob({ type: 'wal' })).job.id))
    let largest = 0
    // Every round is one group commit of 20 appends; nothing pauses between rounds.
    for (let round = 0; round < 150; round++) {
      await Promise.all(ids.map((id) => service.appendEvents(id, [{ type: 'chunk', data: { text: 'x'.repeat(200) } }, { type: 'progress', data: { percent: round % 100 } }])))
      largest = Math.max(largest, statSync(`${path}-wal`).size)
    }
    // At most 64 uncopied pages plus 8 rounds' commits (each round writes the same rows): a
    // fraction of the ~150 rounds' worth (tens of MiB) it would hold without checkpoints.
    expect(largest).toBeLessThan(4 * 1024 * 1024)
    await store.close()
    // The store's connection was the last one open: SQLite checkpointed and removed the WAL.
    expect(existsSync(`${path}-wal`)).toBe(false)
    const reopened = new SqliteStore({ path })
    for (const id of ids) {
      const job = await reopened.getJob(id)
      expect(job?.seq).toBe(2 + 150 * 2)
      expect(job?.text.length).toBe(150 * 200)
    }
    await reopened.close()
  })

  it('the commit a catch-up held starts the WAL over, so the one after it is not held again for the old size', async () => {
    const path = join(dir, 'held.db')
    const db = new Database(path)
    db.pragma('journal_mode = WAL')
    db.pragma('wal_autocheckpoint = 0')
    db.exec('CREATE TABLE t (x TEXT)')
    // One commit of some 60 pages: over a bound of 16.
    db.prepare('INSERT INTO t SELECT ? FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 60) SELECT i FROM n)').run('x'.repeat(3000))
    const checkpointer = new Checkpointer(path, { intervalMs: 60_000, catchUpPages: 16, catchUpCommits: 1_000 })
    try {
      // A checkpoint after the commit (none ran before), then the hold: the first reports the WAL over its bound.
      checkpointer.committed()
      await checkpointer.catchUp()
      // The held commit, made now, starts the WAL over (SQLite does when the WAL was copied in full).
      db.prepare('INSERT INTO t VALUES (?)').run('y')
      checkpointer.committed()
      const walHeader = Buffer.alloc(16)
      const fd = openSync(`${path}-wal`, 'r')
      readSync(fd, walHeader, 0, 16, 0)
      closeSync(fd)
      expect(walHeader.readUInt32BE(12)).toBe(1) // the WAL's checkpoint sequence: started over once
      // The next commit goes ahead. It used to be held again, for the size the WAL had before (a
      // second wait for every catch-up).
      expect(checkpointer.behind).toBe(false)
    } finally {
      await checkpointer.close()
      db.close()
    }
  })

  it('with synchronous normal, writes commit and publish the same way (no fsync), and survive reopen', async () => {
    const path = join(dir, 'normal.db')
    const store = new SqliteStore({ path, synchronous: 'normal' })
    const service = new JobService(store, defaultCoreLimits)
    const id = (await service.createJob({ type: 'wal' })).job.id
    const heard: number[] = []
    store.subscribe(id, (events) => heard.push(...events.map((e) => e.seq)))
    await service.appendEvents(id, [{ type: 'progress', data: { percent: 10 } }])
    await service.appendEvents(id, [{ type: 'progress', data: { percent: 20 } }])
    // 2: started (progress starts a queued job), 3 and 4: the progress.
    expect(heard).toEqual([2, 3, 4])
    await store.close()
    const reopened = new SqliteStore({ path })
    expect((await reopened.getJob(id))?.progress.percent).toBe(20)
    await reopened.close()
  })
})

describe('SqliteStore: the file outlives the store that wrote it', () => {
  let dir = ''
  const stores: SqliteStore[] = []
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'jobwire-reopen-'))
  })
  afterAll(async () => {
    await Promise.all(stores.map((store) => store.close()))
    await rm(dir, { recursive: true, force: true })
  })

  function openFile(path: string, retention: Retention = defaultRetention): SqliteStore {
    const store = new SqliteStore({ path, retention })
    stores.push(store)
    return store
  }

  it('jobs, their log and their seq survive close and reopen, and new events continue the seq', async () => {
    const path = join(dir, 'reopen.db')
    const first = openFile(path)
    const before = new JobService(first, defaultCoreLimits)
    const a = await before.createJob({ type: 'export', input: { n: 1 }, owner: { tenant: 't', user: 'u' }, idempotencyKey: 'k-a' })
    await before.appendEvents(a.job.id, [
      { type: 'progress', data: { stage: 'one', percent: 10 } },
      { type: 'chunk', data: { text: 'hello ' } },
    ])
    const b = await before.createJob({ type: 'import' })
    await before.cancelJob(b.job.id, 'nope')
    const jobsBefore = await first.listJobs({ limit: 10 })
    const logBefore = await first.readLog(a.job.id, 0, 100)
    expect(logBefore?.head).toBe(4)
    await first.close()

    const second = openFile(path)
    const after = new JobService(second, defaultCoreLimits)
    expect(listedJob((await second.getJob(a.job.id)) as JobState)).toEqual(jobsBefore.jobs[1])
    expect(await second.readLog(a.job.id, 0, 100)).toEqual(logBefore)
    expect(await second.listJobs({ limit: 10 })).toEqual(jobsBefore)

    const next = await after.appendEvents(a.job.id, [{ type: 'chunk', data: { text: 'world' } }])
    expect(next.events.map((e) => e.seq)).toEqual([5])
    expect(next.job).toMatchObject({ seq: 5, text: 'hello world', status: 'running', attempt: 1 })
    expect((await second.readLog(a.job.id, 0, 100))?.events.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5])
    // Cancelling the job cancelled before the restart is still the idempotent no-op.
    expect((await after.cancelJob(b.job.id)).events).toEqual([])

    // The idempotency key still names the first job, and new jobs still list newest first.
    expect(await after.createJob({ type: 'export', idempotencyKey: 'k-a' })).toMatchObject({ created: false, job: { id: a.job.id } })
    const c = await after.createJob({ type: 'report' })
    expect((await second.listJobs({ limit: 10 })).jobs.map((j) => j.id)).toEqual([c.job.id, b.job.id, a.job.id])
  })

  it('text rolled back by a resume stays rolled back after reopen (the texts table drops what the checkpoint did not hold)', async () => {
    const path = join(dir, 'rollback.db')
    const first = openFile(path)
    const before = new JobService(first, defaultCoreLimits)
    const { job } = await before.createJob({ type: 'story', dispatch: false })
    await before.appendEvents(job.id, [{ type: 'chunk', data: { text: 'Once ' } }, { type: 'checkpoint', data: { data: 1 } }, { type: 'chunk', data: { text: 'upon a ' } }])
    await before.cancelJob(job.id)
    await before.resumeJob(job.id)
    await before.appendEvents(job.id, [{ type: 'chunk', data: { text: 'upon a time' } }])
    expect((await first.getJob(job.id))?.text).toBe('Once upon a time')
    await first.close()
    const second = openFile(path)
    expect((await second.getJob(job.id))?.text).toBe('Once upon a time')
  })

  it('a trimmed log keeps its firstSeq across reopen, so an old position still gets a reset snapshot', async () => {
    const path = join(dir, 'trimmed.db')
    const retention = { ...defaultRetention, maxEventsPerJob: 3 }
    const first = openFile(path, retention)
    const service = new JobService(first, defaultCoreLimits)
    const { job } = await service.createJob({ type: 'chat' })
    for (let i = 0; i < 6; i++) await service.appendEvents(job.id, [{ type: 'chunk', data: { text: String(i) } }])
    await first.close()

    const second = openFile(path, retention)
    expect(await second.readLog(job.id, 0, 100)).toMatchObject({ firstSeq: 6, head: 8 })
    expect((await second.getJob(job.id))?.text).toBe('012345')
    const messages: StreamMessage[] = []
    const subscription = await new JobService(second, defaultCoreLimits).subscribe(job.id, 1, { write: (m) => messages.push(...m), end: () => {} })
    expect(messages).toEqual([{ type: 'snapshot', job: await second.getJob(job.id), reset: true, reason: 'trimmed' }])
    subscription.close()
  })

  it('leases, a retry backoff and the dispatch queue survive close and reopen', async () => {
    const path = join(dir, 'dispatch.db')
    let now = Date.now()
    const open = (store: SqliteStore) => {
      const service = new JobService(store, { ...defaultCoreLimits, retryBackoffMs: 5_000 }, () => new Date(now))
      const dispatcher = new Dispatcher(service, () => now)
      const claim = () => dispatcher.claim({ types: ['render'], worker: 'w', leaseMs: 30_000, waitMs: 0 })
      return { service, dispatcher, claim }
    }
    const first = openFile(path)
    const before = open(first)
    const create = async (type = 'render') => (await before.service.createJob({ type })).job.id
    const held = await create()
    const backedOff = await create()
    const queued = [await create(), await create()]
    const mail = await create('mail')
    const claimed = await before.claim()
    expect(claimed?.job.id).toBe(held)
    const token = claimed?.lease.token as string
    await before.service.appendEvents(held, [{ type: 'checkpoint', data: { data: { step: 4 } } }], { lease: token, batch: 7 })
    await before.dispatcher.heartbeat(held, token, 40_000)
    const flaky = await before.claim()
    await before.service.appendEvents(backedOff, [{ type: 'failed', data: { code: 'busy', message: 'm', retryable: true } }], {
      lease: flaky?.lease.token,
    })
    const heldBefore = await first.getRecord(held)
    expect(heldBefore?.lease).toMatchObject({ token, lastBatch: 7, expiresAt: now + 40_000 })
    await first.close()

    const second = openFile(path)
    const after = open(second)
    expect(await second.getRecord(held)).toEqual(heldBefore)
    expect(await Promise.all([backedOff, ...queued, mail].map((id) => second.queuePosition(id)))).toEqual([1, 2, 3, 1])
    // The lease still guards the job: its last batch is a duplicate, a forged lease is refused.
    expect((await after.service.appendEvents(held, [{ type: 'chunk', data: { text: 'x' } }], { lease: token, batch: 7 })).duplicate).toBe(true)
    await expect(after.service.appendEvents(held, [{ type: 'chunk', data: { text: 'x' } }], { lease: 'lease_forged' })).rejects.toMatchObject({
      code: 'lease_lost',
    })
    // The backoff still holds, and the queue is still FIFO.
    expect((await after.claim())?.job.id).toBe(queued[0])
    now += 5_000
    expect((await after.claim())?.job).toMatchObject({ id: backedOff, attempt: 2 })
    expect((await after.claim())?.job.id).toBe(queued[1])
    expect(await after.claim()).toBeNull()
    // And the leases lapse on the reopened file like any other.
    now += 40_001
    expect((await second.expiredLeases(now, 10)).sort()).toEqual([held, backedOff, ...queued].sort())
    expect(await after.dispatcher.reclaimLapsed()).toBe(4)
    expect(await second.getRecord(held)).toMatchObject({ lease: null, job: { status: 'queued', checkpoint: { step: 4 }, attempt: 1 } })
  })

  it('a finished job reopened later is still swept by its TTL', async () => {
    const path = join(dir, 'sweep.db')
    const retention = { ...defaultRetention, ttlMs: { completed: 60_000, failed: 60_000, cancelled: 60_000 } }
    const first = openFile(path, retention)
    const { job } = await new JobService(first, defaultCoreLimits).createJob({ type: 'x' })
    await new JobService(first, defaultCoreLimits).cancelJob(job.id)
    await first.close()

    const second = openFile(path, retention)
    expect(await second.sweep(Date.now())).toEqual({ expiredJobs: 0 })
    expect(await second.sweep(Date.now() + 120_000)).toEqual({ expiredJobs: 1 })
    expect(await second.getJob(job.id)).toBeNull()
  })
})

describe('SqliteStore: deadlines on disk', () => {
  let dir = ''
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'jobwire-deadlines-'))
  })
  afterAll(() => rm(dir, { recursive: true, force: true }))

  it('keeps deadlines across a restart, and a file from before deadlines (schema 1) is upgraded in place', async () => {
    const path = join(dir, 'deadlines.db')
    const clock = { now: Date.now() }
    const first = new SqliteStore({ path })
    const old = (await new JobService(first, defaultCoreLimits).createJob({ type: 'old' })).job.id
    await first.close()
    // Back to the schema before deadlines, as a file written by an older Jobwire is.
    const raw = new Database(path)
    raw.exec('DROP INDEX jobs_by_deadline; ALTER TABLE jobs DROP COLUMN timers; ALTER TABLE jobs DROP COLUMN deadline_at; PRAGMA user_version = 1')
    raw.close()
    const upgraded = new SqliteStore({ path })
    const service = new JobService(upgraded, defaultCoreLimits, () => new Date(clock.now))
    expect((await upgraded.getJob(old))?.status).toBe('queued')
    const timed = (await service.createJob({ type: 'slow', deadlines: { queueTimeoutMs: 60_000 } })).job.id
    await upgraded.close()
    const reopened = new SqliteStore({ path })
    const later = new JobService(reopened, defaultCoreLimits, () => new Date(clock.now + 61_000))
    expect(await later.deadlines.fireDue()).toBe(1)
    expect(await reopened.getJob(timed)).toMatchObject({ status: 'failed', error: { code: 'queue_timeout' } })
    expect((await reopened.getJob(old))?.status).toBe('queued')
    await reopened.close()
  })

  it('a file from schema 2 (the log keyed by job id) is upgraded in place: each log reads the same and takes new events', async () => {
    const path = join(dir, 'log-v2.db')
    const first = new SqliteStore({ path })
    const service = new JobService(first, defaultCoreLimits)
    const ids: string[] = []
    for (let i = 0; i < 3; i++) {
      const { job } = await service.createJob({ type: 'log', dispatch: false })
      await service.appendEvents(job.id, [{ type: 'chunk', data: { text: `a${i}` } }, { type: 'progress', data: { percent: 10 * i } }])
      ids.push(job.id)
    }
    const before = await Promise.all(ids.map((id) => first.readLog(id, 0, 100)))
    await first.close()
    // Back to schema 2's log, keyed by the job's id, as a file written by an older Jobwire is.
    const raw = new Database(path)
    raw.exec(`CREATE TABLE events (job_id TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (job_id, seq)) WITHOUT ROWID;
      INSERT INTO events SELECT jobs.id, job_log.seq, job_log.body FROM job_log JOIN jobs ON jobs.ordinal = job_log.ordinal;
      DROP TABLE job_log; PRAGMA user_version = 2`)
    raw.close()
    const upgraded = new SqliteStore({ path })
    expect(await Promise.all(ids.map((id) => upgraded.readLog(id, 0, 100)))).toEqual(before)
    const later = new JobService(upgraded, defaultCoreLimits)
    await later.appendEvents(ids[1] as string, [{ type: 'chunk', data: { text: '!' } }])
    expect((await upgraded.readLog(ids[1] as string, 0, 100))?.events.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5])
    expect((await later.getJob(ids[1] as string)).text).toBe('a1!')
    await upgraded.close()
    const check = new Database(path)
    expect(check.pragma('user_version', { simple: true })).toBe(5)
    expect(check.prepare("SELECT name FROM sqlite_master WHERE name = 'events'").get()).toBeUndefined()
    check.close()
  })

  it('a large input is stored once, apart from the state every write rewrites; reads, lists, claims, re-creates and a reopen see it whole; a file from schema 3 keeps its inputs where they were', async () => {
    const path = join(dir, 'inputs.db')
    const document = { title: 'report', body: 'lorem ipsum '.repeat(20_000) }
    const small = { page: 3 }
    const first = new SqliteStore({ path })
    const service = new JobService(first, defaultCoreLimits)
    const big = (await service.createJob({ type: 'analyze', input: document, idempotencyKey: 'doc-1' })).job.id
    const little = (await service.createJob({ type: 'analyze', input: small })).job.id
    const claimed = await new Dispatcher(service).claim({ types: ['analyze'], worker: 'w', leaseMs: 30_000, waitMs: 0 })
    expect(claimed?.job).toMatchObject({ id: big, input: document })
    for (let i = 1; i <= 20; i++) await service.appendEvents(big, [{ type: 'progress', data: { percent: 5 * i } }], { lease: claimed?.lease.token as string, batch: i })
    const rowsOf = () => {
      const raw = new Database(path, { readonly: true })
      const rows = raw.prepare<[], { id: string; state: string; input: string | null }>('SELECT id, state, input FROM jobs').all()
      raw.close()
      return new Map(rows.map((row) => [row.id, row]))
    }
    // The row keeps the document once, in its own column; the state written twenty-one times since holds none of it.
    const bigRow = rowsOf().get(big)
    expect(JSON.parse(bigRow?.input as string)).toEqual(document)
    expect(JSON.parse(bigRow?.state as string)).toMatchObject({ input: null, progress: { percent: 100 } })
    expect((bigRow?.state as string).length).toBeLessThan(2_000)
    // A small input stays in the state.
    expect(rowsOf().get(little)?.input).toBeNull()
    expect(JSON.parse(rowsOf().get(little)?.state as string).input).toEqual(small)
    await first.close()

    const second = new SqliteStore({ path })
    const again = new JobService(second, defaultCoreLimits)
    expect(await second.getJob(big)).toMatchObject({ input: document, progress: { percent: 100 } })
    expect((await again.createJob({ type: 'analyze', input: document, idempotencyKey: 'doc-1' })).job).toMatchObject({ id: big, input: document })
    // A list leaves inputs out, large or small.
    const listed = await second.listJobs({ limit: 10 })
    expect(listed.jobs.find((job) => job.id === big)).not.toHaveProperty('input')
    expect(listed.jobs.find((job) => job.id === little)).toMatchObject({ id: little, textLength: 0 })
    await second.close()

    // Back to schema 3, where every input lived in the state (as a file written by an older Jobwire).
    const raw = new Database(path)
    raw.prepare("UPDATE jobs SET state = json_set(state, '$.input', json(input)) WHERE input IS NOT NULL").run()
    raw.exec('ALTER TABLE jobs DROP COLUMN input; PRAGMA user_version = 3')
    raw.close()
    const upgraded = new SqliteStore({ path })
    const later = new JobService(upgraded, defaultCoreLimits)
    expect(await upgraded.getJob(big)).toMatchObject({ input: document })
    await later.appendEvents(big, [{ type: 'progress', data: { percent: 100, message: 'done soon' } }], { lease: claimed?.lease.token as string, batch: 21 })
    await upgraded.close()
    const reopened = new SqliteStore({ path })
    expect(await reopened.getJob(big)).toMatchObject({ input: document, progress: { message: 'done soon' } })
    await reopened.close()
  })
})

describe('SqliteStore: items kept apart (schema 5)', () => {
  let dir = ''
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'jobwire-items-'))
  })
  afterAll(() => rm(dir, { recursive: true, force: true }))

  const itemsOf = (n: number, status: 'running' | 'completed', from = 0) =>
    Array.from({ length: n }, (_, i) => ({ type: 'item' as const, data: { id: `file-${from + i}`, status, message: `${status} ${from + i}` } }))
  const rowsOf = (path: string) => {
    const raw = new Database(path, { readonly: true })
    const state = raw.prepare<[], { state: string }>('SELECT state FROM jobs').all().map((row) => JSON.parse(row.state) as { items: unknown[] })
    const items = raw.prepare<[], { ordinal: number; idx: number; item: string }>('SELECT ordinal, idx, item FROM job_items ORDER BY ordinal, idx').all()
    raw.close()
    return { state, items }
  }

  it('an item update rewrites its own row, not the state; reads, lists and a reopen see every item in order; the sweep deletes them', async () => {
    const path = join(dir, 'items.db')
    const retention = { ...defaultRetention, ttlMs: { completed: 60_000, failed: 60_000, cancelled: 60_000 } }
    const first = new SqliteStore({ path, retention })
    const service = new JobService(first, defaultCoreLimits)
    const { job } = await service.createJob({ type: 'export', dispatch: false })
    await service.appendEvents(job.id, itemsOf(40, 'running'))
    // Two updates of one item and a new one in a single write: the item's last state wins.
    await service.appendEvents(job.id, [...itemsOf(1, 'completed', 7), { type: 'progress', data: { percent: 20 } }, { type: 'item', data: { id: 'file-7', percent: 100 } }, ...itemsOf(1, 'running', 40)])
    const expected = (await first.getJob(job.id))?.items
    expect(expected?.map((item) => item.id)).toEqual(Array.from({ length: 41 }, (_, i) => `file-${i}`))
    expect(expected?.[7]).toMatchObject({ id: 'file-7', status: 'completed', percent: 100, message: 'completed 7' })
    // On disk: the state holds no items, each item is a row of its own in the job's order.
    const stored = rowsOf(path)
    expect(stored.state[0]?.items).toEqual([])
    expect(stored.items.map((row) => row.idx)).toEqual(Array.from({ length: 41 }, (_, i) => i))
    expect(stored.items.map((row) => JSON.parse(row.item))).toEqual(expected)
    await first.close()

    const second = new SqliteStore({ path, retention })
    expect((await second.getJob(job.id))?.items).toEqual(expected)
    expect((await second.listJobs({ limit: 10 })).jobs[0]?.items).toEqual(expected)
    const again = new JobService(second, defaultCoreLimits)
    await again.appendEvents(job.id, [{ type: 'item', data: { id: 'file-0', status: 'failed' } }, { type: 'completed', data: { result: null } }])
    expect((await second.getJob(job.id))?.items[0]).toMatchObject({ id: 'file-0', status: 'failed', message: 'running 0' })
    expect(rowsOf(path).items).toHaveLength(41)
    expect(await second.sweep(Date.now() + 120_000)).toEqual({ expiredJobs: 1 })
    expect(rowsOf(path).items).toEqual([])
    await second.close()
  })

  it('a list counts each job\'s text without reading it; a row written before its length was kept reads it', async () => {
    const path = join(dir, 'text-length.db')
    const first = new SqliteStore({ path })
    const service = new JobService(first, defaultCoreLimits)
    const { job } = await service.createJob({ type: 'transcribe', dispatch: false })
    await service.appendEvents(job.id, [{ type: 'chunk', data: { text: 'héllo 🙂' } }, { type: 'chunk', data: { text: ' world' } }])
    await first.close()
    const lengthOnDisk = () => {
      const raw = new Database(path, { readonly: true })
      const row = raw.prepare<[], { text_length: number | null }>('SELECT text_length FROM jobs').get()
      raw.close()
      return row?.text_length
    }
    // In UTF-16 code units, as JavaScript counts: the emoji is two.
    expect(lengthOnDisk()).toBe(14)
    // As a row written before the length was kept.
    const raw = new Database(path)
    raw.exec('UPDATE jobs SET text_length = NULL')
    raw.close()
    const second = new SqliteStore({ path })
    expect((await second.listJobs({ limit: 5 })).jobs).toEqual([expect.objectContaining({ id: job.id, textLength: 14 })])
    await new JobService(second, defaultCoreLimits).appendEvents(job.id, [{ type: 'chunk', data: { text: '!' } }])
    await second.close()
    expect(lengthOnDisk()).toBe(15)
  })

  it('a file from schema 4 (items in the state) is upgraded in place: each job reads the same and takes new items', async () => {
    const path = join(dir, 'items-v4.db')
    const first = new SqliteStore({ path })
    const service = new JobService(first, defaultCoreLimits)
    const ids: string[] = []
    for (let n = 0; n < 3; n++) {
      const { job } = await service.createJob({ type: 'export', dispatch: false })
      if (n > 0) await service.appendEvents(job.id, [...itemsOf(5 * n, 'running'), { type: 'chunk', data: { text: `t${n}` } }])
      ids.push(job.id)
    }
    const before = await Promise.all(ids.map((id) => first.getJob(id)))
    await first.close()
    // Back to schema 4, where the state held the items (as a file written by an older Jobwire).
    const raw = new Database(path)
    raw.exec(`UPDATE jobs SET state = json_set(state, '$.items', (SELECT json_group_array(json(item)) FROM (SELECT item FROM job_items WHERE job_items.ordinal = jobs.ordinal ORDER BY idx)));
      DROP TABLE job_items; PRAGMA user_version = 4`)
    expect(JSON.parse(raw.prepare<[string], { state: string }>('SELECT state FROM jobs WHERE id = ?').get(ids[2] as string)?.state as string).items).toHaveLength(10)
    raw.close()
    const upgraded = new SqliteStore({ path })
    expect(await Promise.all(ids.map((id) => upgraded.getJob(id)))).toEqual(before)
    expect(rowsOf(path).state.map((state) => state.items)).toEqual([[], [], []])
    expect(rowsOf(path).items).toHaveLength(15)
    await new JobService(upgraded, defaultCoreLimits).appendEvents(ids[1] as string, itemsOf(2, 'completed', 4))
    expect((await upgraded.getJob(ids[1] as string))?.items.map((item) => `${item.id}:${item.status}`)).toEqual([
      'file-0:running', 'file-1:running', 'file-2:running', 'file-3:running', 'file-4:completed', 'file-5:completed',
    ])
    await upgraded.close()
    const check = new Database(path)
    expect(check.pragma('user_version', { simple: true })).toBe(5)
    check.close()
  })
})

describe('SqliteStore: close', () => {
  // A module of its own (Node keeps an `--eval` script's process alive until it settles, which
  // would hide the bug), with nothing else keeping the process alive: writes queued, then close()
  // at once, which commits them and so starts a checkpoint on the thread; close() must resolve.
  const script = `
const { SqliteStore } = await import(process.argv[2])
const store = new SqliteStore({ path: process.argv[3], synchronous: 'normal' })
const at = new Date().toISOString()
const created = Array.from({ length: 20 }, (_, i) =>
  store.createJob({ id: 'job_closerace' + String(i).padStart(12, '0'), type: 'close', input: null, owner: null, idempotencyKey: null, dispatch: true, maxAttempts: 1, at }))
await store.close()
await Promise.all(created)
process.stdout.write('closed')
`
  const dist = fileURLToPath(new URL('../dist/index.js', import.meta.url))

  function closeInChild(file: string, path: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      const child = spawn(process.execPath, [file, dist, path], { stdio: ['ignore', 'pipe', 'pipe'] })
      let stdout = ''
      let stderr = ''
      child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()))
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
      child.on('exit', (code) => resolve({ code, stdout, stderr }))
    })
  }

  it('resolves when a checkpoint is running: the thread keeps the process alive until it has exited', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'jobwire-close-'))
    try {
      const file = join(dir, 'close.mjs')
      await writeFile(file, script)
      // A checkpoint that ended after close() began used to unref the thread: the loop ran dry and
      // the process exited (code 13, an unsettled await) with close() pending, most of the time.
      const runs = []
      for (let i = 0; i < 8; i++) runs.push(await closeInChild(file, join(dir, `close-${i}.db`)))
      expect(runs.map((run) => [run.code, run.stdout, run.stderr])).toEqual(runs.map(() => [0, 'closed', '']))
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
