// WebSocket (or SSE, for the idle-memory phase) subscribers, a child of bench/ws/run.mjs (IPC).
// argv: kind url apiKey count jobs(comma-separated). Subscriber i watches jobs[i % jobs.length].
// kind: jobwire | bare | bare-corked | socketio (WebSocket), or jobwire-sse (SSE streams).
// Counts the producer's events by the `"message":"@<µs>"` marker each carries and records
// publish→receive latency of every one on every subscriber (µs since the epoch on both sides).
// IPC in: feedback {on}, mark {name: start|end}, stop. Out: ready, min (slowest subscriber's count
// while feedback is on), marked {name, total, histogram?}.
import { performance } from 'node:perf_hooks'
import { setImmediate } from 'node:timers'
import WebSocket from 'ws'

const [kind, url, apiKey, countArg, jobsArg] = process.argv.slice(2)
const count = Number(countArg)
const jobs = jobsArg.split(',')
const MARKER = Buffer.from('"message":"@')
const BUCKET_US = 20
const BUCKETS = 500_000
const slice = new Uint32Array(BUCKETS + 1)
const timeOrigin = performance.timeOrigin
let measuring = false
let total = 0
let ready = 0
const subscribers = []

function countMarkers(sub, data) {
  const nowUs = (timeOrigin + performance.now()) * 1000
  let n = 0
  for (let i = data.indexOf(MARKER); i !== -1; i = data.indexOf(MARKER, i + 12)) {
    let sentUs = 0
    for (let j = i + 12; ; j++) {
      const c = data[j]
      if (c < 48 || c > 57) break
      sentUs = sentUs * 10 + (c - 48)
    }
    if (measuring) {
      const bucket = Math.floor((nowUs - sentUs) / BUCKET_US)
      slice[bucket < 0 ? 0 : bucket > BUCKETS ? BUCKETS : bucket]++
    }
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

const open = kind === 'jobwire-sse' ? openSse : openWs
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
      process.send({ type: 'marked', name: 'start', total })
    } else {
      measuring = false
      // Sparse histogram: [bucket, count] pairs.
      const histogram = []
      for (let b = 0; b <= BUCKETS; b++) if (slice[b] !== 0) histogram.push([b, slice[b]])
      process.send({ type: 'marked', name: 'end', total, histogram, bucketUs: BUCKET_US })
    }
  }
  if (message.type === 'stop') process.exit(0)
})
