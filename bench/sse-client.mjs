// SSE subscribers, a child of bench/run.mjs (IPC). Opens `count` streams with undici `request`
// (one keep-alive Pool, one connection per stream) and reads the raw bytes: it counts the
// producer's events (the `"message":"@<µs>"` marker the producer puts in each) and records
// publish→receive latency of every one of them on every subscriber.
// argv: url path apiKey count.
// IPC in: feedback {on}, mark {name: start|end}, keep {keep}, stop.
// IPC out: ready, min (slowest subscriber's count, while feedback is on), marked, kept, done.
import { performance } from 'node:perf_hooks'
import { Pool } from 'undici'
import { BUCKET_US, BUCKETS, readStamp, recordLatency } from './lib/measure.mjs'

const [url, path, apiKey, countArg] = process.argv.slice(2)
const count = Number(countArg)
const pool = new Pool(url, { connections: count, pipelining: 1, bodyTimeout: 0, headersTimeout: 0, connect: { timeout: 30_000 } })

const MARKER = Buffer.from('"message":"@')
const FRAME_END = Buffer.from('\n\n')
const ERROR_EVENT = Buffer.from('event: error')
const histogram = new Uint32Array(BUCKETS + 1) // slices kept
const slice = new Uint32Array(BUCKETS + 1) // the slice being measured
const timeOrigin = performance.timeOrigin

let measuring = false
let total = 0 // producer events received, all subscribers
let closed = 0
let errorFrames = 0
let firstProblem = null
const subscribers = []

class Subscriber {
  received = 0
  ready = false
  carry = null
  body = null

  onChunk(chunk) {
    let data = this.carry === null ? chunk : Buffer.concat([this.carry, chunk])
    const end = data.lastIndexOf(FRAME_END)
    if (end === -1) {
      this.carry = Buffer.from(data)
      return
    }
    this.carry = end + 2 < data.length ? Buffer.from(data.subarray(end + 2)) : null
    if (!this.ready) {
      this.ready = true
      readyCount++
    }
    const nowUs = (timeOrigin + performance.now()) * 1000
    let n = 0
    for (let i = data.indexOf(MARKER); i !== -1 && i < end; i = data.indexOf(MARKER, i + 12)) {
      if (measuring) recordLatency(slice, nowUs, readStamp(data, i + 12))
      n++
    }
    this.received += n
    total += n
    if (n === 0 && data.indexOf(ERROR_EVENT) !== -1) {
      errorFrames++
      firstProblem ??= data.toString('utf8', 0, Math.min(end, 300))
    }
  }
}

let readyCount = 0
async function open(sub) {
  try {
    const res = await pool.request({
      path,
      method: 'GET',
      headers: { accept: 'text/event-stream', authorization: `Bearer ${apiKey}` },
    })
    if (res.statusCode !== 200) throw new Error(`GET ${path} answered ${res.statusCode}: ${await res.body.text()}`)
    sub.body = res.body
    res.body.on('data', (chunk) => sub.onChunk(chunk))
    res.body.on('error', () => {})
    res.body.on('close', () => {
      if (!stopping) {
        closed++
        firstProblem ??= 'stream closed by the server'
      }
    })
  } catch (error) {
    closed++
    firstProblem ??= String(error?.message ?? error)
  }
}

let stopping = false
for (let i = 0; i < count; i++) subscribers.push(new Subscriber())
await Promise.all(subscribers.map(open))

// Wait for every stream's first frame (Jobwire: retry + snapshot), then tell the parent.
await new Promise((resolve) => {
  const check = setInterval(() => {
    if (readyCount + closed >= count) {
      clearInterval(check)
      resolve()
    }
  }, 5)
})
process.send({ type: 'ready', ready: readyCount, closed, firstProblem })

// Flow-control feedback: the least any subscriber here has received.
let lastMin = -1
let feedback = null
function sendMin() {
  let min = Infinity
  for (const sub of subscribers) if (sub.body !== null && sub.received < min) min = sub.received
  if (min !== lastMin && min !== Infinity) {
    lastMin = min
    process.send({ type: 'min', min })
  }
}

process.on('message', (message) => {
  if (message.type === 'feedback') {
    clearInterval(feedback)
    feedback = message.on ? setInterval(sendMin, 1) : null
    lastMin = -1
    if (message.on) sendMin()
  } else if (message.type === 'mark') {
    if (message.name === 'start') {
      slice.fill(0)
      measuring = true
    }
    if (message.name === 'end') measuring = false
    process.send({ type: 'marked', name: message.name, total, cpu: process.cpuUsage() })
  } else if (message.type === 'keep') {
    if (message.keep) for (let i = 0; i <= BUCKETS; i++) histogram[i] += slice[i]
    slice.fill(0)
    process.send({ type: 'kept' })
  } else if (message.type === 'take') {
    // Hands over the kept histogram and starts a new one (the max-rate and the paced phases).
    const sparse = []
    for (let i = 0; i <= BUCKETS; i++) if (histogram[i] !== 0) sparse.push([i, histogram[i]])
    histogram.fill(0)
    process.send({ type: 'taken', histogram: sparse, bucketUs: BUCKET_US })
  } else if (message.type === 'stop') {
    stopping = true
    clearInterval(feedback)
    const sparse = []
    for (let i = 0; i <= BUCKETS; i++) if (histogram[i] !== 0) sparse.push([i, histogram[i]])
    const received = subscribers.map((s) => s.received)
    for (const sub of subscribers) sub.body?.destroy()
    process.send(
      { type: 'done', histogram: sparse, bucketUs: BUCKET_US, total, closed, errorFrames, firstProblem, minReceived: Math.min(...received), maxReceived: Math.max(...received) },
      () => pool.destroy().finally(() => process.exit(0)),
    )
  }
})
