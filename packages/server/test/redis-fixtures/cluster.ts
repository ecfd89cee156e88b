/**
 * Real `jobwire serve --redis` processes for the scale-out tests, and what they share: nodes that
 * die and are replaced, watchers that follow a job over SSE or WebSocket and move to another node
 * when theirs goes away, the delivery checker with its one summary line, and a private
 * `redis-server` a test may restart or stop without disturbing the shared one.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'vitest'
import WebSocket from 'ws'
import { Redis } from 'ioredis'
import { decodeWsFrame, isTerminalEvent, type JobEvent, type PollResponse } from '@jobwire/protocol'
import { createJsonClient, freePort, openSse, sleep, spawnServer, type JsonClient, type SpawnedServer } from '../fixtures.js'

const clusterApiKey = 'redis-processes-test-key-0123456789'
const clusterTokenSecret = 'redis-processes-token-secret-0123456789abcdef'
export const clusterAuth = { authorization: `Bearer ${clusterApiKey}` }

export interface Node {
  server: SpawnedServer
  client: JsonClient
  url: string
  /** Set before the node is stopped: nobody sends it anything from then on. */
  dead: boolean
}

export interface NodeOptions {
  redisUrl: string
  prefix: string
  /** Extra `serve` flags. */
  args?: string[]
  env?: Record<string, string>
}

/** Starts one node and waits, as a load balancer would, until its /readyz says it reaches Redis. */
export async function startNode(options: NodeOptions): Promise<Node> {
  const server = await spawnServer(
    ['--redis', options.redisUrl, '--redis-prefix', options.prefix, '--port', '0', '--memory', '--heartbeat', '500', ...(options.args ?? [])],
    { JOBWIRE_API_KEY: clusterApiKey, JOBWIRE_TOKEN_SECRET: clusterTokenSecret, JOBWIRE_STREAMS_PER_IP: '100000', ...options.env },
  )
  const client = createJsonClient(server.url, clusterApiKey)
  const node: Node = { server, client, url: server.url, dead: false }
  for (let tries = 0; ; tries++) {
    const ready = await client.call('GET', '/readyz').catch(() => ({ status: 0 }))
    if (ready.status === 200) return node
    if (tries > 400) {
      await stopNode(node, 'SIGKILL')
      throw new Error(`${server.url} never became ready:\n${server.stderr}`)
    }
    await sleep(50)
  }
}

export async function startNodes(count: number, options: NodeOptions): Promise<Node[]> {
  return Promise.all(Array.from({ length: count }, () => startNode(options)))
}

/** Marks the node dead first (traffic moves away), then signals it and waits for the exit. */
export async function stopNode(node: Node, signal: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  node.dead = true
  const exit = await node.server.kill(signal)
  await node.client.close().catch(() => undefined)
  return exit
}

/** The first live node from `start` on (nodes die and are replaced under the callers). */
function liveNode(nodes: readonly Node[], start: number): { node: Node; index: number } {
  for (let i = 0; i < nodes.length * 50; i++) {
    const index = (start + i) % nodes.length
    const node = nodes[index] as Node
    if (!node.dead) return { node, index }
  }
  throw new Error('no live node')
}

/** What one watcher saw, in order. */
type Seen =
  | { kind: 'event'; seq: number }
  /** `text`: the snapshot's streamed text; `textBefore`: what the watcher had put together until then. */
  | { kind: 'snapshot'; seq: number; reset: boolean; text: string; textBefore: string }
  | { kind: 'error'; code: string }

export interface Watcher {
  transport: 'sse' | 'ws'
  jobId: string
  node: number
  seen: Seen[]
  /** Text of the chunks received, in order, reset by each snapshot. */
  text: string
  reconnects: number
  /** The job is gone and the watcher was told so (job_not_found): an explicit end, not a gap. */
  gone: boolean
  /** Problems the checker did not expect (an HTTP status other than 404/503, giving up). */
  problems: string[]
  done: Promise<void>
}

const maxAttempts = 200

function newWatcher(transport: 'sse' | 'ws', jobId: string, first: number): Watcher {
  return { transport, jobId, node: first, seen: [], text: '', reconnects: 0, gone: false, problems: [], done: Promise.resolve() }
}

/** The seq to resume from: the last event or snapshot seen, or 0 (everything) before any. */
function position(watcher: Watcher): number {
  for (let i = watcher.seen.length - 1; i >= 0; i--) {
    const seen = watcher.seen[i] as Seen
    if (seen.kind !== 'error') return seen.seq
  }
  return 0
}

function onEvent(watcher: Watcher, event: JobEvent): boolean {
  watcher.seen.push({ kind: 'event', seq: event.seq })
  if (event.type === 'chunk') watcher.text += (event.data as { text: string }).text
  return isTerminalEvent(event.type)
}

/** One SSE watcher following its job to the end, resuming with Last-Event-ID on another live node when its node goes away. */
export function followSse(nodes: readonly Node[], jobId: string, first: number): Watcher {
  const watcher = newWatcher('sse', jobId, first)
  watcher.done = (async () => {
    for (let attempt = 0; attempt < maxAttempts; attempt++) {
      const { node, index } = liveNode(nodes, watcher.node)
      watcher.node = index
      const after = position(watcher)
      try {
        const connection = await openSse(`${node.url}/v1/jobs/${jobId}/stream${after === 0 ? '?after=0' : ''}`, {
          headers: { ...clusterAuth, ...(after === 0 ? {} : { 'last-event-id': String(after) }) },
        })
        if (connection.status === 404) {
          watcher.seen.push({ kind: 'error', code: 'job_not_found' })
          watcher.gone = true
          return
        }
        if (connection.status === 200) {
          for await (const message of connection.messages()) {
            if (message.type === 'event') {
              if (onEvent(watcher, message.event)) {
                connection.close()
                return
              }
            } else if (message.type === 'snapshot') {
              watcher.seen.push({ kind: 'snapshot', seq: message.job.seq, reset: message.reset, text: message.job.text, textBefore: watcher.text })
              watcher.text = message.job.text
            } else if (message.type === 'error') {
              watcher.seen.push({ kind: 'error', code: message.error.code })
              if (message.error.code === 'job_not_found') {
                watcher.gone = true
                return
              }
            }
          }
        } else if (connection.status !== 503) {
          watcher.problems.push(`HTTP ${connection.status}: ${connection.body}`)
          return
        }
      } catch {
        // The node went away under us: resume elsewhere.
      }
      watcher.reconnects++
      watcher.node = index + 1
      await sleep(20 + Math.min(attempt, 10) * 10)
    }
    watcher.problems.push('gave up reconnecting')
  })()
  return watcher
}

/** One WebSocket watcher (its own socket), resubscribing with `after` on another live node when its socket closes. */
export function followWs(nodes: readonly Node[], jobId: string, first: number): Watcher {
  const watcher = newWatcher('ws', jobId, first)
  watcher.done = (async () => {
    for (let attempt = 0; attempt < maxAttempts; attempt++) {
      const { node, index } = liveNode(nodes, watcher.node)
      watcher.node = index
      const outcome = await new Promise<'finished' | 'retry'>((resolve) => {
        const socket = new WebSocket(`${node.url.replace(/^http/, 'ws')}/v1/ws`, { headers: clusterAuth })
        let settled = false
        const settle = (result: 'finished' | 'retry'): void => {
          if (settled) return
          settled = true
          socket.terminate()
          resolve(result)
        }
        socket.on('open', () => socket.send(JSON.stringify({ type: 'subscribe', jobId, after: position(watcher) })))
        socket.on('message', (data: Buffer) => {
          for (const message of decodeWsFrame(data.toString('utf8'))) {
            if (settled) return
            switch (message.type) {
              case 'event':
                if (onEvent(watcher, message.event)) settle('finished')
                break
              case 'snapshot':
                watcher.seen.push({ kind: 'snapshot', seq: message.job.seq, reset: message.reset, text: message.job.text, textBefore: watcher.text })
                watcher.text = message.job.text
                break
              case 'coalesced':
                // Only chunks are written in these tests: nothing may be coalesced away.
                watcher.problems.push(`coalesced run from ${message.from}`)
                break
              case 'error':
                watcher.seen.push({ kind: 'error', code: message.error.code })
                if (message.error.code === 'job_not_found') {
                  watcher.gone = true
                  settle('finished')
                } else if (message.jobId !== undefined) {
                  settle('retry') // this job's stream ended (unavailable, say): resubscribe
                }
                break
              default:
                break
            }
          }
        })
        socket.on('error', () => settle('retry'))
        socket.on('close', () => settle('retry'))
      })
      if (outcome === 'finished') return
      watcher.reconnects++
      watcher.node = index + 1
      await sleep(20 + Math.min(attempt, 10) * 10)
    }
    watcher.problems.push('gave up reconnecting')
  })()
  return watcher
}

export interface DeliveryReport {
  lost: number
  duplicated: number
  reordered: number
  delivered: number
  resets: number
  gone: number
  moved: number
  line: string
}

/**
 * The checker. Per watcher, against its job's final seq (null: the job is gone): every seq once,
 * in order; a gap counts as lost unless a snapshot bridged it (an explicit reset), or the watcher
 * was told the job is gone. Prints and returns one summary line.
 */
export function checkDeliveries(label: string, watchers: readonly Watcher[], finalSeq: ReadonlyMap<string, number | null>): DeliveryReport {
  let lost = 0
  let duplicated = 0
  let reordered = 0
  let delivered = 0
  let resets = 0
  for (const watcher of watchers) {
    const seen = new Set<number>()
    let next = 1
    let max = 0
    for (const item of watcher.seen) {
      if (item.kind === 'snapshot') {
        if (item.reset) resets++
        next = Math.max(next, item.seq + 1)
        max = Math.max(max, item.seq)
      } else if (item.kind === 'event') {
        delivered++
        if (seen.has(item.seq)) duplicated++
        else if (item.seq < max) reordered++
        else if (item.seq > next) lost += item.seq - next
        seen.add(item.seq)
        max = Math.max(max, item.seq)
        next = Math.max(next, item.seq + 1)
      }
    }
    const final = finalSeq.get(watcher.jobId)
    if (!watcher.gone && final !== null && final !== undefined && next <= final) lost += final - next + 1
  }
  const gone = watchers.filter((w) => w.gone).length
  const moved = watchers.filter((w) => w.reconnects > 0).length
  const sse = watchers.filter((w) => w.transport === 'sse').length
  const line = `${label}: subscribers=${watchers.length} (sse=${sse} ws=${watchers.length - sse}) moved=${moved} delivered=${delivered} resets=${resets} gone=${gone} lost=${lost} duplicated=${duplicated} reordered=${reordered}`
  console.log(line)
  return { lost, duplicated, reordered, delivered, resets, gone, moved, line }
}

/** Posts through the first live node from `start`, moving on while nodes are down or answer 5xx. */
export async function postAnywhere(nodes: readonly Node[], start: number, path: string, body: unknown): Promise<{ status: number; body: unknown }> {
  let last = 'no answer'
  for (let attempt = 0; attempt < 100; attempt++) {
    const { node } = liveNode(nodes, start + attempt)
    try {
      const answer = await node.client.call('POST', path, body)
      if (answer.status < 500) return answer
      last = `HTTP ${answer.status}`
    } catch (error) {
      last = (error as Error).message // connection refused or reset: the next node
    }
    await sleep(20)
  }
  throw new Error(`no node accepted POST ${path} (${last})`)
}

export async function readWholeLog(client: JsonClient, jobId: string): Promise<JobEvent[] | null> {
  const events: JobEvent[] = []
  for (let after = 0; ; ) {
    const page = await client.call<PollResponse>('GET', `/v1/jobs/${jobId}/events?after=${after}`)
    if (page.status === 404) return null
    if (page.status !== 200) throw new Error(`reading the log of ${jobId}: HTTP ${page.status} ${JSON.stringify(page.body)}`)
    events.push(...page.body.events)
    if (!page.body.more) return events
    after = page.body.next
  }
}

export interface PrivateRedis {
  url: string
  port: number
  /** A client for the test itself. */
  admin: Redis
  /** Starts redis-server (again) on the same port and folder; resolves once it answers PING. */
  start(): Promise<void>
  /** Sends a signal (SIGKILL: a crash; SIGSTOP/SIGCONT: frozen and back); waits for the exit unless it was SIGSTOP/SIGCONT. */
  signal(signal: NodeJS.Signals): Promise<void>
  /** SHUTDOWN SAVE: writes everything to the dump the next start() loads, and exits. */
  shutdownSaving(): Promise<void>
  close(): Promise<void>
}

const redisServerPath = process.env.REDIS_SERVER ?? '/usr/bin/redis-server'

/**
 * True when a `redis-server` binary can be started for a private server. Otherwise, as
 * redisReachable does: a skipped suite and a console line outside CI, a failing test in CI.
 */
export function redisServerAvailable(suite: string): boolean {
  if (existsSync(redisServerPath)) return true
  if (process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== 'false') {
    describe(suite, () => {
      it('needs redis-server', () => {
        throw new Error(`${redisServerPath} does not exist (set REDIS_SERVER); CI must provide it`)
      })
    })
  } else {
    console.warn(`\n  SKIPPED ${suite}: no ${redisServerPath} to start a private Redis (install redis-server or set REDIS_SERVER).\n`)
    describe.skip(`${suite} (no redis-server)`, () => {
      it('needs redis-server', () => undefined)
    })
  }
  return false
}

/**
 * A redis-server of the test's own on a free port, without persistence (`--save '' --appendonly
 * no`; a dump exists only if the test asks for SAVE or SHUTDOWN SAVE, and is then loaded on
 * restart from the same folder).
 */
export async function startPrivateRedis(): Promise<PrivateRedis> {
  const dir = await mkdtemp(join(tmpdir(), 'jobwire-redis-'))
  let port = 0
  let child: ChildProcess | null = null
  let exited: Promise<void> = Promise.resolve()
  const start = async (): Promise<void> => {
    const proc = spawn(redisServerPath, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--maxmemory-policy', 'noeviction'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let output = ''
    proc.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()))
    proc.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()))
    exited = new Promise((resolve) => proc.once('exit', () => resolve()))
    child = proc
    for (let i = 0; i < 200 && proc.exitCode === null; i++) {
      const probe = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
      probe.on('error', () => undefined)
      try {
        await probe.connect()
        // A server still loading its dump answers LOADING: wait until it really serves.
        if ((await probe.ping()) === 'PONG') return
      } catch {
        await sleep(50)
      } finally {
        probe.disconnect()
      }
    }
    proc.kill('SIGKILL')
    await exited
    throw new Error(`redis-server did not start on port ${port}:\n${output}`)
  }
  for (let tries = 0; ; tries++) {
    port = await freePort()
    try {
      await start()
      break
    } catch (error) {
      if (tries >= 3) throw error // another process took the port meanwhile: try another
    }
  }
  const admin = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 1, retryStrategy: () => 100 })
  admin.on('error', () => undefined)
  const url = `redis://127.0.0.1:${port}`
  return {
    url,
    port,
    admin,
    start,
    async signal(signal) {
      const proc = child
      if (proc === null || proc.exitCode !== null || proc.signalCode !== null) return
      proc.kill(signal)
      if (signal !== 'SIGSTOP' && signal !== 'SIGCONT') await exited
    },
    async shutdownSaving() {
      await admin.call('SHUTDOWN', 'SAVE').catch(() => undefined) // the connection closes instead of answering
      await exited
    },
    async close() {
      admin.disconnect()
      const proc = child
      if (proc !== null && proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGCONT')
        proc.kill('SIGKILL')
        await exited
      }
      await rm(dir, { recursive: true, force: true })
    },
  }
}
