/**
 * Disposable fixtures for the server's tests: a real server on a free port, a real-socket SSE
 * reader, a JSON client, and real `jobwire` child processes. Every fixture has an explicit
 * teardown that releases its port, sockets, timers and temp directory.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Agent, request as undiciRequest } from 'undici'
import { createSseParser, decodeSseMessage, type StreamMessage } from '@jobwire/protocol'
import type { ConfigInput } from '../src/config.js'
import { startServer, type RunningServer } from '../src/server.js'
import { expectDocumentedAnswer } from './openapi-check.js'

export const testApiKey = 'test-admin-key-123456'

/** The `jobwire` executable; it imports `dist`, so `tsc -b` must have run. */
export const cliPath = fileURLToPath(new URL('../bin/jobwire.js', import.meta.url))

export async function makeTempDir(prefix = 'jobwire-test-'): Promise<{ path: string; remove(): Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix))
  return { path, remove: () => rm(path, { recursive: true, force: true }) }
}

export type Storage = 'memory' | 'sqlite'

export interface TestServer {
  url: string
  key: string
  server: RunningServer
  /** The SQLite data directory, or null in memory mode. */
  dataDir: string | null
  /** A JSON client for this server. */
  api: JsonClient
  /** Stops the server, closes the client's sockets and removes the temp directory. */
  close(): Promise<void>
}

/**
 * A real server on 127.0.0.1, port 0. `storage: 'sqlite'` puts the database in a fresh temp
 * directory (removed on close); anything else in `overrides` is passed as config.
 */
export async function startTestServer(overrides: ConfigInput & { storage?: Storage } = {}): Promise<TestServer> {
  const { storage = 'memory', ...config } = overrides
  const temp = storage === 'sqlite' && config.dataDir === undefined ? await makeTempDir() : null
  let server: RunningServer
  try {
    server = await startServer({
      logger: false,
      config: {
        apiKey: testApiKey,
        ...config,
        port: 0,
        host: '127.0.0.1',
        memory: storage === 'memory',
        ...(temp === null ? {} : { dataDir: temp.path }),
      },
    })
  } catch (error) {
    await temp?.remove()
    throw error
  }
  const api = createJsonClient(server.url, server.adminKey.key)
  let closing: Promise<void> | null = null
  return {
    url: server.url,
    key: server.adminKey.key,
    server,
    dataDir: temp?.path ?? (storage === 'sqlite' ? (config.dataDir ?? null) : null),
    api,
    close() {
      closing ??= (async () => {
        await api.close()
        await server.close()
        await temp?.remove()
      })()
      return closing
    },
  }
}

export interface JsonResponse<T = unknown> {
  status: number
  headers: IncomingHttpHeaders
  body: T
}

/** A JSON client over real sockets with its own connection pool (closed by `close()`). */
export interface JsonClient {
  call<T = unknown>(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<JsonResponse<T>>
  close(): Promise<void>
}

export function createJsonClient(url: string, key: string | null): JsonClient {
  const agent = new Agent({ connections: 16, keepAliveTimeout: 1_000 })
  return {
    async call<T>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
      const response = await undiciRequest(`${url}${path}`, {
        method: method as 'GET',
        dispatcher: agent,
        headers: {
          ...(key === null ? {} : { authorization: `Bearer ${key}` }),
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          ...headers,
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      })
      const text = await response.body.text()
      const answer = {
        status: response.statusCode,
        headers: response.headers as IncomingHttpHeaders,
        body: (text === '' ? null : JSON.parse(text)) as T,
      }
      expectDocumentedAnswer({ method, url: path, status: answer.status, contentType: answer.headers['content-type'] as string | undefined, body: answer.body })
      return answer
    },
    close: () => agent.destroy(),
  }
}

/** An open SSE response read off a real socket. */
export interface SseConnection {
  status: number
  headers: IncomingHttpHeaders
  /** The whole body when the answer was not an event stream (an error before the stream opened). */
  body: string
  /** Everything received so far, undecoded. */
  readonly raw: string
  /** Comment lines seen so far (`: heartbeat` → `heartbeat`). */
  readonly comments: readonly string[]
  /** The last `retry:` hint seen. */
  readonly retry: number | undefined
  /** The last `id:` seen, i.e. what a reconnecting client sends as Last-Event-ID. */
  readonly lastEventId: string | undefined
  /** Decoded messages in order, until the server ends the stream or `close()` is called. */
  messages(): AsyncGenerator<StreamMessage>
  /** Resolves once something matching arrives (a comment included); rejects if the stream ends first. */
  waitFor(predicate: (connection: SseConnection) => boolean): Promise<void>
  /** Stops reading from the socket (a stalled reader); `resume()` reads again. */
  pause(): void
  resume(): void
  /** Drops the connection (as a client that goes away would). */
  close(): void
  /** Resolves when the socket is closed, by either side. */
  readonly ended: Promise<void>
}

export interface SseRequestOptions {
  headers?: Record<string, string>
  signal?: AbortSignal
}

/** Opens `GET url` with `Accept: text/event-stream` on its own socket (no pooling). */
export function openSse(url: string, options: SseRequestOptions = {}): Promise<SseConnection> {
  return new Promise((resolve, reject) => {
    const request = httpRequest(url, {
      method: 'GET',
      agent: false,
      headers: { accept: 'text/event-stream', ...options.headers },
      signal: options.signal,
    })
    request.on('error', reject)
    request.on('response', (response: IncomingMessage) => {
      request.off('error', reject)
      const eventStream = String(response.headers['content-type'] ?? '').startsWith('text/event-stream')
      const queue: StreamMessage[] = []
      const comments: string[] = []
      let raw = ''
      let done = false
      let failure: Error | null = null
      let waiters: (() => void)[] = []
      let closedByUs = false
      const notify = (): void => {
        const woken = waiters
        waiters = []
        for (const wake of woken) wake()
      }
      const parser = createSseParser(
        (frame) => {
          const message = decodeSseMessage(frame)
          if (message !== null) queue.push(message)
        },
        (text) => comments.push(text),
      )
      let markEnded: () => void = () => {}
      const ended = new Promise<void>((resolveEnded) => (markEnded = resolveEnded))
      const finish = (error: Error | null): void => {
        if (done) return
        done = true
        failure = error
        markEnded()
        notify()
      }
      response.setEncoding('utf8')
      response.on('data', (chunk: string) => {
        raw += chunk
        if (eventStream) parser.push(chunk)
        notify()
      })
      response.on('end', () => finish(null))
      response.on('close', () => finish(null))
      // An abort by our own close() or signal is a normal end; anything else is reported.
      response.on('error', (error: Error) => finish(closedByUs ? null : error))
      request.on('error', (error: Error) => finish(closedByUs || error.name === 'AbortError' ? null : error))

      const nextChange = (): Promise<void> => new Promise<void>((resolveWake) => waiters.push(resolveWake))
      const connection: SseConnection = {
        status: response.statusCode ?? 0,
        headers: response.headers,
        body: '',
        get raw() {
          return raw
        },
        get comments() {
          return comments
        },
        get retry() {
          // `retry:` alone makes no frame, so the parser never reports it; read it off the raw text.
          const last = [...raw.matchAll(/(?:^|\n)retry: ?(\d+)\n/g)].at(-1)?.[1]
          return last === undefined ? undefined : Number(last)
        },
        get lastEventId() {
          return parser.lastEventId
        },
        async *messages() {
          for (;;) {
            const next = queue.shift()
            if (next !== undefined) {
              yield next
              continue
            }
            if (done) {
              if (failure !== null) throw failure
              return
            }
            await nextChange()
          }
        },
        async waitFor(predicate) {
          while (!predicate(connection)) {
            if (done) throw failure ?? new Error('the stream ended before the awaited data arrived')
            await nextChange()
          }
        },
        pause() {
          response.pause()
        },
        resume() {
          response.resume()
        },
        close() {
          closedByUs = true
          request.destroy()
        },
        ended,
      }
      const documented = (body: unknown): void =>
        expectDocumentedAnswer({ method: 'GET', url: new URL(url).pathname, status: connection.status, contentType: response.headers['content-type'], body })
      if (eventStream) {
        try {
          documented(null)
        } catch (error) {
          request.destroy()
          reject(error as Error)
          return
        }
        resolve(connection)
        return
      }
      // A plain answer (a JSON error): read it whole before handing it over.
      void ended.then(() => {
        connection.body = raw
        try {
          documented(raw === '' ? null : String(response.headers['content-type']).startsWith('application/json') ? JSON.parse(raw) : raw)
        } catch (error) {
          reject(error as Error)
          return
        }
        resolve(connection)
      })
    })
    request.end()
  })
}

/**
 * The messages of one SSE stream, until the server ends it. Breaking out of a `for await` loop
 * disconnects; a caller that stops reading otherwise must call `return()` to free the socket.
 */
export async function* readSse(url: string, options: SseRequestOptions = {}): AsyncGenerator<StreamMessage> {
  const connection = await openSse(url, options)
  try {
    if (connection.status !== 200) throw new Error(`stream answered HTTP ${connection.status}: ${connection.body}`)
    yield* connection.messages()
  } finally {
    connection.close()
  }
}

/**
 * Reads messages until `until` returns true for one (inclusive) or the stream ends. It does not
 * close the iterator when it stops early, so the next `collect` on it carries on from there.
 */
export async function collect(
  messages: AsyncIterator<StreamMessage>,
  until: (message: StreamMessage) => boolean = () => false,
): Promise<StreamMessage[]> {
  const out: StreamMessage[] = []
  for (;;) {
    const next = await messages.next()
    if (next.done === true) return out
    out.push(next.value)
    if (until(next.value)) return out
  }
}

export interface SpawnedServer {
  url: string
  /** The admin key: the one printed for a new key, else `JOBWIRE_API_KEY` from the env given. */
  key: string | null
  child: ChildProcess
  /** Everything the process printed on stdout so far. */
  readonly stdout: string
  readonly stderr: string
  /** Sends a signal (default SIGTERM) and resolves when the process has exited. */
  kill(signal?: NodeJS.Signals): Promise<ChildExit>
  exited: Promise<ChildExit>
}

export interface ChildExit {
  code: number | null
  signal: NodeJS.Signals | null
}

const running = new Set<ChildProcess>()
// A test that fails between spawn and kill must not leave a server running after the worker exits.
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL')
})

/**
 * Spawns `jobwire serve <args>` and resolves once it printed its "listening on" banner. Logs are
 * kept quiet (`JOBWIRE_LOG_LEVEL=warn`) unless `env` says otherwise.
 */
export async function spawnServer(args: string[], env: Record<string, string | undefined> = {}, cwd?: string): Promise<SpawnedServer> {
  let onStdout: (all: string) => void = () => undefined
  const { child, output } = spawnCli(['serve', ...args], env, cwd, (all) => onStdout(all))
  const exited = new Promise<ChildExit>((resolve) => {
    child.once('exit', (code, signal) => {
      running.delete(child)
      resolve({ code, signal })
    })
  })
  const banner = new Promise<RegExpExecArray>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`jobwire serve printed no banner in 20 s:\n${output.stdout}\n${output.stderr}`)), 20_000)
    onStdout = (all) => {
      // The banner is one console.log ending in a blank line; wait for all of it.
      const match = /listening on (http:\/\/\S+)\n([\s\S]*?)\n\n/.exec(all)
      if (match !== null) {
        clearTimeout(timer)
        resolve(match)
      }
    }
    void exited.then(({ code, signal }) => {
      clearTimeout(timer)
      reject(new Error(`jobwire serve exited (${code ?? signal}) before listening:\n${output.stdout}\n${output.stderr}`))
    })
  })
  const kill = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<ChildExit> => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal)
    return exited
  }
  let match: RegExpExecArray
  try {
    match = await banner
  } catch (error) {
    await kill('SIGKILL')
    throw error
  }
  const printedKey = /admin API key \([^)]*\): (\S+)/.exec(match[2] ?? '')?.[1]
  return {
    url: match[1] as string,
    key: printedKey ?? env.JOBWIRE_API_KEY ?? null,
    child,
    get stdout() {
      return output.stdout
    },
    get stderr() {
      return output.stderr
    },
    kill,
    exited,
  }
}

export interface CliResult extends ChildExit {
  stdout: string
  stderr: string
}

/**
 * Runs `jobwire <args>` to completion. `onStdout` sees output as it arrives (to drive a job once
 * `watch` is connected, say). Killed after `timeoutMs`.
 */
export function runCli(
  args: string[],
  options: {
    env?: Record<string, string | undefined>
    cwd?: string
    timeoutMs?: number
    onStdout?: (all: string) => void
    onStderr?: (all: string) => void
    /** Stops the command (SIGTERM) when it resolves. */
    until?: Promise<unknown>
  } = {},
): Promise<CliResult> {
  const { child, output } = spawnCli(args, options.env ?? {}, options.cwd, options.onStdout, options.onStderr)
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 20_000)
  void options.until?.then(() => child.kill('SIGTERM'))
  return new Promise((resolve, reject) => {
    child.once('error', reject)
    child.once('close', (code, signal) => {
      clearTimeout(timer)
      running.delete(child)
      resolve({ code, signal, ...output })
    })
  })
}

/**
 * Spawns `jobwire <args>` (killed if the test process exits first) and gathers its output as it
 * arrives; `onStdout` and `onStderr` see all of their stream so far at each chunk.
 */
function spawnCli(args: string[], env: Record<string, string | undefined>, cwd: string | undefined, onStdout?: (all: string) => void, onStderr?: (all: string) => void) {
  const child = spawn(process.execPath, [cliPath, ...args], {
    cwd,
    env: cleanEnv({ JOBWIRE_LOG_LEVEL: 'warn', ...env }),
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  running.add(child)
  const output = { stdout: '', stderr: '' }
  child.stdout.setEncoding('utf8')
  child.stderr.setEncoding('utf8')
  child.stdout.on('data', (chunk: string) => {
    output.stdout += chunk
    onStdout?.(output.stdout)
  })
  child.stderr.on('data', (chunk: string) => {
    output.stderr += chunk
    onStderr?.(output.stderr)
  })
  return { child, output }
}

/** The parent's environment without any JOBWIRE_* variable, plus `extra` (undefined removes). */
function cleanEnv(extra: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [name, value] of Object.entries(process.env)) if (!name.startsWith('JOBWIRE_')) env[name] = value
  for (const [name, value] of Object.entries(extra)) {
    if (value === undefined) delete env[name]
    else env[name] = value
  }
  return env
}

export { seededRandom } from '../../../test/support/random.js'

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

export { freePort } from '../../../test/support/free-port.js'
