// Heartbeat bursts: `node bench/heartbeats.mjs` (after `npm run build`). A Jobwire server (memory
// store; the dist build, or BENCH_SERVER_DIST for an A/B) with BENCH_HEARTBEAT_CONNECTIONS (2,000)
// idle streams open, over WebSocket and over SSE, and a heartbeat every BENCH_HEARTBEAT_MS (1,000).
// Every stream gets a heartbeat (a ping and/or a message) once per interval; the table reports how
// long the server's event loop stalled at most, and at p99, over BENCH_HEARTBEAT_ROUNDS (5)
// intervals: what an event published at that moment waits before anyone gets it.
import { randomBytes } from 'node:crypto'
import { request as httpRequest, Agent } from 'node:http'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Pool } from 'undici'
import WebSocket from 'ws'
import { ask, next, start, stop } from './lib/children.mjs'
import { postJson } from './lib/measure.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const env = (name, fallback) => (process.env[name] === undefined || process.env[name] === '' ? fallback : Number(process.env[name]))
const CONNECTIONS = env('BENCH_HEARTBEAT_CONNECTIONS', 2000)
const HEARTBEAT_MS = env('BENCH_HEARTBEAT_MS', 1000)
const ROUNDS = env('BENCH_HEARTBEAT_ROUNDS', 5)
const API_KEY = `bench-${randomBytes(16).toString('hex')}`
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function openWs(url, jobId) {
  const socket = new WebSocket(`${url.replace('http', 'ws')}/v1/ws?access_token=${API_KEY}`)
  await new Promise((resolve, reject) => {
    socket.once('error', reject)
    socket.on('message', (data) => {
      if (String(data).includes('"snapshot"')) resolve()
    })
    socket.once('open', () => socket.send(JSON.stringify({ type: 'subscribe', jobId })))
  })
  return () => socket.terminate()
}

async function openSse(url, jobId, agent) {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${url}/v1/jobs/${jobId}/stream`, { agent, headers: { authorization: `Bearer ${API_KEY}` } }, (res) => {
      res.on('data', () => {})
      resolve(() => req.destroy())
    })
    req.once('error', reject)
    req.end()
  })
}

const rows = []
for (const transport of ['ws', 'sse']) {
  process.env.BENCH_SERVER_CONFIG = JSON.stringify({ heartbeat: HEARTBEAT_MS, ...(process.env.BENCH_SERVER_CONFIG ? JSON.parse(process.env.BENCH_SERVER_CONFIG) : {}) })
  const server = start(join(here, 'shape/targets.mjs'), ['jobwire-memory', API_KEY, '', '', ''])
  const { url } = await next(server, 'ready')
  const pool = new Pool(url, { connections: 2 })
  const job = await postJson(pool, API_KEY, '/v1/jobs', { type: 'heartbeats', dispatch: false })
  const agent = new Agent({ keepAlive: true, maxSockets: Infinity })
  const closers = []
  for (let i = 0; i < CONNECTIONS; i += 100) {
    closers.push(...(await Promise.all(Array.from({ length: Math.min(100, CONNECTIONS - i) }, () => (transport === 'ws' ? openWs(url, job.id) : openSse(url, job.id, agent))))))
  }
  await sleep(HEARTBEAT_MS)
  await ask(server, { type: 'stats' }, 'stats')
  await sleep(HEARTBEAT_MS * ROUNDS)
  const stats = await ask(server, { type: 'stats' }, 'stats')
  rows.push({ transport, loopMaxMs: stats.loopMaxMs, loopP99Ms: stats.loopP99Ms })
  for (const close of closers) close()
  await pool.close()
  agent.destroy()
  await stop(server)
}
console.log(`\n### Heartbeat bursts: ${CONNECTIONS.toLocaleString('en-US')} idle streams, a heartbeat every ${HEARTBEAT_MS} ms, ${ROUNDS} intervals\n`)
console.log('| transport | event-loop stall, max ms | p99 ms |')
console.log('|---|---:|---:|')
for (const row of rows) console.log(`| ${row.transport === 'ws' ? 'WebSocket' : 'SSE'} | ${row.loopMaxMs.toFixed(1)} | ${row.loopP99Ms.toFixed(1)} |`)
process.exit(0)
