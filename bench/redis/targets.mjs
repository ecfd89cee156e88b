// One node of a fan-out-through-Redis target, as a child of bench/redis/run.mjs (IPC).
// argv: kind apiKey redisUrl prefix, kind one of:
//   jobwire   Jobwire (dist build) on the Redis store: POST /v1/jobs/:id/events, WebSocket /v1/ws
//   socketio  Socket.IO 4 rooms (websocket transport) with @socket.io/redis-adapter on the same
//             Redis: POST /publish/:job {events} emits each event to the job's room on every node
// The Socket.IO node frames each event as Jobwire's WebSocket does ({"type":"event","event":{…}}),
// encoded once per event, as bench/ws/targets.mjs does.
// IPC out: {type:'ready', url}; in: {type:'stats'} → {type:'stats', cpu, loopP99Ms, loopMaxMs} (event-loop
// delay since the last stats); {type:'stop'}.
import { createServer } from 'node:http'
import { serveStats } from '../lib/children.mjs'
import { startJobwire } from '../lib/jobwire.mjs'

const [kind, apiKey, redisUrl, prefix] = process.argv.slice(2)
let close = async () => {}
let url

if (kind === 'jobwire') {
  const server = await startJobwire(apiKey, { redis: redisUrl, redisPrefix: prefix })
  url = server.url
  close = () => server.close()
} else if (kind === 'socketio') {
  const { Server } = await import('socket.io')
  const { createAdapter } = await import('@socket.io/redis-adapter')
  const { Redis } = await import('ioredis')
  const pub = new Redis(redisUrl)
  const sub = pub.duplicate()
  const seqs = new Map()
  const http = createServer((req, res) => {
    const match = /^\/publish\/([^/]+)$/.exec(req.url ?? '')
    if (req.method !== 'POST' || match === null) return res.writeHead(404).end()
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (d) => (body += d))
    req.on('end', () => {
      const job = match[1]
      const { events } = JSON.parse(body)
      const at = new Date().toISOString()
      let seq = seqs.get(job) ?? 1
      for (const { type, ...data } of events) {
        io.to(job).emit('m', `{"type":"event","event":${JSON.stringify({ jobId: job, seq: ++seq, type, at, data })}}`)
      }
      seqs.set(job, seq)
      const out = JSON.stringify({ seq })
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) }).end(out)
    })
  })
  http.keepAliveTimeout = 60_000
  const io = new Server(http, { transports: ['websocket'], serveClient: false, perMessageDeflate: false, adapter: createAdapter(pub, sub, { key: prefix }) })
  io.on('connection', (socket) => socket.on('join', (job) => socket.join(job)))
  await new Promise((resolve) => http.listen(0, '127.0.0.1', resolve))
  url = `http://127.0.0.1:${http.address().port}`
  close = async () => {
    await new Promise((resolve) => io.close(() => resolve()))
    http.closeAllConnections()
    pub.disconnect()
    sub.disconnect()
  }
} else {
  throw new Error(`unknown target ${kind}`)
}

process.send({ type: 'ready', url })
await serveStats(() => close())
