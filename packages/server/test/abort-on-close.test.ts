/**
 * abortOnClose, the signal every long-poll (waiting claims, worker signals, event polls) waits
 * under, over real HTTP exchanges: answered long-polls leave nothing on the node's shutdown
 * signal, a client that goes away aborts its own, and the shutdown aborts those still open.
 */
import { createServer, request, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { getEventListeners } from 'node:events'
import type { FastifyReply } from 'fastify'
import { afterEach, describe, expect, it } from 'vitest'
import { abortOnClose } from '../src/http/context.js'

describe('abortOnClose', () => {
  let server: Server | null = null
  afterEach(async () => {
    server?.closeAllConnections()
    await new Promise<void>((resolve) => (server === null ? resolve() : server.close(() => resolve())))
    server = null
  })

  /** A server whose every request waits under abortOnClose; `answer` decides when it is answered. */
  async function start(shuttingDown: AbortSignal, onWait: (signal: AbortSignal, response: ServerResponse) => void): Promise<number> {
    server = createServer((req, response) => {
      req.resume()
      onWait(abortOnClose({ raw: response } as unknown as FastifyReply, shuttingDown), response)
    })
    await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve))
    return (server.address() as AddressInfo).port
  }

  function get(port: number, agent: boolean): Promise<string> {
    return new Promise((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path: '/', ...(agent ? {} : { agent: false }) }, (res) => {
        let text = ''
        res.on('data', (chunk: Buffer) => (text += chunk.toString()))
        res.on('end', () => resolve(text))
      })
      req.on('error', reject)
      req.end()
    })
  }

  it('leaves nothing on the shutdown signal once 500 long-polls were answered, and never aborts them', async () => {
    const shutdown = new AbortController()
    const signals: AbortSignal[] = []
    const port = await start(shutdown.signal, (signal, response) => {
      signals.push(signal)
      response.end('answered')
    })
    for (let i = 0; i < 500; i++) expect(await get(port, i % 2 === 0)).toBe('answered')
    // A response's 'close' may come a tick after the client read it.
    while (signals.length < 500) await new Promise((resolve) => setTimeout(resolve, 5))
    await new Promise((resolve) => setTimeout(resolve, 20))
    // One listener for all of them, not one per long-poll ever answered.
    expect(getEventListeners(shutdown.signal, 'abort').length).toBe(1)
    shutdown.abort()
    expect(signals.every((signal) => !signal.aborted)).toBe(true)
  })

  it('aborts a long-poll whose client went away, and at shutdown the ones still waiting', async () => {
    const shutdown = new AbortController()
    const waiting: AbortSignal[] = []
    const port = await start(shutdown.signal, (signal, response) => {
      waiting.push(signal)
      // Answered (empty) only when its signal aborts, as a long-poll is.
      signal.addEventListener('abort', () => response.end(''), { once: true })
    })
    // One client gives up: its long-poll must stop waiting for no one.
    const gone = request({ host: '127.0.0.1', port, path: '/', agent: false })
    gone.on('error', () => {})
    gone.end()
    while (waiting.length < 1) await new Promise((resolve) => setTimeout(resolve, 5))
    gone.destroy()
    const first = waiting[0] as AbortSignal
    while (!first.aborted) await new Promise((resolve) => setTimeout(resolve, 5))
    // Two more wait; the node shuts down: both are answered.
    const answers = Promise.all([get(port, false), get(port, false)])
    while (waiting.length < 3) await new Promise((resolve) => setTimeout(resolve, 5))
    expect(waiting.slice(1).some((signal) => signal.aborted)).toBe(false)
    shutdown.abort()
    expect(await answers).toEqual(['', ''])
    expect(waiting.every((signal) => signal.aborted)).toBe(true)
    // A long-poll arriving after the shutdown is aborted from the start.
    const late: AbortSignal[] = []
    server?.removeAllListeners('request')
    server?.on('request', (req, response: ServerResponse) => {
      req.resume()
      late.push(abortOnClose({ raw: response } as unknown as FastifyReply, shutdown.signal))
      response.end('late')
    })
    expect(await get(port, false)).toBe('late')
    expect(late[0]?.aborted).toBe(true)
  })

  it('aborts at once a long-poll whose client was gone before it began to wait', async () => {
    const shutdown = new AbortController()
    const signals: AbortSignal[] = []
    server = createServer((req, response) => {
      req.resume()
      // The wait begins only after the client went away (a slow handler before it, say).
      response.on('close', () => signals.push(abortOnClose({ raw: response } as unknown as FastifyReply, shutdown.signal)))
    })
    await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve))
    const port = (server.address() as AddressInfo).port
    const gone = request({ host: '127.0.0.1', port, path: '/', agent: false })
    gone.on('error', () => {})
    gone.end()
    await new Promise((resolve) => setTimeout(resolve, 50))
    gone.destroy()
    while (signals.length < 1) await new Promise((resolve) => setTimeout(resolve, 5))
    expect(signals[0]?.aborted).toBe(true)
    expect(getEventListeners(shutdown.signal, 'abort').length).toBe(0)
  })
})
