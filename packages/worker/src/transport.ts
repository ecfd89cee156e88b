import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http'
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https'

/** One HTTP request as the worker sends it. */
export interface HttpRequest {
  method: 'GET' | 'POST'
  headers: Record<string, string>
  body?: string
  signal: AbortSignal
}

/** Its answer, read in full. */
export interface HttpAnswer {
  status: number
  text: string
}

/**
 * How the worker reaches the server: one request, answered in full; rejects when no answer came
 * (the signal aborted, the connection failed).
 */
export interface Transport {
  send(url: string, request: HttpRequest): Promise<HttpAnswer>
  /** Lets go of kept-alive connections. */
  close(): void
}

/** A `fetch` (the `fetch` option, for tests and custom stacks) as a transport. */
export function fetchTransport(fetch: typeof globalThis.fetch): Transport {
  return {
    async send(url, { method, headers, body, signal }) {
      const response = await fetch(url, { method, headers, ...(body === undefined ? {} : { body }), signal })
      return { status: response.status, text: await response.text() }
    },
    close() {},
  }
}

/**
 * Node's own HTTP client over kept-alive connections: the default. A busy worker sends a
 * request per cycle, and `fetch`'s web streams cost several times what the request itself does.
 */
export function nodeTransport(): Transport {
  const agents = { http: new HttpAgent({ keepAlive: true }), https: new HttpsAgent({ keepAlive: true }) }
  return {
    send(url, { method, headers, body, signal }) {
      const secure = url.startsWith('https:')
      const send = secure ? httpsRequest : httpRequest
      return new Promise<HttpAnswer>((resolve, reject) => {
        const request = send(
          url,
          {
            method,
            agent: secure ? agents.https : agents.http,
            headers: body === undefined ? headers : { ...headers, 'content-length': String(Buffer.byteLength(body)) },
            signal,
          },
          (response: IncomingMessage) => {
            const chunks: Buffer[] = []
            response.on('data', (chunk: Buffer) => chunks.push(chunk))
            response.on('end', () => resolve({ status: response.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }))
            response.on('error', reject)
            // A cut connection closes the response without 'end'.
            response.on('close', () => {
              if (!response.complete) reject(new Error('the connection closed before the answer was complete'))
            })
          },
        )
        request.on('error', reject)
        request.end(body)
      })
    },
    close() {
      agents.http.destroy()
      agents.https.destroy()
    },
  }
}
