// Many watchers joining one job with a large state at once: `node bench/late-join.mjs` (after
// `npm run build`; Redis at REDIS_URL for the Redis row). Part of `npm run bench`.
//
// A popular job — a live transcript, an agent's long log — is opened by many people at once (a page
// shared, a node restarted and its watchers back): each new watcher gets a snapshot of the whole
// state, text included. On each store (BENCH_JOIN_STORES: memory,sqlite,redis), a server in a
// process of its own; one job with BENCH_JOIN_CHARS (1,500,000) characters of text and a job with
// none; then BENCH_JOIN_WATCHERS (500) watchers open a stream on it at once, over SSE and over
// WebSocket, each on its own connection; the bench waits until every one has its snapshot. The
// table shows the server's CPU per watcher for the long job and the empty one (the difference is
// what the state costs per watcher) and the time until the last snapshot arrived.
// BENCH_SERVER_DIST points at another build's packages/server/dist/server.js (A/B runs).
import { randomBytes } from 'node:crypto'
import http from 'node:http'
import { loadavg } from 'node:os'
import { WebSocket } from 'ws'
import { serverCpuUs, startTarget } from './lib/target.mjs'

const num = (name, fallback) => (process.env[name] ? Number(process.env[name]) : fallback)
const STORES = (process.env.BENCH_JOIN_STORES ?? 'memory,sqlite,redis').split(',').filter(Boolean)
const WATCHERS = num('BENCH_JOIN_WATCHERS', 500)
const CHARS = num('BENCH_JOIN_CHARS', 1_500_000)
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const apiKey = `jw_admin_${randomBytes(16).toString('hex')}`

async function post(url, path, body) {
  const response = await fetch(url + path, { method: 'POST', headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' }, body: JSON.stringify(body) })
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`)
  return response.json()
}

/** A job streamed `chars` characters of text, in chunk events of 50,000 (15 a request). */
async function jobWithText(url, chars) {
  const job = await post(url, '/v1/jobs', { type: 'late-join', dispatch: false })
  const chunk = 'and the speaker went on about streaming, '.repeat(1_300).slice(0, 50_000)
  for (let written = 0; written < chars; written += 15 * chunk.length) {
    const count = Math.min(15, Math.ceil((chars - written) / chunk.length))
    await post(url, `/v1/jobs/${job.id}/events`, { events: Array.from({ length: count }, () => ({ type: 'chunk', text: chunk })) })
  }
  if (chars === 0) await post(url, `/v1/jobs/${job.id}/events`, { type: 'progress', percent: 1 })
  return job.id
}

/** Opens `count` SSE streams (or WebSockets) on `jobId` at once; resolves when each has its whole snapshot, then closes them. */
function joinAll(url, jobId, count, transport) {
  return new Promise((resolve, reject) => {
    const closers = []
    let done = 0
    const snapshotIn = () => {
      if (++done < count) return
      for (const close of closers) close()
      resolve()
    }
    for (let i = 0; i < count; i++) {
      if (transport === 'sse') {
        // The stream opens with `retry: N` and a blank line; the snapshot frame is the next one to end in a blank line.
        let blankLines = 0
        let tail = ''
        const request = http.get(`${url}/v1/jobs/${jobId}/stream`, { headers: { authorization: `Bearer ${apiKey}` }, agent: false }, (response) => {
          response.setEncoding('utf8')
          if (response.statusCode !== 200) {
            let body = ''
            response.on('data', (text) => (body += text))
            response.on('end', () => reject(new Error(`an SSE stream was refused: ${response.statusCode} ${body}`)))
            return
          }
          response.on('data', (text) => {
            if (blankLines >= 2) return
            const scanned = tail + text
            for (let at = scanned.indexOf('\n\n'); at >= 0 && blankLines < 2; at = scanned.indexOf('\n\n', at + 2)) blankLines++
            tail = scanned.slice(-1)
            if (blankLines >= 2) snapshotIn()
          })
        })
        request.on('error', reject)
        request.on('close', () => blankLines < 2 && setImmediate(() => reject(new Error('an SSE stream closed before its snapshot'))))
        closers.push(() => request.destroy())
      } else {
        const socket = new WebSocket(`${url.replace('http', 'ws')}/v1/ws`, { headers: { authorization: `Bearer ${apiKey}` } })
        socket.on('open', () => socket.send(JSON.stringify({ type: 'subscribe', jobId })))
        let seen = false
        socket.on('message', (data) => {
          // A frame holds one message per line; the snapshot comes after `subscribed`, maybe in the same frame.
          if (!seen && String(data).split('\n').some((line) => line.startsWith('{"type":"snapshot"'))) {
            seen = true
            snapshotIn()
          }
        })
        socket.on('error', reject)
        socket.on('close', (code) => !seen && reject(new Error(`a WebSocket closed (${code}) before its snapshot`)))
        closers.push(() => socket.terminate())
      }
    }
  })
}

async function measure(target, jobId, transport) {
  const before = await serverCpuUs(target.server)
  const started = performance.now()
  await joinAll(target.url, jobId, WATCHERS, transport)
  const ms = performance.now() - started
  // Closing the streams costs the server too; let it finish before the next row.
  await new Promise((resolve) => setTimeout(resolve, 300))
  return { cpuUsPerWatcher: ((await serverCpuUs(target.server)) - before) / WATCHERS, ms }
}

console.log(`\n### ${WATCHERS} watchers joining one job at once: its text ${CHARS.toLocaleString('en-US')} characters, against a job with none\n`)
console.log('| store | transport | load avg | server CPU per watcher, long / empty µs | the state\'s share µs | all snapshots in, long / empty ms |')
console.log('|---|---|---:|---:|---:|---:|')
for (const store of STORES) {
  const target = await startTarget(store, apiKey, REDIS_URL)
  try {
    const long = await jobWithText(target.url, CHARS)
    const empty = await jobWithText(target.url, 0)
    for (const transport of ['sse', 'ws']) {
      // One join of each first (warms the code paths), then the measured ones.
      await joinAll(target.url, empty, 20, transport)
      const a = await measure(target, long, transport)
      const b = await measure(target, empty, transport)
      const load = loadavg()[0].toFixed(1)
      console.log(`| ${store} | ${transport === 'sse' ? 'SSE' : 'WebSocket'} | ${load} | ${Math.round(a.cpuUsPerWatcher)} / ${Math.round(b.cpuUsPerWatcher)} | ${Math.round(a.cpuUsPerWatcher - b.cpuUsPerWatcher)} | ${Math.round(a.ms)} / ${Math.round(b.ms)} |`)
    }
  } finally {
    await target.close()
  }
}
