import { afterEach, describe, expect, it } from 'vitest'
import { reduceEvents, type JobEvent, type JobState, type PollResponse } from '@jobwire/protocol'
import { rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { SqliteStore } from '../src/stores/sqlite-store.js'
import { createJsonClient, makeTempDir, runCli, seededRandom, spawnServer, type JsonClient, type SpawnedServer } from './fixtures.js'

/**
 * A real `jobwire serve` on SQLite, killed with SIGKILL while producers publish as fast as they
 * can. Whatever was answered 2xx before the kill must be in the log after a restart on the same
 * data directory, and the log must go on from there without a hole.
 */
const apiKey = 'durability-test-key-0123456789'
const publishers = 4

interface Ack {
  type: string
  /** The tag the producer put in the event (`message` of a progress event). */
  tag: string | null
}

/** Reads the whole log through the long-poll endpoint, page by page. */
async function readWholeLog(client: JsonClient, jobId: string): Promise<JobEvent[]> {
  const events: JobEvent[] = []
  let after = 0
  for (;;) {
    const page = await client.call<PollResponse>('GET', `/v1/jobs/${jobId}/events?after=${after}`)
    expect(page.status).toBe(200)
    events.push(...page.body.events)
    if (!page.body.more) return events
    after = page.body.next
  }
}

const cleanups: (() => Promise<unknown>)[] = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

async function serve(dataDir: string, sqliteSync: string): Promise<{ server: SpawnedServer; client: JsonClient }> {
  const server = await spawnServer(
    ['--port', '0', '--data-dir', dataDir, '--sqlite-sync', sqliteSync, '--max-events-per-job', '1000000'],
    { JOBWIRE_API_KEY: apiKey },
  )
  const client = createJsonClient(server.url, apiKey)
  cleanups.push(() => server.kill('SIGKILL'), () => client.close())
  return { server, client }
}

describe('durability of acknowledged events across kill -9', () => {
  it.for(['full', 'normal'])(
    'keeps every event answered 2xx when the server is killed mid-publish, and continues the seqs after restart (synchronous=%s)',
    async (sqliteSync) => {
      const dir = await makeTempDir('jobwire-durability-')
      cleanups.push(() => dir.remove())
      const seed = Number(process.env.JOBWIRE_TEST_SEED ?? Math.floor(Math.random() * 2 ** 31))
      const random = seededRandom(seed)

      const first = await serve(dir.path, sqliteSync)
      const created = await first.client.call<JobState>('POST', '/v1/jobs', { type: 'durable' })
      expect(created.status).toBe(201)
      const jobId = created.body.id

      // Publish from several connections at once until the kill cuts them off.
      const acked = new Map<number, Ack>()
      const killAfter = 1500 + Math.floor(random() * 1500)
      let killed: Promise<unknown> | null = null
      const publish = async (worker: number): Promise<void> => {
        for (let n = 0; ; ) {
          const size = 1 + Math.floor(random() * 20)
          const tags = Array.from({ length: size }, () => `w${worker}-${n++}`)
          let answer
          try {
            answer = await first.client.call<{ events: { seq: number; type: string }[] }>('POST', `/v1/jobs/${jobId}/events`, {
              events: tags.map((tag) => ({ type: 'progress', message: tag })),
            })
          } catch {
            return // the server is gone
          }
          expect(answer.status, JSON.stringify(answer.body)).toBe(200)
          // The answer lists the implicit `started` too; the rest are ours, in order.
          const ours = answer.body.events.filter((e) => e.type === 'progress')
          expect(ours).toHaveLength(size)
          for (const event of answer.body.events) if (event.type === 'started') acked.set(event.seq, { type: 'started', tag: null })
          ours.forEach((event, i) => acked.set(event.seq, { type: 'progress', tag: tags[i] ?? null }))
          if (acked.size >= killAfter && killed === null) killed = first.server.kill('SIGKILL')
        }
      }
      await Promise.all(Array.from({ length: publishers }, (_, worker) => publish(worker)))
      expect(killed, 'the publishers stopped before the kill').not.toBeNull()
      expect(await first.server.exited).toEqual({ code: null, signal: 'SIGKILL' })
      const maxAcked = Math.max(...acked.keys())
      const context = `seed ${seed}, ${acked.size} acknowledged, highest seq ${maxAcked}`

      // Restart on the same directory.
      const second = await serve(dir.path, sqliteSync)
      const job = (await second.client.call<JobState>('GET', `/v1/jobs/${jobId}`)).body
      expect(job.seq, context).toBeGreaterThanOrEqual(maxAcked)
      expect(job.status).toBe('running')

      const log = await readWholeLog(second.client, jobId)
      expect(log.map((e) => e.seq), context).toEqual(Array.from({ length: job.seq }, (_, i) => i + 1))
      const lost: string[] = []
      const bySeq = new Map(log.map((e) => [e.seq, e]))
      for (const [seq, ack] of acked) {
        const event = bySeq.get(seq)
        const tag = event?.type === 'progress' ? (event.data.message ?? null) : null
        if (event === undefined || event.type !== ack.type || tag !== ack.tag) {
          lost.push(`seq ${seq}: acknowledged ${ack.type} ${ack.tag}, log has ${event === undefined ? 'nothing' : `${event.type} ${tag}`}`)
        }
      }
      expect(lost.slice(0, 10), context).toEqual([])
      // The job row and the log agree: the snapshot is the reduction of the log.
      expect(reduceEvents(log)).toEqual(job)

      // The log goes on right after the head, and the job can still finish.
      const more = await second.client.call<{ events: { seq: number }[]; seq: number }>('POST', `/v1/jobs/${jobId}/events`, {
        events: [{ type: 'progress', message: 'after restart' }, { type: 'completed', result: { ok: true } }],
      })
      expect(more.status).toBe(200)
      expect(more.body.events.map((e) => e.seq)).toEqual([job.seq + 1, job.seq + 2])
      const finalLog = await readWholeLog(second.client, jobId)
      expect(finalLog.map((e) => e.seq)).toEqual(Array.from({ length: job.seq + 2 }, (_, i) => i + 1))
      expect(finalLog.at(-1)).toMatchObject({ type: 'completed', data: { result: { ok: true } } })

      // A polite stop exits cleanly.
      expect(await second.server.kill('SIGTERM')).toEqual({ code: 0, signal: null })
    },
  )
})

describe('one process owns a SQLite data directory', () => {
  it('refuses a second `jobwire serve` on the same directory at once, naming it, and lets the next one in after a kill -9', async () => {
    const dir = await makeTempDir('jobwire-owner-')
    cleanups.push(() => dir.remove())
    const first = await serve(dir.path, 'full')
    const created = await first.client.call<JobState>('POST', '/v1/jobs', { type: 'owned' })
    expect(created.status).toBe(201)

    // Two processes on one file each keep their own cache, queue and fan-out: the second must not start.
    const second = await runCli(['serve', '--port', '0', '--data-dir', dir.path], { env: { JOBWIRE_API_KEY: apiKey } })
    expect(second.code).toBe(1)
    expect(second.stderr).toContain(`${dir.path}/jobwire.db is in use by another Jobwire process`)
    // The first is untouched by the attempt.
    expect((await first.client.call<JobState>('GET', `/v1/jobs/${created.body.id}`)).status).toBe(200)

    // The operating system releases the lock with the process: no stale lock after kill -9.
    await first.server.kill('SIGKILL')
    const third = await serve(dir.path, 'full')
    expect((await third.client.call<JobState>('GET', `/v1/jobs/${created.body.id}`)).body.type).toBe('owned')
  })

  it('lets the same process open the file again after a store that failed to open (the lock goes with the failure)', async () => {
    const dir = await makeTempDir('jobwire-owner-')
    cleanups.push(() => dir.remove())
    const path = join(dir.path, 'jobwire.db')
    // Not a database: the store takes the lock, then fails on the file.
    await writeFile(path, 'not a database, '.repeat(512))
    expect(() => new SqliteStore({ path })).toThrow(/not a database/)
    await rm(path)
    // An app that fixes the file and retries is not told that another process has it.
    const store = new SqliteStore({ path })
    cleanups.push(() => store.close())
    expect(await store.getJob('job_none')).toBeNull()
  })
})
