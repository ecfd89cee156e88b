// A server under test for the WebSocket fan-out bench, as a child of bench/ws/run.mjs (IPC).
// argv: kind apiKey, kind one of:
//   jobwire      Jobwire (dist build, memory store): POST /v1/jobs/:id/events, WebSocket /v1/ws
//   bare         a bare `ws` broadcast server: one frame per event per socket (no batching)
//   bare-corked  the same, each socket corked per tick: the limit a WebSocket server can reach here
//   socketio     Socket.IO 4 rooms (websocket transport), one emit per event to the job's room
// The bare and Socket.IO servers take POST /publish/:job {events} and frame each event as Jobwire's
// WebSocket does ({"type":"event","event":{jobId, seq, type, at, data}}), encoded once per event.
// IPC out: {type:'ready', url}; in: {type:'stats', gc?} → {type:'stats', cpu, rss, heap}; {type:'stop'}.
import { createServer } from 'node:http'
import { setImmediate } from 'node:timers'
import { startJobwire } from '../lib/jobwire.mjs'

const [kind, apiKey] = process.argv.slice(2)
let close = async () => {}
let url

if (kind === 'jobwire') {
  const server = await startJobwire(apiKey)
  url = server.url
  close = () => server.close()
} else {
  const rooms = new Map() // job → Set of sockets (ws) / room name (socket.io)
  const seqs = new Map()
  let broadcast
  const publish = (job, events) => {
    const at = new Date().toISOString()
    let seq = seqs.get(job) ?? 1
    const frames = events.map(({ type, ...data }) => `{"type":"event","event":${JSON.stringify({ jobId: job, seq: ++seq, type, at, data })}}`)
    seqs.set(job, seq)
    broadcast(job, frames)
    return seq
  }
  // POST /publish/:job {events} — one job; POST /publish {writes: [{jobId, events}]} — many (as Jobwire's POST /v1/events).
  const http = createServer((req, res) => {
    const match = /^\/publish(?:\/([^/]+))?$/.exec(req.url ?? '')
    if (req.method !== 'POST' || match === null) return res.writeHead(404).end()
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (d) => (body += d))
    req.on('end', () => {
      const parsed = JSON.parse(body)
      const answer = match[1] === undefined ? { results: parsed.writes.map((w) => ({ seq: publish(w.jobId, w.events) })) } : { seq: publish(match[1], parsed.events) }
      const out = JSON.stringify(answer)
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) }).end(out)
    })
  })
  http.keepAliveTimeout = 60_000
  if (kind === 'socketio') {
    const { Server } = await import('socket.io')
    const io = new Server(http, { transports: ['websocket'], serveClient: false, perMessageDeflate: false })
    io.on('connection', (socket) => socket.on('join', (job) => socket.join(job)))
    broadcast = (job, frames) => {
      for (const frame of frames) io.to(job).emit('m', frame)
    }
    close = () => new Promise((resolve) => io.close(() => resolve()))
  } else {
    const { WebSocketServer } = await import('ws')
    const wss = new WebSocketServer({ server: http, perMessageDeflate: false })
    wss.on('connection', (socket) => {
      socket.on('message', (data) => {
        const { jobId } = JSON.parse(String(data))
        let room = rooms.get(jobId)
        if (room === undefined) rooms.set(jobId, (room = new Set()))
        room.add(socket)
        socket.on('close', () => room.delete(socket))
      })
    })
    if (kind === 'bare') {
      broadcast = (job, frames) => {
        const buffers = frames.map((frame) => Buffer.from(frame))
        for (const socket of rooms.get(job) ?? []) for (const buffer of buffers) socket.send(buffer)
      }
    } else {
      // Corked: everything a socket gets in one tick leaves in one write.
      const pending = new Map()
      let scheduled = false
      const flush = () => {
        scheduled = false
        for (const [socket, buffers] of pending) {
          socket._socket.cork()
          for (const buffer of buffers) socket.send(buffer)
          socket._socket.uncork()
        }
        pending.clear()
      }
      broadcast = (job, frames) => {
        const buffers = frames.map((frame) => Buffer.from(frame))
        for (const socket of rooms.get(job) ?? []) {
          const list = pending.get(socket)
          if (list === undefined) pending.set(socket, [...buffers])
          else list.push(...buffers)
        }
        if (!scheduled) {
          scheduled = true
          setImmediate(flush)
        }
      }
    }
    close = () => new Promise((resolve) => wss.close(() => resolve()))
  }
  await new Promise((resolve) => http.listen(0, '127.0.0.1', resolve))
  url = `http://127.0.0.1:${http.address().port}`
  const closeWs = close
  close = async () => {
    await closeWs()
    http.closeAllConnections()
    await new Promise((resolve) => http.close(resolve))
  }
}

process.send({ type: 'ready', url })
process.on('message', (message) => {
  if (message.type === 'stats') {
    if (message.gc === true && typeof globalThis.gc === 'function') {
      globalThis.gc()
      globalThis.gc()
    }
    const memory = process.memoryUsage()
    process.send({ type: 'stats', cpu: process.cpuUsage(), rss: memory.rss, heap: memory.heapUsed + memory.external + memory.arrayBuffers })
  }
  if (message.type === 'stop') close().then(() => process.exit(0), () => process.exit(1))
})
