/**
 * Stream limits are exact under concurrency and count every stream kind (SSE, WebSocket,
 * long-poll) per person, whatever credential carries the person: user tokens, per-job tokens
 * minted for a user, refreshed sockets — on one node and across two nodes sharing Redis.
 */
import { createServer, type Server } from 'node:http'
import { connect, type AddressInfo, type Socket } from 'node:net'
import { afterAll, describe, expect, it } from 'vitest'
import { exportJWK, generateKeyPair, SignJWT } from 'jose'
import { request } from 'undici'
import { mintSubscriptionToken } from '@jobwire/backend'
import type { ErrorBody, JobState, WsServerMessage } from '@jobwire/protocol'
import { openSse, startTestServer, type SseConnection, type TestServer } from './fixtures.js'
import { adminClient, deleteKeys, redisReachable, redisUrl, testPrefix } from './redis-fixtures/redis.js'
import { openWs, wsUrl, type WsTestClient } from './ws-client.js'

const tokenSecret = 'stream-limits-test-secret-0123456789abcdef'

async function createJob(t: TestServer, owner: { tenant: string; user: string }): Promise<JobState> {
  const created = await t.api.call<JobState>('POST', '/v1/jobs', { type: 'limits', owner, dispatch: false })
  expect(created.status).toBe(201)
  return created.body
}

async function tokenFor(t: TestServer, scope: { jobIds?: string[]; tenant: string; user: string }): Promise<string> {
  const minted = await t.api.call<{ token: string }>('POST', '/v1/tokens', scope)
  expect(minted.status).toBe(200)
  return minted.body.token
}

function stream(t: TestServer, jobId: string, token: string): Promise<SseConnection> {
  return openSse(`${t.url}/v1/jobs/${jobId}/stream?access_token=${encodeURIComponent(token)}`)
}

/**
 * `count` clients that go away while their request to `path` opens: the store's reads take 100 ms
 * here (a store under load, a Redis far away), and each client aborts after 30 ms, before its
 * response had a 'close' listener. Waits `settleMs` for the server to see them go.
 */
async function abortWhileOpening(t: TestServer, path: string, count: number, settleMs: number): Promise<void> {
  const store = t.server.service.store
  const getJob = store.getJob.bind(store)
  store.getJob = async (id) => {
    await new Promise((resolve) => setTimeout(resolve, 100))
    return getJob(id)
  }
  try {
    await Promise.all(
      Array.from({ length: count }, async () => {
        const gone = new AbortController()
        const answer = request(`${t.url}${path}`, { signal: gone.signal }).catch(() => null)
        await new Promise((resolve) => setTimeout(resolve, 30))
        gone.abort()
        await answer
      }),
    )
    await new Promise((resolve) => setTimeout(resolve, settleMs))
  } finally {
    store.getJob = getJob
  }
}

function errorCodeOf(connection: SseConnection): string | undefined {
  return connection.status === 200 ? undefined : (JSON.parse(connection.body) as { error: ErrorBody }).error.code
}

describe('stream limits on one node', () => {
  const servers: TestServer[] = []
  const open: { close(): void }[] = []
  afterAll(async () => {
    for (const connection of open) connection.close()
    for (const server of servers) await server.close()
  })

  it('the connection cap holds exactly when 40 streams open at once against a cap of 20', async () => {
    const t = await startTestServer({ maxConnections: 20, tokenSecret })
    servers.push(t)
    const tokens: { token: string; jobId: string }[] = []
    for (let i = 0; i < 40; i++) {
      const job = await createJob(t, { tenant: 'acme', user: `u${i}` })
      tokens.push({ token: await tokenFor(t, { tenant: 'acme', user: `u${i}` }), jobId: job.id })
    }
    const answers = await Promise.all(tokens.map(({ token, jobId }) => stream(t, jobId, token)))
    open.push(...answers)
    expect(answers.filter((a) => a.status === 200).length).toBe(20)
    expect(new Set(answers.filter((a) => a.status !== 200).map(errorCodeOf))).toEqual(new Set(['server_busy']))
    for (const answer of answers) answer.close()
  })

  it('one person holds at most 5 streams whether by user token, per-job tokens minted for them, or long-polls', async () => {
    const t = await startTestServer({ tokenSecret })
    servers.push(t)
    const ann = { tenant: 'acme', user: 'ann' }
    const jobs = await Promise.all(Array.from({ length: 8 }, () => createJob(t, ann)))
    // Eight per-job tokens minted for ann, half by the server, half offline by @jobwire/backend.
    const perJob = await Promise.all(
      jobs.map((job, i) =>
        i % 2 === 0
          ? tokenFor(t, { jobIds: [job.id], ...ann })
          : Promise.resolve(mintSubscriptionToken({ secret: tokenSecret, jobIds: [job.id], ...ann }).token),
      ),
    )
    const answers = await Promise.all(jobs.map((job, i) => stream(t, job.id, perJob[i] as string)))
    open.push(...answers)
    expect(answers.filter((a) => a.status === 200).length).toBe(5)
    expect(new Set(answers.filter((a) => a.status !== 200).map(errorCodeOf))).toEqual(new Set(['too_many_streams']))
    // Her user token and a long-poll count against the same five.
    const userToken = await tokenFor(t, ann)
    const refused = await stream(t, (jobs[0] as JobState).id, userToken)
    expect(errorCodeOf(refused)).toBe('too_many_streams')
    const poll = await request(`${t.url}/v1/jobs/${(jobs[0] as JobState).id}/events?after=1&wait=5&access_token=${encodeURIComponent(userToken)}`)
    expect(poll.statusCode).toBe(429)
    expect(((await poll.body.json()) as { error: ErrorBody }).error.code).toBe('too_many_streams')
    // Closing streams frees slots, which a long-poll then holds while it waits.
    for (const answer of answers) answer.close()
    await expect.poll(async () => (await stream(t, (jobs[0] as JobState).id, userToken)).status).toBe(200)
  })

  it('an SSE request whose client goes away while the stream opens gives its slots back (held for good before: the node, the person and the address ran out)', async () => {
    const t = await startTestServer({ tokenSecret, maxConnections: 3, streamsPerUser: 3, streamsPerIp: 3 })
    servers.push(t)
    const ann = { tenant: 'acme', user: 'ann' }
    const job = await createJob(t, ann)
    const token = await tokenFor(t, ann)
    await abortWhileOpening(t, `/v1/jobs/${job.id}/stream?access_token=${encodeURIComponent(token)}`, 6, 300)
    // All three slots of the node, of ann and of the address are free again.
    const answers = await Promise.all(Array.from({ length: 3 }, () => stream(t, job.id, token)))
    open.push(...answers)
    expect(answers.map((answer) => answer.status === 200 ? 200 : errorCodeOf(answer))).toEqual([200, 200, 200])
    for (const answer of answers) answer.close()
  })

  it('a long-poll whose client goes away before its wait begins gives its slot back at once (held for its whole wait before)', async () => {
    const t = await startTestServer({ tokenSecret, streamsPerUser: 3 })
    servers.push(t)
    const ann = { tenant: 'acme', user: 'ann' }
    const job = await createJob(t, ann)
    const token = await tokenFor(t, ann)
    await abortWhileOpening(t, `/v1/jobs/${job.id}/events?after=1&wait=30&access_token=${encodeURIComponent(token)}`, 3, 500)
    expect(t.server.service.openPolls).toBe(0)
    const answer = await stream(t, job.id, token)
    open.push(answer)
    expect(answer.status === 200 ? 200 : errorCodeOf(answer)).toBe(200)
    answer.close()
  })

  it("a person's app JWT, user token and per-job tokens share one count", async () => {
    const jwtSecret = 'stream-limits-app-jwt-secret-0123456789'
    const t = await startTestServer({ tokenSecret, jwtSecret, jwtAlgorithms: 'HS256' })
    servers.push(t)
    const eve = { tenant: 'acme', user: 'eve' }
    const job = await createJob(t, eve)
    const appJwt = await new SignJWT({ tenant: 'acme' })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('eve')
      .setExpirationTime('10m')
      .sign(new TextEncoder().encode(jwtSecret))
    const credentials = [appJwt, appJwt, await tokenFor(t, eve), await tokenFor(t, { jobIds: [job.id], ...eve }), mintSubscriptionToken({ secret: tokenSecret, jobIds: [job.id], ...eve }).token]
    for (const credential of credentials) {
      const admitted = await stream(t, job.id, credential)
      open.push(admitted)
      expect(admitted.status).toBe(200)
    }
    for (const credential of credentials) expect(errorCodeOf(await stream(t, job.id, credential))).toBe('too_many_streams')
  })

  it('long-polls hold stream slots while they wait and give them back when answered', async () => {
    const t = await startTestServer({ tokenSecret, streamsPerUser: 2 })
    servers.push(t)
    const bob = { tenant: 'acme', user: 'bob' }
    const job = await createJob(t, bob)
    const token = await tokenFor(t, bob)
    const waits = [0, 1].map(() => request(`${t.url}/v1/jobs/${job.id}/events?after=1&wait=30&access_token=${encodeURIComponent(token)}`))
    await expect.poll(() => t.server.service.openPolls).toBe(2)
    const third = await stream(t, job.id, token)
    expect(errorCodeOf(third)).toBe('too_many_streams')
    // An event answers both polls; their slots come back.
    await t.api.call('POST', `/v1/jobs/${job.id}/events`, { type: 'started' })
    for (const wait of waits) expect((await wait).statusCode).toBe(200)
    await expect.poll(async () => {
      const next = await stream(t, job.id, token)
      next.close()
      return next.status
    }).toBe(200)
  })

  it('refresh_token to another person takes one of their streams, and is refused when they have none left', async () => {
    const t = await startTestServer({ tokenSecret, streamsPerUser: 1 })
    servers.push(t)
    const ann = { tenant: 'acme', user: 'ann' }
    const bob = { tenant: 'acme', user: 'bob' }
    const carol = { tenant: 'acme', user: 'carol' }
    const bobJob = await createJob(t, bob)
    const annToken = await tokenFor(t, ann)
    const bobToken = await tokenFor(t, bob)
    const carolToken = await tokenFor(t, carol)
    const bobStream = await stream(t, bobJob.id, bobToken)
    open.push(bobStream)
    expect(bobStream.status).toBe(200)
    const ws: WsTestClient = await openWs(wsUrl(t.url), { token: annToken })
    open.push(ws)
    await ws.next((m) => m.type === 'welcome')
    // Bob already holds his one stream: the socket stays ann's.
    ws.send({ type: 'refresh_token', token: bobToken, ref: 'to-bob' })
    const refusal = await ws.next<Extract<WsServerMessage, { type: 'error' }>>((m) => m.type === 'error' && m.ref === 'to-bob')
    expect(refusal.error.code).toBe('too_many_streams')
    // To carol it goes, and ann's slot comes back: ann can open a stream again.
    ws.send({ type: 'refresh_token', token: carolToken, ref: 'to-carol' })
    await ws.next((m) => m.type === 'token_refreshed' && m.ref === 'to-carol')
    const annJob = await createJob(t, ann)
    const annStream = await stream(t, annJob.id, annToken)
    open.push(annStream)
    expect(annStream.status).toBe(200)
    // …and carol's one slot is the socket's.
    const carolJob = await createJob(t, carol)
    expect(errorCodeOf(await stream(t, carolJob.id, carolToken))).toBe('too_many_streams')
  })

  it("per-job tokens on a socket opened without a credential count against their person, once per socket", async () => {
    const t = await startTestServer({ tokenSecret, streamsPerUser: 1 })
    servers.push(t)
    const ann = { tenant: 'acme', user: 'ann' }
    const jobs = await Promise.all(Array.from({ length: 3 }, () => createJob(t, ann)))
    const perJob = jobs.map((job) => mintSubscriptionToken({ secret: tokenSecret, jobIds: [job.id], ...ann }).token)
    const [first, second, third] = jobs as [JobState, JobState, JobState]
    // Ann's one stream is held by an SSE stream: her per-job token is refused on the socket.
    const held = await stream(t, first.id, perJob[0] as string)
    open.push(held)
    expect(held.status).toBe(200)
    const ws: WsTestClient = await openWs(wsUrl(t.url))
    open.push(ws)
    await ws.next((m) => m.type === 'welcome')
    ws.send({ type: 'subscribe', jobId: second.id, token: perJob[1] as string })
    const refusal = await ws.next<Extract<WsServerMessage, { type: 'error' }>>((m) => m.type === 'error' && m.jobId === second.id)
    expect(refusal.error.code).toBe('too_many_streams')
    // Once the SSE stream is gone, the socket carries two of her jobs on her one stream…
    held.close()
    await expect.poll(async () => {
      const from = ws.received.length
      ws.send({ type: 'subscribe', jobId: second.id, token: perJob[1] as string })
      const answer = await ws.next((m) => (m.type === 'subscribed' || m.type === 'error') && m.jobId === second.id, from)
      return answer.type
    }).toBe('subscribed')
    const from = ws.received.length
    ws.send({ type: 'subscribe', jobId: third.id, token: perJob[2] as string })
    await ws.next((m) => m.type === 'subscribed' && m.jobId === third.id, from)
    // …and holds it: another stream of hers is refused until both are unsubscribed.
    expect(errorCodeOf(await stream(t, first.id, perJob[0] as string))).toBe('too_many_streams')
    ws.send({ type: 'unsubscribe', jobId: second.id })
    expect(errorCodeOf(await stream(t, first.id, perJob[0] as string))).toBe('too_many_streams')
    ws.send({ type: 'unsubscribe', jobId: third.id })
    await expect.poll(async () => {
      const next = await stream(t, first.id, perJob[0] as string)
      open.push(next)
      return next.status
    }).toBe(200)
  })
})

if (redisReachable('stream limits across two Redis nodes')) {
  describe('stream limits across two Redis nodes', () => {
    const prefix = testPrefix('stream-limits')
    const servers: TestServer[] = []
    const open: { close(): void }[] = []
    afterAll(async () => {
      for (const connection of open) connection.close()
      for (const server of servers) await server.close()
      const admin = adminClient()
      await deleteKeys(admin, prefix)
      await admin.quit()
    })

    it('one person opening 12 streams at once over SSE, WebSocket and long-polls on two nodes holds exactly 5', async () => {
      const a = await startTestServer({ redis: redisUrl, redisPrefix: prefix, tokenSecret })
      servers.push(a)
      const b = await startTestServer({ redis: redisUrl, redisPrefix: prefix, tokenSecret })
      servers.push(b)
      const dan = { tenant: 'acme', user: 'dan' }
      const job = await createJob(a, dan)
      const userToken = mintSubscriptionToken({ secret: tokenSecret, ...dan }).token
      const jobToken = mintSubscriptionToken({ secret: tokenSecret, jobIds: [job.id], ...dan }).token
      const attempts: Promise<boolean>[] = []
      for (let i = 0; i < 12; i++) {
        const node = i % 2 === 0 ? a : b
        const token = i % 3 === 0 ? jobToken : userToken
        if (i % 4 === 1) {
          attempts.push(
            openWs(wsUrl(node.url), { token }).then(async (ws) => {
              open.push(ws)
              const first = await ws.next((m) => m.type === 'welcome' || m.type === 'error')
              return first.type === 'welcome'
            }),
          )
        } else if (i % 4 === 3) {
          attempts.push(
            request(`${node.url}/v1/jobs/${job.id}/events?after=1&wait=30&access_token=${encodeURIComponent(token)}`).then((answer) => {
              // A refused poll answers at once; an admitted one waits until the test ends (its read
              // may then end with the connection: not this test's concern).
              answer.body.text().catch(() => undefined)
              return false
            }),
          )
        } else {
          attempts.push(
            stream(node, job.id, token).then((connection) => {
              open.push(connection)
              return connection.status === 200
            }),
          )
        }
      }
      const pollCount = [...Array(12).keys()].filter((i) => i % 4 === 3).length
      const settled = await Promise.race([
        Promise.all(attempts.filter((_, i) => i % 4 !== 3)),
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error('streams did not open')), 20_000).unref()),
      ])
      const admittedStreams = settled.filter(Boolean).length
      // Long-polls that were admitted are still waiting: the rest answered 429.
      await expect
        .poll(() => a.server.service.openPolls + b.server.service.openPolls + admittedStreams, { timeout: 10_000 })
        .toBe(5)
      expect(pollCount).toBe(3)
      // Ending the long-polls (an event) frees their slots on every node.
      await a.api.call('POST', `/v1/jobs/${job.id}/events`, { type: 'started' })
    }, 60_000)
  })
}

if (redisReachable('clients gone before their stream is counted')) {
  describe('clients gone before their stream is counted', () => {
    const prefix = testPrefix('gone-clients')
    const closers: (() => Promise<unknown> | void)[] = []
    afterAll(async () => {
      for (const close of closers.reverse()) await close()
      const admin = adminClient()
      await deleteKeys(admin, prefix)
      await admin.quit()
    })

    /** Sends `head` (a request without a body) on a socket of its own, then keeps it open. */
    async function sendOn(url: string, head: string): Promise<Socket> {
      const { hostname, port } = new URL(url)
      const socket = connect(Number(port), hostname)
      socket.on('error', () => undefined)
      await new Promise<void>((resolve) => socket.once('connect', resolve))
      socket.write(head)
      return socket
    }

    it('an SSE stream, a long-poll and a WebSocket whose clients reset while their app JWT was checked take no slot (counted under the address "undefined" and "" before)', async () => {
      // The app's key set is served by a JWKS endpoint that answers only when told: every request
      // below waits on it in authentication, as behind a slow identity provider.
      const signing = await generateKeyPair('RS256', { extractable: true })
      const jwk = { ...(await exportJWK(signing.publicKey)), kid: 'gone-1', alg: 'RS256', use: 'sig' }
      let answerJwks: () => void = () => {}
      const jwksReleased = new Promise<void>((resolve) => (answerJwks = resolve))
      let jwksAsked = 0
      const jwks: Server = createServer((_request, response) => {
        jwksAsked++
        void jwksReleased.then(() => response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [jwk] })))
      })
      await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve))
      closers.push(() => {
        answerJwks()
        jwks.closeAllConnections()
        return new Promise((resolve) => jwks.close(resolve))
      })
      const t = await startTestServer({
        redis: redisUrl,
        redisPrefix: prefix,
        jwksUrl: `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/jwks.json`,
        jwtAlgorithms: 'RS256',
      })
      closers.push(() => t.close())
      const job = await createJob(t, { tenant: 'acme', user: 'ann' })
      const jwt = await new SignJWT({ sub: 'ann', tenant: 'acme' })
        .setProtectedHeader({ alg: 'RS256', kid: 'gone-1' })
        .setIssuedAt()
        .setExpirationTime('5m')
        .sign(signing.privateKey)

      // Every stream slot the node takes, as Redis runs it: the subject of each acquire script
      // (KEYS: the nodes and this node's hash; ARGV: node, subject, want, max, lease, node hash start).
      const monitor = await adminClient().monitor()
      closers.push(() => monitor.disconnect())
      const acquired: string[] = []
      monitor.on('monitor', (_time: string, args: string[]) => {
        const command = String(args[0]).toLowerCase()
        if ((command === 'evalsha' || command === 'eval') && args.length === 11 && args[10] === `${prefix}:streams:node:`) acquired.push(String(args[6]))
      })

      const auth = `Authorization: Bearer ${jwt}\r\nHost: 127.0.0.1\r\n`
      const heads = [
        `GET /v1/jobs/${job.id}/stream HTTP/1.1\r\n${auth}Accept: text/event-stream\r\n\r\n`,
        `GET /v1/jobs/${job.id}/events?after=1&wait=30 HTTP/1.1\r\n${auth}\r\n`,
        `GET /v1/ws HTTP/1.1\r\n${auth}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
      ]
      const sockets = await Promise.all([...heads, ...heads].map((head) => sendOn(t.url, head)))
      // Each request has reached authentication once a request sent after them all is answered.
      const health = await request(`${t.url}/healthz`, { reset: true })
      await health.body.dump()
      await expect.poll(() => jwksAsked).toBe(1)
      // The clients go away with a reset: the server's sockets have no address from then on.
      await Promise.all(
        sockets.map((socket) => {
          const closed = new Promise((resolve) => socket.once('close', resolve))
          socket.resetAndDestroy()
          return closed
        }),
      )
      await expect.poll(() => new Promise((resolve) => t.server.app.server.getConnections((_, count) => resolve(count)))).toBeLessThanOrEqual(2)
      answerJwks()

      // A live stream of the same person after them takes its slots, under its own address.
      const live = await stream(t, job.id, jwt)
      closers.push(() => live.close())
      expect(live.status).toBe(200)
      await expect.poll(() => acquired.filter((subject) => subject.startsWith('streams-ip:')).length).toBeGreaterThanOrEqual(1)
      // Nothing else was counted: not the gone clients' address ("undefined", or "" on WebSocket), nor their person.
      expect(acquired.sort()).toEqual(['streams-ip:127.0.0.1', 'streams:user:acme:ann'])
    })
  })
}
