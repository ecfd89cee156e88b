import { closeSync, fdatasync, openSync } from 'node:fs'
import { createRequire } from 'node:module'
import { Worker } from 'node:worker_threads'
import { SharedRun } from '../core/shared-run.js'

/**
 * Keeps the SQLite store's disk work off the event loop. SQLite itself runs with
 * `synchronous=NORMAL` and no automatic checkpoints, so a commit only writes its pages to the WAL
 * (the page cache, microseconds); then:
 *
 * - `WalSync` makes the commits durable: one `fsync` of the WAL file on libuv's thread pool covers
 *   every commit made before it started (group commit across turns: at most one fsync runs, and
 *   the commits made meanwhile share the next). A write is answered and published only after its
 *   fsync — what `synchronous=FULL` promises, without stopping the loop for the disk.
 * - `Checkpointer` copies the WAL back into the database file from a worker thread with its own
 *   connection (`wal_checkpoint(PASSIVE)`: it never blocks the writer), so the WAL stays small
 *   and the loop never runs a checkpoint's reads, writes and fsyncs.
 */
export class WalSync {
  readonly #path: string
  #fd: number | null = null
  /** The fsync running now, and the one after it that covers the commits made while it runs. */
  readonly #sync = new SharedRun(() => this.#fsync())

  constructor(databasePath: string) {
    this.#path = `${databasePath}-wal`
  }

  /** Resolves once every commit made before this call is on disk. */
  durable(): Promise<void> {
    // One more fsync, started when the running one ends, covers this commit and any made meanwhile.
    return this.#sync.run()
  }

  /** Waits for what is in flight, then closes the file. */
  async close(): Promise<void> {
    await this.#sync.settled()
    if (this.#fd !== null) closeSync(this.#fd)
    this.#fd = null
  }

  #fsync(): Promise<void> {
    // The WAL exists once the database is open in WAL mode and has been written.
    this.#fd ??= openSync(this.#path, 'r+')
    const fd = this.#fd
    // fdatasync, as SQLite itself syncs: the WAL's data and its size, not its times (once the WAL has
    // reached its size, a sync then writes no file-system journal entry for the inode).
    return new Promise((resolve, reject) => fdatasync(fd, (error) => (error === null ? resolve() : reject(error))))
  }
}

export interface CheckpointOptions {
  /** A checkpoint at most this often (ms), after a commit; 100. */
  intervalMs?: number
  /**
   * WAL size in pages that makes the next commit wait for a checkpoint and start it over (32,768 =
   * 128 MiB). Each wait holds the writes queued meanwhile for a checkpoint and a half (2–13 ms
   * here), and a commit of small writes to a thousand jobs adds about 12 pages: at 16 MiB that was
   * three to six waits a second at 2,000 events/s, holding 1.7–3.6 % of the writes (a share the
   * p99 sees); at 128 MiB, 0–0.25 %.
   */
  catchUpPages?: number
  /** Commits since a checkpoint started that make the next commit wait for one (4,000): a checkpointer starved of CPU leaves `catchUpPages` unseen. */
  catchUpCommits?: number
}

/** The checkpointer thread's code: a connection of its own, a PASSIVE checkpoint when asked. */
const checkpointerSource = `
const { parentPort, workerData } = require('node:worker_threads')
const Database = require(workerData.module)
const db = new Database(workerData.path)
db.pragma('busy_timeout = 1000')
parentPort.on('message', (message) => {
  if (message === 'close') {
    db.close()
    parentPort.postMessage({ closed: true })
    return
  }
  let result = { log: 0, checkpointed: 0 }
  try {
    result = db.pragma('wal_checkpoint(PASSIVE)')[0]
  } catch {}
  parentPort.postMessage({ log: result.log, checkpointed: result.checkpointed })
})
`

/**
 * Checkpoints the WAL from a worker thread: after a commit, when none has run for `intervalMs`
 * (never two at once). A PASSIVE checkpoint copies what was committed when it started; under a
 * steady stream of commits a commit lands while each runs, so the WAL is never found fully copied
 * — and SQLite starts the WAL over only then. So when the WAL has grown to `catchUpPages`, or
 * `catchUpCommits` commits were made since the last checkpoint started (a thread starved of CPU),
 * the store holds its next commit (not the loop: writes keep queueing) until a checkpoint has
 * caught up, and that commit starts the WAL over from the beginning.
 */
export class Checkpointer {
  readonly #worker: Worker
  readonly #intervalMs: number
  readonly #catchUpPages: number
  #busy = false
  #lastEnded = 0
  /** Frames in the WAL when the last checkpoint ended. */
  #log = 0
  readonly #catchUpCommits: number
  /** Commits since the running (or last) checkpoint started, and before it. */
  #commits = 0
  #commitsAtStart = 0
  #waiting: (() => void)[] = []
  /** A held commit waits for the checkpoint now running: nothing is committed while it runs. */
  #holding = false
  #closed: Promise<void> | null = null
  #exited = false

  constructor(databasePath: string, options: CheckpointOptions = {}) {
    this.#intervalMs = options.intervalMs ?? 100
    this.#catchUpPages = options.catchUpPages ?? 32_768
    this.#catchUpCommits = options.catchUpCommits ?? 4_000
    this.#worker = new Worker(checkpointerSource, {
      eval: true,
      workerData: { path: databasePath, module: createRequire(import.meta.url).resolve('better-sqlite3') },
    })
    this.#worker.on('message', (message: { log?: number; checkpointed?: number; closed?: true }) => {
      if (message.log === undefined) return
      this.#busy = false
      // Idle, the thread must not keep the process alive; closing, it must until it has exited
      // (close() waits for that): a checkpoint that ends after close() began would otherwise let
      // the loop run dry, and the process exit with close() unresolved and the database open.
      if (this.#closed === null) this.#worker.unref()
      this.#lastEnded = Date.now()
      // A held commit's checkpoint copied the whole WAL with nothing committed meanwhile: that
      // commit starts the WAL over, so the old size must not hold the commit after it too.
      this.#log = this.#holding ? 0 : message.log
      this.#holding = false
      this.#commits -= this.#commitsAtStart
      const waiting = this.#waiting
      this.#waiting = []
      for (const wake of waiting) wake()
    })
    // A thread that cannot start or dies leaves the WAL to the checkpoint SQLite runs at close.
    this.#worker.on('error', () => this.#release())
    this.#worker.on('exit', () => {
      this.#exited = true
      this.#release()
    })
    this.#worker.unref()
  }

  /** After a commit: starts a checkpoint if none ran for a while. */
  committed(): void {
    this.#commits++
    if (!this.#busy && Date.now() - this.#lastEnded >= this.#intervalMs) this.#run()
  }

  /** Whether checkpoints fell behind (see above): the next commit should wait for `catchUp`. */
  get behind(): boolean {
    return this.#closed === null && (this.#log >= this.#catchUpPages || this.#commits >= this.#catchUpCommits)
  }

  /** Resolves when a checkpoint that started after this call has ended (nothing was committed meanwhile). */
  catchUp(): Promise<void> {
    return new Promise((resolve) => {
      const hold = (): void => {
        this.#waiting.push(resolve)
        this.#holding = true
        this.#run()
      }
      // The running one started before: wait for it, then one more.
      if (this.#busy) this.#waiting.push(hold)
      else hold()
    })
  }

  #run(): void {
    if (this.#closed !== null || this.#busy) return
    this.#busy = true
    // Referenced while it runs: a write may be waiting for it.
    this.#worker.ref()
    this.#commitsAtStart = this.#commits
    this.#worker.postMessage('checkpoint')
  }

  #release(): void {
    this.#busy = false
    this.#log = 0
    this.#commits = 0
    const waiting = this.#waiting
    this.#waiting = []
    for (const wake of waiting) wake()
  }

  /** Closes the thread's connection, so the store's own is the last (SQLite checkpoints as it closes). */
  close(): Promise<void> {
    this.#closed ??= new Promise<void>((resolve) => {
      if (this.#exited) return resolve()
      this.#worker.ref()
      this.#worker.once('exit', () => resolve())
      this.#worker.on('message', (message: { closed?: true }) => {
        if (message.closed === true) void this.#worker.terminate()
      })
      this.#worker.postMessage('close')
    })
    return this.#closed
  }
}
