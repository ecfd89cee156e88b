// Producers of the users'-shape bench, a child of bench/shape/run.mjs (IPC): each job has its own
// producer (its own keep-alive connection, one request at a time, as a worker or backend writing
// its own job) that sends its job's events in small batches on a schedule.
// argv: kind url apiKey redisUrl prefix jobs(comma-separated)
//   kind jobwire-* | relay: POST /v1/jobs/:id/events {events}; socketio: POST /publish/:job {events};
//   socketio-redis: @socket.io/redis-emitter to the job's room; bullmq: job.updateProgress() per event.
// IPC in: {type:'run', eventsPerSecond, batch: 'one' | 'small', seed}: the jobs' requests are due
// one after another, evenly spread (each job every jobs × mean batch / eventsPerSecond seconds), a
// batch of 1 event ('one') or 1–3 ('small', mean 2, seeded); each event is stamped with the time its
// request was due, so a producer that falls behind shows up as latency. A job whose requests pile up
// (8 waiting) skips the next one (counted). {type:'halt'} → {type:'halted', events, skipped, failed};
// {type:'stop'}.
import { performance } from 'node:perf_hooks'

const [kind, url, apiKey, redisUrl, prefix, jobsArg] = process.argv.slice(2)
const jobs = jobsArg.split(',')
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** mulberry32: a small seeded generator, so every target gets the same batches. */
function random(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** The events of request `k`, stamped `@<µs since the epoch>` where the watchers look for it. */
function eventsFor(k, size, stampUs) {
  const events = []
  for (let i = 0; i < size; i++) {
    const n = k * 3 + i
    const which = n % 3
    if (which === 0) events.push({ type: 'chunk', text: `@${stampUs} and a few more tokens` })
    else if (which === 1) events.push({ type: 'progress', percent: n % 100, message: `@${stampUs}` })
    else events.push({ type: 'item', id: `file-${n % 50}`, status: 'running', message: `@${stampUs}` })
  }
  return events
}

/** send(jobIndex, events) → Promise, for this kind of target. */
async function sender() {
  if (kind === 'socketio-redis') {
    const { Emitter } = await import('@socket.io/redis-emitter')
    const { Redis } = await import('ioredis')
    const redis = new Redis(redisUrl)
    const emitter = new Emitter(redis, { key: prefix })
    const seqs = new Array(jobs.length).fill(0)
    return {
      send: async (j, events) => {
        const at = new Date().toISOString()
        for (const { type, ...data } of events) emitter.to(jobs[j]).emit('m', `{"type":"event","event":${JSON.stringify({ jobId: jobs[j], seq: ++seqs[j], type, at, data })}}`)
      },
      close: async () => redis.disconnect(),
    }
  }
  if (kind === 'bullmq') {
    const { Queue, Job } = await import('bullmq')
    const { Redis } = await import('ioredis')
    const connection = new Redis(redisUrl, { maxRetriesPerRequest: null })
    const queue = new Queue(url, { connection, prefix })
    const handles = await Promise.all(jobs.map((id) => Job.fromId(queue, id)))
    return {
      send: async (j, events) => {
        for (const event of events) await handles[j].updateProgress(event)
      },
      close: async () => {
        await queue.close()
        connection.disconnect()
      },
    }
  }
  const { Client } = await import('undici')
  const clients = jobs.map(() => new Client(url, { pipelining: 1, keepAliveTimeout: 60_000 }))
  const path = (job) => (kind === 'socketio' ? `/publish/${job}` : `/v1/jobs/${job}/events`)
  const headers = { 'content-type': 'application/json', authorization: `Bearer ${apiKey}` }
  return {
    send: async (j, events) => {
      const response = await clients[j].request({ path: path(jobs[j]), method: 'POST', headers, body: JSON.stringify({ events }) })
      const text = await response.body.text()
      if (response.statusCode >= 300) throw new Error(`HTTP ${response.statusCode} ${text.slice(0, 200)}`)
    },
    close: () => Promise.all(clients.map((client) => client.close())),
  }
}

const target = await sender()
let running = false
let loop = Promise.resolve()
let stats = { events: 0, skipped: 0, failed: 0, error: null }

async function run({ eventsPerSecond, batch, seed }) {
  const rand = random(seed)
  const meanBatch = batch === 'one' ? 1 : 2
  const gapMs = (1000 * meanBatch) / eventsPerSecond
  const waiting = new Array(jobs.length).fill(0)
  const chains = new Array(jobs.length).fill(Promise.resolve())
  const began = performance.now()
  let k = 0
  while (running) {
    const wait = began + k * gapMs - performance.now()
    // A timer, never a spin: at thousands of requests a second the next one is always < 1 ms away,
    // and a setImmediate loop kept each producer process at 70 % of a core doing nothing, starving
    // the server under test of the machine's two cores. Requests due within the timer's 1 ms go
    // together; each event keeps the time it was due, so the wait still counts as latency.
    if (wait > 0) await sleep(wait)
    for (const now = performance.now(); running && began + k * gapMs <= now; k++) {
      const j = k % jobs.length
      const size = batch === 'one' ? 1 : 1 + Math.floor(rand() * 3)
      if (waiting[j] >= 8) {
        stats.skipped += size
        continue
      }
      const events = eventsFor(k, size, Math.round((performance.timeOrigin + began + k * gapMs) * 1000))
      waiting[j]++
      stats.events += size
      chains[j] = chains[j]
        .then(() => target.send(j, events))
        .catch((error) => {
          stats.failed += size
          stats.error ??= error.message
        })
        .finally(() => waiting[j]--)
    }
  }
  await Promise.all(chains)
}

process.send({ type: 'ready' })
process.on('message', async (message) => {
  if (message.type === 'run') {
    await loop
    running = true
    stats = { events: 0, skipped: 0, failed: 0, error: null }
    loop = run(message)
  }
  if (message.type === 'halt') {
    running = false
    await loop
    process.send({ type: 'halted', ...stats })
  }
  if (message.type === 'stop') {
    running = false
    await loop
    await target.close()
    process.exit(0)
  }
})
