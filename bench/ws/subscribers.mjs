// WebSocket (or SSE, for the idle-memory phase) subscribers, a child of bench/ws/run.mjs (IPC).
// argv: kind url apiKey count jobs(comma-separated). Subscriber i watches jobs[i % jobs.length].
// kind: jobwire | bare | bare-corked | socketio (WebSocket), jobwire-sse (SSE streams), bullmq
// (url: the Redis URL, apiKey: "queue|prefix"; one QueueEvents reader per process, its `progress`
// events counted for every subscriber of the job), or jobwire-client: what an app runs, one
// `@jobwire/client` per process (one WebSocket) and a `watchJob` per subscriber, each event folded
// into the job's state by the SDK (counted by the seqs the state advances; latency from the stamp
// of the event each update carries — for a slow reader's coalesced run, its last).
// Counts the producer's events by the stamp each carries — `@<µs since the epoch>` in a string
// field (`"message":"@…"`, or in streamed text, where a worker's outbox may join several) — and records
// publish→receive latency of every one on every subscriber (µs since the epoch on both sides).
// IPC in: feedback {on}, mark {name: start|end}, stop. Out: ready, min (slowest subscriber's count
// while feedback is on), marked {name, total, histogram?}.
import { performance } from 'node:perf_hooks'
import { setImmediate } from 'node:timers'
import WebSocket from 'ws'
import { BUCKET_US, BUCKETS, readStamp, recordLatency } from '../lib/measure.mjs'

const [kind, url, apiKey, countArg, jobsArg] = process.argv.slice(2)
const count = Number(countArg)
const jobs = jobsArg.split(',')
const MARKER = 0x40 // '@'
const slice = new Uint32Array(BUCKETS + 1)
const timeOrigin = performance.timeOrigin
let measuring = false
let total = 0
let ready = 0
const subscribers = []

function countMarkers(sub, data) {
  const nowUs = (timeOrigin + performance.now()) * 1000
  let n = 0
  for (let i = data.indexOf(MARKER); i !== -1; i = data.indexOf(MARKER, i + 1)) {
    const sentUs = readStamp(data, i + 1, 10)
    if (sentUs === -1) continue // an '@' that is not a stamp
    if (measuring) recordLatency(slice, nowUs, sentUs)
    n++
  }
  sub.received += n
  total += n
}

function markReady(sub) {
  if (sub.ready) return
  sub.ready = true
  if (++ready === count) process.send({ type: 'ready' })
}

async function openWs(i) {
  const sub = { received: 0, ready: false }
  subscribers.push(sub)
  const job = jobs[i % jobs.length]
  if (kind === 'socketio') {
    const { io } = await import('socket.io-client')
    const socket = io(url, { transports: ['websocket'], reconnection: false, forceNew: true })
    socket.on('connect', () => {
      socket.emit('join', job)
      setTimeout(() => markReady(sub), 50)
    })
    socket.on('m', (frame) => countMarkers(sub, Buffer.from(frame)))
    return
  }
  const path = kind === 'jobwire' ? `/v1/ws?access_token=${apiKey}` : '/'
  const socket = new WebSocket(`${url.replace('http', 'ws')}${path}`, { perMessageDeflate: false })
  socket.on('open', () => {
    socket.send(JSON.stringify(kind === 'jobwire' ? { type: 'subscribe', jobId: job } : { jobId: job }))
    if (kind !== 'jobwire') setTimeout(() => markReady(sub), 50)
  })
  socket.on('message', (data) => {
    if (!sub.ready && data.indexOf('"type":"subscribed"') !== -1) markReady(sub)
    countMarkers(sub, data)
  })
  socket.on('error', (error) => console.error(`subscriber ${i}: ${error.message}`))
}

async function openSse(i) {
  const sub = { received: 0, ready: false }
  subscribers.push(sub)
  const { request, Agent } = await import('undici')
  const agent = (openSse.agent ??= new Agent({ connections: count + 10, bodyTimeout: 0, headersTimeout: 0 }))
  const response = await request(`${url}/v1/jobs/${jobs[i % jobs.length]}/stream`, { dispatcher: agent, headers: { authorization: `Bearer ${apiKey}`, accept: 'text/event-stream' } })
  response.body.on('data', (chunk) => {
    markReady(sub)
    countMarkers(sub, chunk)
  })
}

/** `@jobwire/client` (WebSocket): one client for the process, a watch per subscriber. */
async function openClient(i) {
  const sub = { received: 0, ready: false }
  subscribers.push(sub)
  if (openClient.client === undefined) {
    const { createJobwireClient } = await import('@jobwire/client')
    openClient.client = createJobwireClient({ url, getToken: () => apiKey, transports: ['ws'], WebSocket })
  }
  let seq = null
  openClient.client.watchJob(jobs[i % jobs.length], {
    onUpdate: (state, update) => {
      if (seq === null || update.cause !== 'event') {
        seq = state.seq
        markReady(sub)
        return
      }
      const n = state.seq - seq
      seq = state.seq
      sub.received += n
      total += n
      const data = update.event?.data
      const text = data === undefined ? undefined : typeof data.text === 'string' ? data.text : data.message
      // The stamp after the '@' (16 digits of µs since the epoch); an '@' without one is not counted.
      const at = typeof text === 'string' ? text.indexOf('@') : -1
      const sentUs = at === -1 ? Number.NaN : Number.parseInt(text.slice(at + 1, at + 17), 10)
      if (measuring && Number.isFinite(sentUs)) recordLatency(slice, (timeOrigin + performance.now()) * 1000, sentUs)
    },
    onEnd: (error) => error && console.error(`subscriber ${i}: ${error.code}`),
  })
}

/** BullMQ: one QueueEvents reader per process; a job's `progress` counts once for each of its subscribers. */
async function openBullmq(i) {
  const sub = { received: 0, ready: false }
  subscribers.push(sub)
  if (openBullmq.byJob === undefined) {
    const { QueueEvents } = await import('bullmq')
    const [queue, prefix] = apiKey.split('|')
    const byJob = (openBullmq.byJob = new Map())
    const events = new QueueEvents(queue, { connection: { url }, prefix })
    await events.waitUntilReady()
    events.on('progress', ({ jobId, data }) => {
      const subs = byJob.get(jobId)
      if (subs === undefined) return
      const text = Buffer.from(JSON.stringify(data))
      for (const s of subs) countMarkers(s, text)
    })
  }
  const job = jobs[i % jobs.length]
  const subs = openBullmq.byJob.get(job) ?? []
  openBullmq.byJob.set(job, [...subs, sub])
  markReady(sub)
}

const open = { 'jobwire-sse': openSse, bullmq: openBullmq, 'jobwire-client': openClient }[kind] ?? openWs
for (let i = 0; i < count; i++) {
  await open(i)
  if (i % 100 === 99) await new Promise((resolve) => setImmediate(resolve))
}

let feedback = null
process.on('message', (message) => {
  if (message.type === 'feedback') {
    clearInterval(feedback)
    feedback = message.on
      ? setInterval(() => {
          let min = Infinity
          for (const sub of subscribers) if (sub.received < min) min = sub.received
          process.send({ type: 'min', min })
        }, 2)
      : null
  }
  if (message.type === 'mark') {
    if (message.name === 'start') {
      slice.fill(0)
      measuring = true
      process.send({ type: 'marked', name: 'start', total, cpu: process.cpuUsage() })
    } else {
      measuring = false
      // Sparse histogram: [bucket, count] pairs.
      const histogram = []
      for (let b = 0; b <= BUCKETS; b++) if (slice[b] !== 0) histogram.push([b, slice[b]])
      process.send({ type: 'marked', name: 'end', total, histogram, bucketUs: BUCKET_US, cpu: process.cpuUsage() })
    }
  }
  if (message.type === 'stop') process.exit(0)
})
