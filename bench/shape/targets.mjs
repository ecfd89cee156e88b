// A server under test for the users'-shape bench, as a child of bench/shape/run.mjs (IPC).
// argv: kind apiKey redisUrl prefix dataDir, kind one of:
//   jobwire-memory | jobwire-sqlite | jobwire-sqlite-normal | jobwire-redis
//             Jobwire (dist build) on that store (sqlite-normal: --sqlite-sync normal, no fsync): POST /v1/jobs/:id/events, SSE
//             /v1/jobs/:id/stream, WebSocket /v1/ws
//   relay     the limit: a bare node:http relay fed the same POST /v1/jobs/:id/events — no auth,
//             no validation, no store; each event encoded once per transport, everything a
//             subscriber gets in one tick written at once (SSE: one write; WebSocket: corked)
//   socketio  Socket.IO 4 rooms (websocket transport), fed per job by POST /publish/:job
//   socketio-redis
//             Socket.IO 4 with @socket.io/redis-adapter; producers emit to the job's room through
//             @socket.io/redis-emitter on the same Redis (how an app's workers feed Socket.IO nodes)
// Frames carry the event as Jobwire's WebSocket does ({"type":"event","event":{jobId, seq, type, at, data}}).
// IPC out: {type:'ready', url}; in: {type:'stats'} → {type:'stats', cpu, loopMaxMs}; {type:'stop'}.
import { createServer } from 'node:http'
import { setImmediate } from 'node:timers'
import { serveStats } from '../lib/children.mjs'
import { startJobwire } from '../lib/jobwire.mjs'

const [kind, apiKey, redisUrl, prefix, dataDir] = process.argv.slice(2)
let close = async () => {}
let url

/** One JSON body from a request. */
function readJson(req, then) {
  let body = ''
  req.setEncoding('utf8')
  req.on('data', (d) => (body += d))
  req.on('end', () => then(JSON.parse(body)))
}

function answer(res, value) {
  const out = JSON.stringify(value)
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) }).end(out)
}

async function listen(http) {
  http.keepAliveTimeout = 60_000
  await new Promise((resolve) => http.listen(0, '127.0.0.1', resolve))
  return `http://127.0.0.1:${http.address().port}`
}

if (kind.startsWith('jobwire-')) {
  const store = kind.slice('jobwire-'.length)
  const config =
    store === 'redis'
      ? { redis: redisUrl, redisPrefix: prefix }
      : store === 'sqlite'
        ? { memory: false, dataDir }
        : store === 'sqlite-normal'
          ? { memory: false, dataDir, sqliteSync: 'normal' }
          : {}
  const server = await startJobwire(apiKey, { ...config, streamsPerUser: 100_000, wsMessageRate: 1_000_000 })
  url = server.url
  close = () => server.close()
} else if (kind === 'relay') {
  const { WebSocketServer } = await import('ws')
  const rooms = new Map() // job → { seq, sse: Set<res>, ws: Set<socket> }
  const room = (job) => {
    let r = rooms.get(job)
    if (r === undefined) rooms.set(job, (r = { seq: 0, sse: new Set(), ws: new Set() }))
    return r
  }
  const pending = new Map() // job → { sse: string, frames: Buffer[] }
  let scheduled = false
  const flush = () => {
    scheduled = false
    for (const [job, out] of pending) {
      const r = rooms.get(job)
      const text = Buffer.from(out.sse)
      for (const res of r.sse) res.write(text)
      for (const socket of r.ws) {
        socket._socket.cork()
        for (const frame of out.frames) socket.send(frame)
        socket._socket.uncork()
      }
    }
    pending.clear()
  }
  const http = createServer((req, res) => {
    const match = /^\/v1\/jobs\/([^/]+)\/(events|stream)$/.exec(req.url ?? '')
    if (match === null) return res.writeHead(404).end()
    const [, job, what] = match
    const r = room(job)
    if (what === 'stream') {
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' })
      res.write(': ok\n\n')
      r.sse.add(res)
      res.on('close', () => r.sse.delete(res))
      return
    }
    readJson(req, ({ events }) => {
      const at = new Date().toISOString()
      let out = pending.get(job)
      if (out === undefined) pending.set(job, (out = { sse: '', frames: [] }))
      for (const { type, ...data } of events) {
        const json = JSON.stringify({ jobId: job, seq: ++r.seq, type, at, data })
        out.sse += `id: ${r.seq}\nevent: ${type}\ndata: ${json}\n\n`
        out.frames.push(Buffer.from(`{"type":"event","event":${json}}`))
      }
      if (!scheduled) {
        scheduled = true
        setImmediate(flush)
      }
      answer(res, { seq: r.seq })
    })
  })
  const wss = new WebSocketServer({ server: http, perMessageDeflate: false })
  wss.on('connection', (socket) => {
    socket.on('message', (data) => {
      const r = room(JSON.parse(String(data)).jobId)
      r.ws.add(socket)
      socket.on('close', () => r.ws.delete(socket))
    })
  })
  url = await listen(http)
  close = async () => {
    await new Promise((resolve) => wss.close(() => resolve()))
    http.closeAllConnections()
  }
} else if (kind === 'socketio' || kind === 'socketio-redis') {
  const { Server } = await import('socket.io')
  const seqs = new Map()
  const http = createServer((req, res) => {
    const match = /^\/publish\/([^/]+)$/.exec(req.url ?? '')
    if (req.method !== 'POST' || match === null) return res.writeHead(404).end()
    readJson(req, ({ events }) => {
      const job = match[1]
      const at = new Date().toISOString()
      let seq = seqs.get(job) ?? 0
      for (const { type, ...data } of events) io.to(job).emit('m', `{"type":"event","event":${JSON.stringify({ jobId: job, seq: ++seq, type, at, data })}}`)
      seqs.set(job, seq)
      answer(res, { seq })
    })
  })
  let redis = []
  let adapter
  if (kind === 'socketio-redis') {
    const { createAdapter } = await import('@socket.io/redis-adapter')
    const { Redis } = await import('ioredis')
    const pub = new Redis(redisUrl)
    redis = [pub, pub.duplicate()]
    adapter = createAdapter(redis[0], redis[1], { key: prefix })
  }
  const io = new Server(http, { transports: ['websocket'], serveClient: false, perMessageDeflate: false, ...(adapter ? { adapter } : {}) })
  io.on('connection', (socket) => socket.on('join', (job) => socket.join(job)))
  url = await listen(http)
  close = async () => {
    await new Promise((resolve) => io.close(() => resolve()))
    http.closeAllConnections()
    for (const client of redis) client.disconnect()
  }
} else {
  throw new Error(`unknown target ${kind}`)
}

process.send({ type: 'ready', url })
await serveStats(() => close())
