// Job-create latency client, a child of bench/run.mjs (IPC), so the load generator never shares an
// event loop with the server. Per {type:'slice', url, rate, seconds} it sends POST /v1/jobs at a
// steady rate, open loop (a request goes out on schedule whatever the earlier ones are doing: no
// coordinated omission), over one keep-alive undici Pool per server, and answers {type:'sliced'}
// with every latency (send → response body read) once all of the slice's requests are done.
// argv: apiKey.
import { performance } from 'node:perf_hooks'
import { Pool } from 'undici'

const [apiKey] = process.argv.slice(2)
const headers = { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' }
const body = JSON.stringify({ type: 'bench.create' })
const pools = new Map()
const pool = (url) => {
  let p = pools.get(url)
  if (p === undefined) pools.set(url, (p = new Pool(url, { connections: 16, pipelining: 1 })))
  return p
}

async function createOne(p, result) {
  const t0 = performance.now()
  try {
    const res = await p.request({ path: '/v1/jobs', method: 'POST', headers, body })
    await res.body.text()
    const ms = performance.now() - t0
    if (res.statusCode !== 201) throw new Error(`POST /v1/jobs answered ${res.statusCode}`)
    result.samples.push(ms)
  } catch (error) {
    result.errors++
    result.firstError ??= String(error?.message ?? error)
  }
}

function runSlice({ url, rate, seconds }) {
  const p = pool(url)
  const total = Math.round(rate * seconds)
  const result = { samples: [], errors: 0, firstError: null, maxLateMs: 0 }
  const inflight = []
  return new Promise((resolve) => {
    const start = performance.now()
    let next = 0
    const due = (i) => start + (i * 1000) / rate
    const tick = () => {
      const now = performance.now()
      while (next < total && due(next) <= now) {
        // How far behind schedule the client itself fell: a client problem, not the server's.
        result.maxLateMs = Math.max(result.maxLateMs, now - due(next))
        inflight.push(createOne(p, result))
        next++
      }
      if (next < total) setTimeout(tick, Math.max(0, due(next) - performance.now()))
      else Promise.all(inflight).then(() => resolve(result))
    }
    tick()
  })
}

process.on('message', async (message) => {
  if (message.type === 'slice') {
    const result = await runSlice(message)
    const cpu = process.cpuUsage()
    process.send({ type: 'sliced', ...result, cpuMs: (cpu.user + cpu.system) / 1000 })
  } else if (message.type === 'stop') {
    await Promise.all([...pools.values()].map((p) => p.close()))
    process.exit(0)
  }
})
process.send({ type: 'ready' })
