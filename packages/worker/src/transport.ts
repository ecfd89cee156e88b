import { Agent as HttpAgent, request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders, type RequestOptions } from 'node:http'
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https'
import { urlToHttpOptions } from 'node:url'
import type { Timers } from './timing.js'

/** One HTTP request as the worker sends it, to a path under the server's URL. */
export interface HttpRequest {
  method: 'GET' | 'POST'
  /** `/v1/…`, appended to the server URL's path. */
  path: string
  /** JSON; a POST without one sends none. */
  body?: string
  /** The caller's: aborting it ends the request (rejected with an `AbortError`). */
  signal: AbortSignal
  /** No full answer within this many ms ends the request (rejected with a `TransportTimeout`). */
  timeoutMs: number
  /**
   * For answers that must not be dropped unread: a claim's jobs are the worker's once the server
   * sent them, and only a worker that reads them can give them back. `signal` then ends the request
   * gently: once the answer has begun it is read to its end; before, the request's connection is
   * half-closed (its sending side ends), so the server either hears of it before it answers (and
   * gives the claim's jobs back itself) or has answered, and the answer is read — within
   * `gentleStopMs`, after which the connection is dropped. A `fetch` transport cannot half-close:
   * there `signal` ends the request at once until the answer has begun.
   */
  keepAnswer?: boolean
}

/** Its answer, read in full. */
export interface HttpAnswer {
  status: number
  text: string
}

/** No full answer came within the request's `timeoutMs`. */
export class TransportTimeout extends Error {
  constructor(timeoutMs: number) {
    super(`no answer within ${timeoutMs} ms`)
    this.name = 'TransportTimeout'
  }
}

/**
 * How the worker reaches the server: one request, answered in full; rejects when no answer came
 * (the signal aborted, the timeout passed, the connection failed).
 */
export interface Transport {
  send(request: HttpRequest): Promise<HttpAnswer>
  /** Lets go of kept-alive connections. */
  close(): void
}

export interface TransportOptions {
  /** The server, e.g. `http://127.0.0.1:7070` (a path, if any, prefixes every request's). */
  url: string
  apiKey: string
  timers: Timers
}

/** The error a request ends with when its caller's signal aborts (as `fetch` and Node's own `signal` option reject). */
function abortError(signal: AbortSignal): Error {
  const error = new Error('The operation was aborted', { cause: signal.reason })
  error.name = 'AbortError'
  return error
}

/** How long a request ended gently (`keepAnswer`) waits for its answer or the server's close. */
const gentleStopMs = 5_000

/** A `fetch` (the `fetch` option, for tests and custom stacks) as a transport. */
export function fetchTransport(fetch: typeof globalThis.fetch, { url, apiKey, timers }: TransportOptions): Transport {
  const base = url.replace(/\/+$/, '')
  const authorization = `Bearer ${apiKey}`
  return {
    async send({ method, path, body, signal, timeoutMs, keepAnswer }) {
      const controller = new AbortController()
      const onAbort = (): void => controller.abort(signal.reason)
      if (signal.aborted) onAbort()
      else signal.addEventListener('abort', onAbort, { once: true })
      const timeout = new TransportTimeout(timeoutMs)
      const timer = timers.setTimeout(() => controller.abort(timeout), timeoutMs)
      try {
        const headers: Record<string, string> = body === undefined ? { authorization } : { authorization, 'content-type': 'application/json' }
        const response = await fetch(`${base}${path}`, { method, headers, ...(body === undefined ? {} : { body }), signal: controller.signal })
        if (keepAnswer === true) signal.removeEventListener('abort', onAbort)
        return { status: response.status, text: await response.text() }
      } catch (error) {
        if (controller.signal.reason === timeout && !signal.aborted) throw timeout
        throw error
      } finally {
        timers.clearTimeout(timer)
        signal.removeEventListener('abort', onAbort)
      }
    },
    close() {},
  }
}

/**
 * Node's own HTTP client over kept-alive connections: the default. A busy worker sends a
 * request per cycle, so what each costs counts: the server's URL is parsed once, the
 * authorization header made once, and the caller's signal and the timeout end the request
 * directly (no AbortController, and no `signal` option, per request). `fetch`'s web streams cost
 * several times what the request itself does.
 */
export function nodeTransport({ url, apiKey, timers }: TransportOptions): Transport {
  const parsed = new URL(url)
  const target = urlToHttpOptions(parsed)
  const secure = target.protocol === 'https:'
  const send = secure ? httpsRequest : httpRequest
  const agent = secure ? new HttpsAgent({ keepAlive: true }) : new HttpAgent({ keepAlive: true })
  const prefix = parsed.pathname.replace(/\/+$/, '')
  const base: RequestOptions = { protocol: target.protocol, hostname: target.hostname, port: target.port, agent, ...(target.auth === undefined ? {} : { auth: target.auth }) }
  const authorization = `Bearer ${apiKey}`
  return {
    send({ method, path, body, signal, timeoutMs, keepAnswer }) {
      if (signal.aborted) return Promise.reject(abortError(signal))
      return new Promise<HttpAnswer>((resolve, reject) => {
        const headers: OutgoingHttpHeaders =
          body === undefined ? { authorization } : { authorization, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }
        let settled = false
        const finish = (error: Error | null, answer?: HttpAnswer): void => {
          if (settled) return
          settled = true
          timers.clearTimeout(timer)
          signal.removeEventListener('abort', onAbort)
          if (error !== null) reject(error)
          else resolve(answer as HttpAnswer)
        }
        const request = send({ ...base, method, path: `${prefix}${path}`, headers }, (response: IncomingMessage) => {
          if (keepAnswer === true) signal.removeEventListener('abort', onAbort)
          const chunks: Buffer[] = []
          response.on('data', (chunk: Buffer) => chunks.push(chunk))
          response.on('end', () => finish(null, { status: response.statusCode ?? 0, text: (chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks)).toString('utf8') }))
          response.on('error', finish)
          // A cut connection closes the response without 'end'.
          response.on('close', () => {
            if (!response.complete) finish(new Error('the connection closed before the answer was complete'))
          })
        })
        const onAbort = (): void => {
          const error = abortError(signal)
          const socket = request.socket
          if (keepAnswer === true && socket !== null && !socket.connecting && !socket.destroyed) {
            // Gently: the answer, or the server's close, comes within gentleStopMs.
            socket.end()
            timers.clearTimeout(timer)
            timer = timers.setTimeout(() => {
              request.destroy(error)
              finish(error)
            }, gentleStopMs)
            return
          }
          request.destroy(error)
          finish(error)
        }
        let timer = timers.setTimeout(() => {
          const error = new TransportTimeout(timeoutMs)
          request.destroy(error)
          finish(error)
        }, timeoutMs)
        signal.addEventListener('abort', onAbort, { once: true })
        request.on('error', finish)
        request.end(body)
      })
    },
    close() {
      agent.destroy()
    },
  }
}
