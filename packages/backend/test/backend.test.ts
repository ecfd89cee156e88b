import { createServer as createHttpServer, type Server as HttpServer } from 'node:http'
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { JobwireBackend, JobwireError } from '@jobwire/backend'

/** What the backend's calls meet when no usable answer comes: real sockets, no Jobwire server. */
const servers: (HttpServer | NetServer)[] = []
const sockets: Socket[] = []

afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.destroy()
  await Promise.all(servers.splice(0).map((server) => new Promise((resolve) => server.close(resolve))))
})

async function listen(server: HttpServer | NetServer): Promise<string> {
  servers.push(server)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  return `http://127.0.0.1:${address.port}`
}

/** A port that was free a moment ago and has nothing listening on it now. */
async function closedPort(): Promise<string> {
  const server = createNetServer()
  const url = await listen(server)
  servers.splice(servers.indexOf(server), 1)
  await new Promise((resolve) => server.close(resolve))
  return url
}

async function failure(call: Promise<unknown>): Promise<JobwireError> {
  const error = await call.then(
    () => null,
    (thrown: unknown) => thrown,
  )
  expect(error).toBeInstanceOf(JobwireError)
  return error as JobwireError
}

describe('@jobwire/backend when no usable answer comes', () => {
  it('rejects with unavailable naming the server when nothing listens (it threw fetch’s bare TypeError)', async () => {
    const url = await closedPort()
    const error = await failure(new JobwireBackend({ url, apiKey: 'jw_not_a_key_at_all' }).getJob('job_x'))
    expect(error.code).toBe('unavailable')
    expect(error.status).toBe(503)
    expect(error.retryable).toBe(true)
    expect(error.message).toContain(`cannot reach ${url}: `)
    expect(error.message).toContain('ECONNREFUSED')
    expect((error as Error & { cause?: unknown }).cause).toBeInstanceOf(TypeError)
  })

  it('rejects with unavailable after timeoutMs when the server accepts and never answers', async () => {
    const url = await listen(createNetServer((socket) => sockets.push(socket)))
    const error = await failure(new JobwireBackend({ url, apiKey: 'jw_not_a_key_at_all', timeoutMs: 200 }).createJob({ type: 'x' }))
    expect(error.code).toBe('unavailable')
    expect(error.message).toContain(`no answer from ${url} within 200 ms`)
  })

  it('rejects with unavailable when the answer is not JSON (a proxy’s error page), not with a SyntaxError', async () => {
    const url = await listen(
      createHttpServer((_request, response) => {
        response.writeHead(502, { 'content-type': 'text/html' })
        response.end('<html><body>Bad Gateway</body></html>')
      }),
    )
    const error = await failure(new JobwireBackend({ url, apiKey: 'jw_not_a_key_at_all' }).listJobs())
    expect(error.code).toBe('unavailable')
    expect(error.message).toContain(`the answer from ${url} (HTTP 502) is not JSON`)
    expect((error as Error & { cause?: unknown }).cause).toBeInstanceOf(SyntaxError)
  })

  it('refuses a timeoutMs that is not a whole number of milliseconds', () => {
    for (const timeoutMs of [0, -1, 1.5, Number.NaN]) {
      expect(() => new JobwireBackend({ url: 'http://127.0.0.1:7070', apiKey: 'k', timeoutMs })).toThrow(/timeoutMs must be a whole number/)
    }
  })
})
