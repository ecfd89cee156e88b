// The baseline: a bare node:http SSE fan-out with no framework, no store and no validation.
// Each event is serialized once (same frame shape as Jobwire), a batch is written to every
// subscriber as one shared Buffer, and batches published within one tick coalesce into one write.
// It also answers POST /v1/jobs as the floor of the create bench. Run as a child of bench/run.mjs
// (IPC): it answers {type:'ready', url}.
import { randomBytes } from 'node:crypto'
import { createServer } from 'node:http'
import { setImmediate } from 'node:timers'

const jobId = `job_bare${'0'.repeat(18)}` // as long as a Jobwire job id
const subscribers = new Set()
let seq = 1 // seq 1 stands for `started`, like the Jobwire job the producer starts first
let pending = ''

function flush() {
  const chunk = Buffer.from(pending) // encoded once for every subscriber
  pending = ''
  for (const res of subscribers) res.write(chunk)
}

/** Calls `then` with the request's body, parsed. */
function readJson(req, then) {
  let body = ''
  req.setEncoding('utf8')
  req.on('data', (d) => (body += d))
  req.on('end', () => then(JSON.parse(body)))
}

function sendJson(res, status, value, headers = {}) {
  const out = JSON.stringify(value)
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(out), ...headers })
  res.end(out)
}

const server = createServer((req, res) => {
  if (req.method === 'GET' && req.url.startsWith('/stream')) {
    res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-cache' })
    res.write(`retry: 2000\n\nid: ${seq}\nevent: snapshot\ndata: {"seq":${seq}}\n\n`)
    subscribers.add(res)
    res.on('close', () => subscribers.delete(res))
    return
  }
  if (req.method === 'POST' && req.url === '/events') {
    readJson(req, ({ events }) => {
      const at = new Date().toISOString()
      const acks = []
      for (const { type, ...data } of events) {
        const event = { jobId, seq: ++seq, type, at, data }
        if (pending === '') setImmediate(flush)
        pending += `id: ${event.seq}\nevent: ${type}\ndata: ${JSON.stringify(event)}\n\n`
        acks.push({ seq: event.seq, type })
      }
      sendJson(res, 200, { events: acks, seq, status: 'running' })
    })
    return
  }
  // The create bench's floor (bench/run.mjs, BENCH_ONLY=create): the body read and parsed, a
  // job-shaped answer of about Jobwire's size, and nothing stored, checked or logged.
  if (req.method === 'POST' && req.url === '/v1/jobs') {
    readJson(req, ({ type, input = null }) => {
      const at = new Date().toISOString()
      const id = `job_${randomBytes(16).toString('base64url').slice(0, 22)}`
      const job = { id, type, owner: null, input, status: 'queued', progress: { stage: null, percent: null, message: null }, stages: [], items: [], text: '', checkpoint: null, result: null, error: null, attempt: 0, maxAttempts: 3, dispatch: true, worker: null, seq: 1, createdAt: at, updatedAt: at, metadata: {} }
      sendJson(res, 201, job, { location: `/v1/jobs/${id}` })
    })
    return
  }
  res.writeHead(404).end()
})

server.keepAliveTimeout = 60_000
server.listen(0, '127.0.0.1', () => {
  process.send({ type: 'ready', url: `http://127.0.0.1:${server.address().port}`, jobId })
})
process.on('message', (message) => {
  if (message.type === 'stats') process.send({ type: 'stats', cpu: process.cpuUsage(), subscribers: subscribers.size })
  if (message.type === 'stop') {
    for (const res of subscribers) res.end()
    server.closeAllConnections()
    server.close(() => process.exit(0))
  }
})
