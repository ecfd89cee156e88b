import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { decodeWsFrame, type JobState, type StreamMessage, type WsServerMessage } from '@jobwire/protocol'
import { createJsonClient, openSse, sleep } from './fixtures.js'
import { adminClient, deleteKeys, redisReachable, redisUrl, testPrefix } from './redis-fixtures/redis.js'
import { startNodes, stopNode, type Node } from './redis-fixtures/cluster.js'

/**
 * What the nodes of one deployment must share besides jobs, checked through real `jobwire serve
 * --redis` processes: claims (each job to exactly one worker, whichever node each talks to), job
 * creation and stream limits counted once for all nodes, and API keys — created on one node, used
 * on another, revoked on a third and refused everywhere at once, open streams included.
 */
if (redisReachable('Redis store: claims, limits and keys across processes')) {
  const prefix = testPrefix('access')
  const admin = adminClient()
  let nodes: Node[] = []
  beforeAll(async () => {
    nodes = await startNodes(3, { redisUrl, prefix, args: ['--create-limit', '5', '--create-window', '1m', '--streams-per-user', '2', '--lease-time', '30s'] })
  }, 180_000)
  afterAll(async () => {
    for (const node of nodes) await stopNode(node, 'SIGKILL')
    await deleteKeys(admin, prefix)
    await admin.quit()
  })
  const node = (i: number): Node => nodes[i] as Node

  /** A WebSocket on `url` with `credential`, collecting every message until it closes. */
  async function openSocket(url: string, credential: string): Promise<{ messages: WsServerMessage[]; closed: Promise<number>; send(message: unknown): void; next(predicate: (m: WsServerMessage) => boolean): Promise<WsServerMessage>; close(): void }> {
    const socket = new WebSocket(`${url.replace(/^http/, 'ws')}/v1/ws`, { headers: { authorization: `Bearer ${credential}` } })
    const messages: WsServerMessage[] = []
    let wake: () => void = () => {}
    socket.on('message', (data: Buffer) => {
      messages.push(...decodeWsFrame(data.toString('utf8')))
      wake()
    })
    socket.on('error', () => undefined)
    const closed = new Promise<number>((resolve) => socket.once('close', (code) => {
      resolve(code)
      wake()
    }))
    let isClosed = false
    void closed.then(() => (isClosed = true))
    await new Promise<void>((resolve, reject) => {
      socket.once('open', () => resolve())
      socket.once('error', reject)
    })
    return {
      messages,
      closed,
      send: (message) => socket.send(JSON.stringify(message)),
      async next(predicate) {
        for (let i = 0; ; i++) {
          const found = messages.find(predicate)
          if (found !== undefined) return found
          if (isClosed || i > 200) throw new Error(`no such message; got ${JSON.stringify(messages.slice(-3))}`)
          await new Promise<void>((resolve) => {
            wake = resolve
            setTimeout(resolve, 100)
          })
        }
      },
      close: () => socket.terminate(),
    }
  }

  describe('Redis store: claims, limits and keys shared by real node processes', () => {
    it('6 workers on 3 nodes claim 120 jobs: each claimed exactly once, completed through another node, none left queued', { timeout: 180_000 }, async () => {
      const type = `work-${Date.now()}`
      const ids: string[] = []
      for (let i = 0; i < 120; i++) {
        const created = await node(i % 3).client.call<JobState>('POST', '/v1/jobs', { type })
        expect(created.status).toBe(201)
        ids.push(created.body.id)
      }
      const claims: { jobId: string; worker: string }[] = []
      await Promise.all(
        Array.from({ length: 6 }, async (_, w) => {
          const mine = node(w % 3)
          const writer = node((w + 1) % 3)
          for (;;) {
            const claimed = await mine.client.call<{ job: JobState; lease: { token: string } }>('POST', '/v1/workers/claim', { types: [type], worker: `w${w}` })
            if (claimed.status === 204) return
            expect(claimed.status).toBe(200)
            claims.push({ jobId: claimed.body.job.id, worker: `w${w}` })
            const done = await writer.client.call('POST', `/v1/jobs/${claimed.body.job.id}/events`, {
              events: [{ type: 'completed', result: { by: w } }],
              lease: claimed.body.lease.token,
            })
            expect(done.status, JSON.stringify(done.body)).toBe(200)
          }
        }),
      )
      expect(claims).toHaveLength(120)
      expect(new Set(claims.map((c) => c.jobId)).size).toBe(120)
      expect(new Set(claims.map((c) => c.worker)).size).toBeGreaterThan(1)
      for (const id of ids) {
        const job = await node(2).client.call<JobState>('GET', `/v1/jobs/${id}`)
        expect(job.body).toMatchObject({ status: 'completed', attempt: 1 })
      }
      const queued = await node(1).client.call<{ jobs: unknown[] }>('GET', `/v1/jobs?type=${type}&status=queued`)
      expect(queued.body.jobs).toEqual([])
    })

    it('--create-limit 5 counts a person\'s creations on every node together: 5 in total, then 429 + Retry-After on any node', async () => {
      const answers = []
      for (let i = 0; i < 12; i++) {
        answers.push(await node(i % 3).client.call<{ error?: { code: string } }>('POST', '/v1/jobs', { type: 'limited', dispatch: false, owner: { tenant: 'acme', user: 'ann' } }))
      }
      expect(answers.map((a) => a.status)).toEqual([201, 201, 201, 201, 201, 429, 429, 429, 429, 429, 429, 429])
      for (const refused of answers.slice(5)) {
        expect(refused.body.error?.code).toBe('rate_limited')
        expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0)
      }
      // Someone else has a window of their own.
      expect((await node(1).client.call('POST', '/v1/jobs', { type: 'limited', dispatch: false, owner: { tenant: 'acme', user: 'bob' } })).status).toBe(201)
    })

    it('--streams-per-user 2 counts a person\'s open streams on every node together; closing one frees a slot on another node', async () => {
      const owner = { tenant: 'acme', user: 'cleo' }
      const job = await node(0).client.call<JobState>('POST', '/v1/jobs', { type: 'watched', dispatch: false, owner })
      const minted = await node(1).client.call<{ token: string }>('POST', '/v1/tokens', { ...owner, rights: ['read'] })
      expect(minted.status).toBe(200)
      const token = minted.body.token
      const headers = { authorization: `Bearer ${token}` }
      const first = await openSse(`${node(0).url}/v1/jobs/${job.body.id}/stream`, { headers })
      expect(first.status).toBe(200)
      const second = await openSocket(node(1).url, token)
      await second.next((m) => m.type === 'welcome')

      const third = await openSse(`${node(2).url}/v1/jobs/${job.body.id}/stream`, { headers })
      expect(third.status).toBe(429)
      expect(JSON.parse(third.body)).toMatchObject({ error: { code: 'too_many_streams' } })
      // Regression: a WebSocket over a stream limit used to be welcomed anyway (the refusal was dropped).
      const refusedSocket = await openSocket(node(0).url, token)
      expect(await refusedSocket.next((m) => m.type === 'error')).toMatchObject({ error: { code: 'too_many_streams' } })
      await refusedSocket.closed

      first.close()
      let reopened = await openSse(`${node(2).url}/v1/jobs/${job.body.id}/stream`, { headers })
      for (let i = 0; reopened.status === 429 && i < 100; i++) {
        await sleep(50) // the release reaches Redis a moment after the socket closes
        reopened = await openSse(`${node(2).url}/v1/jobs/${job.body.id}/stream`, { headers })
      }
      expect(reopened.status).toBe(200)
      reopened.close()
      second.close()
    })

    it('an API key created on node A works on node B; revoked on node C, it is refused on A and B at once and A closes its SSE stream and WebSocket', async () => {
      const made = await node(0).client.call<{ id: string; key: string }>('POST', '/v1/keys', { name: 'shared backend', role: 'backend' })
      expect(made.status).toBe(201)
      const { id, key } = made.body
      const onB = createJsonClient(node(1).url, key)
      const onA = createJsonClient(node(0).url, key)
      try {
        const job = await onB.call<JobState>('POST', '/v1/jobs', { type: 'keyed', dispatch: false })
        expect(job.status).toBe(201)
        expect((await node(2).client.call<{ keys: { id: string; revokedAt: string | null }[] }>('GET', '/v1/keys')).body.keys).toContainEqual(
          expect.objectContaining({ id, revokedAt: null }),
        )
        const stream = await openSse(`${node(0).url}/v1/jobs/${job.body.id}/stream`, { headers: { authorization: `Bearer ${key}` } })
        expect(stream.status).toBe(200)
        const streamed: StreamMessage[] = []
        const reading = (async () => {
          for await (const message of stream.messages()) streamed.push(message)
        })()
        const socket = await openSocket(node(0).url, key)
        socket.send({ type: 'subscribe', jobId: job.body.id })
        await socket.next((m) => m.type === 'snapshot')
        await stream.waitFor(() => streamed.some((m) => m.type === 'snapshot'))

        const revoked = await node(2).client.call('DELETE', `/v1/keys/${id}`)
        expect(revoked.status).toBe(200)
        // Node C published the revocation; A closes what it holds for the key without being asked.
        await reading
        expect(streamed.at(-1)).toMatchObject({ type: 'error', error: { code: 'unauthorized' } })
        expect(await socket.next((m) => m.type === 'error')).toMatchObject({ error: { code: 'unauthorized' } })
        await socket.closed
        for (const client of [onA, onB]) expect((await client.call('GET', `/v1/jobs/${job.body.id}`)).status).toBe(401)
        expect((await node(1).client.call<{ keys: { id: string; revokedAt: string | null }[] }>('GET', '/v1/keys')).body.keys).toContainEqual(
          expect.objectContaining({ id, revokedAt: expect.any(String) }),
        )
      } finally {
        await onA.close()
        await onB.close()
      }
    })
  })
}
