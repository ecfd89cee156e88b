/**
 * The worker's default transport (Node's HTTP client) against a real HTTP server: the path under
 * the server URL's own path, the headers, and how a request ends when its signal aborts or its
 * timeout passes while the server holds it.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { nodeTransport, TransportTimeout } from '../src/transport.js'
import { systemTimers } from '../src/timing.js'

describe('nodeTransport', () => {
  let server: Server
  let url: string
  const seen: { method: string | undefined; url: string | undefined; headers: IncomingMessage['headers']; body: string }[] = []

  beforeEach(async () => {
    seen.length = 0
    server = createServer((request, response) => {
      const chunks: Buffer[] = []
      request.on('data', (chunk: Buffer) => chunks.push(chunk))
      request.on('end', () => {
        seen.push({ method: request.method, url: request.url, headers: request.headers, body: Buffer.concat(chunks).toString('utf8') })
        // `/hold…` is never answered: the client must give up on its own.
        if (request.url?.includes('/hold') === true) return
        response.writeHead(200, { 'content-type': 'application/json' })
        response.end(JSON.stringify({ ok: true }))
      })
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  })

  afterEach(async () => {
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })

  it('sends the path under the URL’s own path, with the key and, for a body, its type and length', async () => {
    const transport = nodeTransport({ url: `${url}/jobwire/`, apiKey: 'k-123', timers: systemTimers })
    try {
      const posted = await transport.send({ method: 'POST', path: '/v1/workers/claim', body: '{"types":["é"]}', signal: new AbortController().signal, timeoutMs: 5_000 })
      const got = await transport.send({ method: 'GET', path: '/v1/jobs/a/checkpoint', signal: new AbortController().signal, timeoutMs: 5_000 })
      expect(posted).toEqual({ status: 200, text: '{"ok":true}' })
      expect(got.status).toBe(200)
      expect(seen.map((s) => [s.method, s.url, s.body])).toEqual([
        ['POST', '/jobwire/v1/workers/claim', '{"types":["é"]}'],
        ['GET', '/jobwire/v1/jobs/a/checkpoint', ''],
      ])
      expect(seen[0]?.headers).toMatchObject({ authorization: 'Bearer k-123', 'content-type': 'application/json', 'content-length': String(Buffer.byteLength('{"types":["é"]}')) })
      expect(seen[1]?.headers.authorization).toBe('Bearer k-123')
      expect(seen[1]?.headers['content-type']).toBeUndefined()
    } finally {
      transport.close()
    }
  })

  it('ends a request the server holds when its timeout passes, and when its signal aborts', async () => {
    const transport = nodeTransport({ url, apiKey: 'k', timers: systemTimers })
    try {
      await expect(transport.send({ method: 'POST', path: '/hold/1', body: '{}', signal: new AbortController().signal, timeoutMs: 50 })).rejects.toBeInstanceOf(TransportTimeout)
      const controller = new AbortController()
      const held = transport.send({ method: 'POST', path: '/hold/2', body: '{}', signal: controller.signal, timeoutMs: 60_000 })
      // Aborted once the server has the request, so it is the request in flight that ends.
      while (seen.length < 2) await new Promise((resolve) => setTimeout(resolve, 5))
      controller.abort(new Error('stopping'))
      await expect(held).rejects.toMatchObject({ name: 'AbortError' })
      await expect(transport.send({ method: 'GET', path: '/v1/x', signal: controller.signal, timeoutMs: 60_000 })).rejects.toMatchObject({ name: 'AbortError' })
      // The connection pool still works after both.
      expect((await transport.send({ method: 'GET', path: '/v1/after', signal: new AbortController().signal, timeoutMs: 5_000 })).status).toBe(200)
    } finally {
      transport.close()
    }
  })
})
