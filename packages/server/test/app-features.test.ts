import { SignJWT } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { ErrorBody, JobState } from '@jobwire/protocol'
import { mintSubscriptionToken } from '@jobwire/backend'
import { createJsonClient, openSse, startTestServer, type TestServer } from './fixtures.js'

/** The features the four real apps needed: progress metadata, stage plans. */
let t: TestServer

beforeAll(async () => {
  t = await startTestServer({
    stagePlans: JSON.stringify({
      transcription: [
        { name: 'validating', to: 10 },
        { name: 'decoding', to: 20 },
        { name: 'transcribing', to: 70 },
        { name: 'synthesizing', to: 100 },
      ],
    }),
  })
})

afterAll(async () => {
  await t.close()
})

async function create(body: Record<string, unknown>): Promise<JobState> {
  const answer = await t.api.call<JobState>('POST', '/v1/jobs', { dispatch: false, ...body })
  expect(answer.status).toBe(201)
  return answer.body
}

async function append(jobId: string, body: unknown): Promise<{ status: number; body: unknown }> {
  return t.api.call('POST', `/v1/jobs/${jobId}/events`, body)
}

async function get(jobId: string): Promise<JobState> {
  return (await t.api.call<JobState>('GET', `/v1/jobs/${jobId}`)).body
}

describe('progress and item metadata', () => {
  it('keeps merged metadata in the snapshot (it was refused as an unknown field before)', async () => {
    const job = await create({ type: 'metadata' })
    expect((await append(job.id, { type: 'progress', percent: 5, metadata: { chunksProcessed: 1, totalChunks: 40 } })).status).toBe(200)
    expect((await append(job.id, { events: [{ type: 'progress', metadata: { chunksProcessed: 2 } }, { type: 'item', id: 'a.wav', metadata: { seconds: 12.5 } }] })).status).toBe(200)
    const state = await get(job.id)
    expect(state.progress.metadata).toEqual({ chunksProcessed: 2, totalChunks: 40 })
    expect(state.items[0]?.metadata).toEqual({ seconds: 12.5 })
  })

  it('refuses metadata over its limits, per event and once merged, naming the field', async () => {
    const job = await create({ type: 'metadata' })
    const many = Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, i]))
    const tooMany = await append(job.id, { type: 'progress', metadata: many })
    expect(tooMany.status).toBe(400)
    expect((tooMany.body as { error: ErrorBody }).error).toMatchObject({ code: 'invalid_request', details: { field: 'metadata' } })
    const big = await append(job.id, { type: 'item', id: 'x', metadata: { blob: 'x'.repeat(5000) } })
    expect(big.status).toBe(400)
    const half = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`a${i}`, i]))
    const other = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`b${i}`, i]))
    expect((await append(job.id, { type: 'progress', metadata: half })).status).toBe(200)
    const merged = await append(job.id, { type: 'progress', metadata: other })
    expect(merged.status).toBe(400)
    expect((merged.body as { error: ErrorBody }).error.message).toContain('merged holds 40 keys')
    expect(await append(job.id, { type: 'progress', metadata: ['not', 'an', 'object'] })).toMatchObject({ status: 400 })
  })

  it("merges a batch's item metadata with each item's stored metadata, also when the batch touches many items", async () => {
    const job = await create({ type: 'metadata' })
    const ids = Array.from({ length: 40 }, (_, i) => `file-${i}`)
    const stored = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`a${i}`, i]))
    const first = await append(job.id, { events: ids.map((id) => ({ type: 'item', id, metadata: { ...stored, id } })) })
    expect(first.status).toBe(200)
    // 40 updates (more than a scan is used for): each merges with its own item's stored metadata.
    const second = await append(job.id, { events: ids.map((id, i) => ({ type: 'item', id, metadata: { a0: null, seen: i } })) })
    expect(second.status).toBe(200)
    const state = await get(job.id)
    expect(state.items).toHaveLength(40)
    state.items.forEach((item, i) => {
      const { a0: _dropped, ...rest } = stored
      expect(item.metadata).toEqual({ ...rest, id: `file-${i}`, seen: i })
    })
    // The merge is checked against what is stored: 19 + id + seen + 12 new keys = 33, one over the limit, at its index.
    const extra = Object.fromEntries(Array.from({ length: 12 }, (_, i) => [`c${i}`, i]))
    const events = ids.map((id) => ({ type: 'item', id, status: 'completed' }))
    events[30] = { type: 'item', id: 'file-30', status: 'completed', metadata: extra } as (typeof events)[number]
    const refused = await append(job.id, { events: [...ids.slice(0, 10).map((id) => ({ type: 'item', id, metadata: { more: 1 } })), ...events] })
    expect(refused.status).toBe(400)
    expect((refused.body as { error: ErrorBody }).error).toMatchObject({ code: 'invalid_request', details: { field: 'metadata', index: 40 } })
    expect((refused.body as { error: ErrorBody }).error.message).toContain('item "file-30" metadata merged holds 33 keys')
    expect((await get(job.id)).seq).toBe(state.seq)
  })
})

describe('stage plans', () => {
  it("a job of a type with a configured plan carries it, and stage fractions move its percent", async () => {
    const job = await create({ type: 'transcription' })
    expect(job.plan?.map((stage) => [stage.name, stage.from, stage.to, stage.status])).toEqual([
      ['validating', 0, 10, 'pending'],
      ['decoding', 10, 20, 'pending'],
      ['transcribing', 20, 70, 'pending'],
      ['synthesizing', 70, 100, 'pending'],
    ])
    await append(job.id, { type: 'progress', stage: 'validating', fraction: 1 })
    await append(job.id, { type: 'progress', stage: 'transcribing', fraction: 0.5 })
    const state = await get(job.id)
    expect(state.progress.percent).toBe(45)
    expect(state.plan?.map((stage) => stage.status)).toEqual(['done', 'skipped', 'running', 'pending'])
  })

  it("a create request's own plan (weights) overrides its type's", async () => {
    const job = await create({ type: 'transcription', stages: ['fetch', { name: 'render', weight: 3 }] })
    expect(job.plan?.map((stage) => [stage.name, stage.from, stage.to])).toEqual([
      ['fetch', 0, 25],
      ['render', 25, 100],
    ])
  })

  it('a plan whose weights overflow a double when summed gets correct ranges, and its percent follows them (0–0 and a null start before)', async () => {
    const job = await create({ type: 'x', stages: [{ name: 'a', weight: 1e308 }, { name: 'b', weight: 1e308 }, { name: 'c', weight: 1e-300 }] })
    expect(job.plan?.map((stage) => [stage.name, stage.from, stage.to])).toEqual([
      ['a', 0, 50],
      ['b', 50, 100],
      ['c', 100, 100],
    ])
    await append(job.id, { type: 'progress', stage: 'b', fraction: 0.5 })
    expect((await get(job.id)).progress.percent).toBe(75)
  })

  it('refuses a bad plan at create, and a fraction outside the plan at append', async () => {
    const bad = await t.api.call<{ error: ErrorBody }>('POST', '/v1/jobs', { type: 'x', stages: [{ name: 'a', to: 60 }, { name: 'b', from: 50, to: 100 }] })
    expect(bad.status).toBe(400)
    expect(bad.body.error).toMatchObject({ code: 'invalid_request', details: { field: 'stages' } })
    const planless = await create({ type: 'no-plan' })
    const refused = await append(planless.id, { type: 'progress', stage: 'a', fraction: 0.5 })
    expect(refused.status).toBe(400)
    expect((refused.body as { error: ErrorBody }).error.message).toContain('no stage plan')
    const planned = await create({ type: 'transcription' })
    const outside = await append(planned.id, { type: 'progress', stage: 'elsewhere', fraction: 0.5 })
    expect((outside.body as { error: ErrorBody }).error.message).toContain('not in the job\'s plan')
  })

  it('refuses a malformed stagePlans config naming the type', async () => {
    await expect(startTestServer({ stagePlans: '{"x": [{"name": "a", "weight": -1}]}' })).rejects.toThrow(/stagePlans|x: stage weights/)
  })
})

const tokenSecret = 'app-features-token-secret-0123456789abcdef'
const jwtSecret = 'app-features-jwt-secret-0123456789'

describe('people starting their own jobs', () => {
  let p: TestServer
  beforeAll(async () => {
    p = await startTestServer({ tokenSecret, jwtSecret, jwtCreateTypes: 'export', createLimit: 100, createLimitByType: 'report=2', tenantTiers: 'acme=free', createLimitByTier: 'free=3' })
  })
  afterAll(async () => {
    await p.close()
  })

  const tokenFor = (user: string, create?: string[], tenant = 'globex'): string =>
    mintSubscriptionToken({ secret: tokenSecret, tenant, user, rights: ['read', 'cancel'], ...(create === undefined ? {} : { create }), ttlSeconds: 600 }).token
  const appJwt = (user: string, tenant: string): Promise<string> =>
    new SignJWT({ tenant }).setProtectedHeader({ alg: 'HS256' }).setSubject(user).setExpirationTime('10m').sign(new TextEncoder().encode(jwtSecret))
  async function as<T = JobState & { error: ErrorBody }>(credential: string, method: string, path: string, body?: unknown) {
    const client = createJsonClient(p.url, credential)
    try {
      return await client.call<T>(method, path, body)
    } finally {
      await client.close()
    }
  }

  it("a token's create right starts a job of a listed type owned by the token's user, whatever the request says (forbidden before)", async () => {
    const token = tokenFor('ann', ['export', 'report'])
    const created = await as(token, 'POST', '/v1/jobs', { type: 'export', input: { format: 'csv' } })
    expect(created.status).toBe(201)
    expect(created.body).toMatchObject({ type: 'export', owner: { tenant: 'globex', user: 'ann' }, dispatch: true, status: 'queued' })
    // Readable with the same token, like every job of hers.
    expect((await as(token, 'GET', `/v1/jobs/${created.body.id}`)).status).toBe(200)
    const other = await as(token, 'POST', '/v1/jobs', { type: 'export', owner: { tenant: 'globex', user: 'bob' } })
    expect(other.status).toBe(403)
    expect((await as(token, 'POST', '/v1/jobs', { type: 'admin-task' })).status).toBe(403)
    expect((await as(token, 'POST', '/v1/jobs', { type: 'export', dispatch: false })).status).toBe(403)
    expect((await as(token, 'POST', '/v1/jobs', { type: 'export', maxAttempts: 50 })).status).toBe(403)
    expect((await as(tokenFor('ann'), 'POST', '/v1/jobs', { type: 'export' })).status).toBe(403)
  })

  it("a person's idempotency key never answers with someone else's job", async () => {
    const first = await as(tokenFor('cy', ['export']), 'POST', '/v1/jobs', { type: 'export', idempotencyKey: 'k1' })
    const again = await as(tokenFor('cy', ['export']), 'POST', '/v1/jobs', { type: 'export', idempotencyKey: 'k1' })
    expect(again.status).toBe(200)
    expect(again.body.id).toBe(first.body.id)
    const stranger = await as(tokenFor('dee', ['export']), 'POST', '/v1/jobs', { type: 'export', idempotencyKey: 'k1' })
    expect(stranger.status).toBe(201)
    expect(stranger.body.id).not.toBe(first.body.id)
    expect(stranger.body.owner).toEqual({ tenant: 'globex', user: 'dee' })
  })

  it('an app JWT creates the types --jwt-create-types lists, and resumes its own job', async () => {
    const jwt = await appJwt('eve', 'initech')
    const created = await as(jwt, 'POST', '/v1/jobs', { type: 'export' })
    expect(created.status).toBe(201)
    expect(created.body.owner).toEqual({ tenant: 'initech', user: 'eve' })
    expect((await as(jwt, 'POST', '/v1/jobs', { type: 'report' })).status).toBe(403)
    expect((await as(jwt, 'POST', `/v1/jobs/${created.body.id}/cancel`, {})).status).toBe(200)
    const resumed = await as(jwt, 'POST', `/v1/jobs/${created.body.id}/resume`, {})
    expect(resumed.status).toBe(200)
    expect(resumed.body.status).toBe('queued')
    // Someone else's job of the same type is not theirs to resume.
    const theirs = await p.api.call<JobState>('POST', '/v1/jobs', { type: 'export', owner: { tenant: 'initech', user: 'fay' } })
    await p.api.call('POST', `/v1/jobs/${theirs.body.id}/cancel`, {})
    expect((await as(jwt, 'POST', `/v1/jobs/${theirs.body.id}/resume`, {})).status).toBe(404)
  })

  it('per-type and per-tier create limits: a type with its own limit counts apart; a tier replaces the global limit', async () => {
    const token = tokenFor('gus', ['report', 'export'])
    const codes: number[] = []
    for (let i = 0; i < 3; i++) codes.push((await as(token, 'POST', '/v1/jobs', { type: 'report' })).status)
    expect(codes).toEqual([201, 201, 429])
    // Reports have their own bucket: exports still go.
    expect((await as(token, 'POST', '/v1/jobs', { type: 'export' })).status).toBe(201)
    // acme is on the free tier: three creations per window, whoever makes them for that person.
    const acme: number[] = []
    for (let i = 0; i < 4; i++) acme.push((await p.api.call('POST', '/v1/jobs', { type: 'export', owner: { tenant: 'acme', user: 'hal' } })).status)
    expect(acme).toEqual([201, 201, 201, 429])
    const ian = await as(tokenFor('ian', ['export'], 'acme'), 'POST', '/v1/jobs', { type: 'export' })
    expect(ian.status).toBe(201)
  })
})

describe("names Object.prototype has, as job types and tenants", () => {
  // `constructor`, `__proto__`, `toString`, … are valid job types and tenant names. The per-type and
  // per-tier tables were plain objects read with `table[name]`: a job of type `constructor` got
  // Object's constructor as its stage plan (500 stages.map is not a function), as its attempts
  // (stored as nothing: the state had no maxAttempts) and as its own create limit (never reached;
  // on Redis a 500 from the rate script).
  let p: TestServer
  beforeAll(async () => {
    p = await startTestServer({
      createLimit: 2,
      createLimitByType: 'report=5',
      maxAttemptsByType: 'report=7',
      streamsPerUserByType: 'report=1',
      tenantTiers: 'acme=free',
      createLimitByTier: 'free=5',
      stagePlans: JSON.stringify({ report: ['a', 'b'] }),
    })
  })
  afterAll(async () => {
    await p.close()
  })

  it('creates, reads, limits and resumes them like any other name (500 or a job without maxAttempts before)', async () => {
    for (const name of ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf']) {
      const owner = { tenant: name, user: name }
      const created = await p.api.call<JobState>('POST', '/v1/jobs', { type: name, owner, dispatch: false })
      expect(created.status, name).toBe(201)
      expect(created.body).toMatchObject({ type: name, owner, maxAttempts: 3 })
      expect(created.body.plan, name).toBeUndefined()
      expect((await p.api.call<JobState>('GET', `/v1/jobs/${created.body.id}`)).body).toEqual(created.body)
      // The global limit (2 per person) applies: the type has no bucket of its own, the tenant no tier.
      expect((await p.api.call('POST', '/v1/jobs', { type: name, owner, dispatch: false })).status, name).toBe(201)
      expect((await p.api.call<{ error: ErrorBody }>('POST', '/v1/jobs', { type: name, owner, dispatch: false })).body.error?.code, name).toBe('rate_limited')
      // A resume gives the default attempt budget, a number.
      expect((await p.api.call('POST', `/v1/jobs/${created.body.id}/events`, { type: 'failed', code: 'x', message: 'm' })).status).toBe(200)
      const resumed = await p.api.call<JobState>('POST', `/v1/jobs/${created.body.id}/resume`)
      expect(resumed.status, name).toBe(200)
      expect(resumed.body.maxAttempts, name).toBe(resumed.body.attempt + 3)
    }
    // The configured type still gets its own plan, attempts and bucket.
    const report = await p.api.call<JobState>('POST', '/v1/jobs', { type: 'report', owner: { tenant: 'acme', user: 'ann' } })
    expect(report.body.maxAttempts).toBe(7)
    expect(report.body.plan?.map((stage) => stage.name)).toEqual(['a', 'b'])
  })
})

describe('per-tier and per-type stream limits', () => {
  let p: TestServer
  beforeAll(async () => {
    p = await startTestServer({ tokenSecret, streamsPerUser: 5, tenantTiers: 'acme=free', streamsPerUserByTier: 'free=1', streamsPerUserByType: 'video=1' })
  })
  afterAll(async () => {
    await p.close()
  })

  it("a free-tier person holds one stream; a type's own limit caps streams of that type only", async () => {
    const make = async (type: string, tenant: string) =>
      (await p.api.call<JobState>('POST', '/v1/jobs', { type, owner: { tenant, user: 'u' } })).body.id
    const free = mintSubscriptionToken({ secret: tokenSecret, tenant: 'acme', user: 'u', ttlSeconds: 600 }).token
    const a = await make('doc', 'acme')
    const b = await make('doc', 'acme')
    const first = await openSse(`${p.url}/v1/jobs/${a}/stream`, { headers: { authorization: `Bearer ${free}` } })
    const second = await openSse(`${p.url}/v1/jobs/${b}/stream`, { headers: { authorization: `Bearer ${free}` } })
    expect([first.status, second.status]).toEqual([200, 429])
    first.close()
    second.close()

    const paid = mintSubscriptionToken({ secret: tokenSecret, tenant: 'globex', user: 'u', ttlSeconds: 600 }).token
    const v1 = await make('video', 'globex')
    const v2 = await make('video', 'globex')
    const d1 = await make('doc', 'globex')
    const opened = [await openSse(`${p.url}/v1/jobs/${v1}/stream`, { headers: { authorization: `Bearer ${paid}` } }), await openSse(`${p.url}/v1/jobs/${v2}/stream`, { headers: { authorization: `Bearer ${paid}` } }), await openSse(`${p.url}/v1/jobs/${d1}/stream`, { headers: { authorization: `Bearer ${paid}` } })]
    expect(opened.map((c) => c.status)).toEqual([200, 429, 200])
    for (const connection of opened) connection.close()
  })
})

describe('large results and checkpoints over HTTP', () => {
  it('takes a 2 MiB result on the events route (over maxBodyBytes), keeps it out of the SSE frames and the snapshot, and serves it at /result', async () => {
    const job = await create({ type: 'big-result' })
    const sse = await openSse(`${t.url}/v1/jobs/${job.id}/stream`, { headers: { authorization: `Bearer ${t.key}` } })
    const result = { transcript: 'y'.repeat(2 * 1024 * 1024) }
    const answer = await append(job.id, { events: [{ type: 'checkpoint', data: { part: 'z'.repeat(100_000) } }, { type: 'completed', result }] })
    expect(answer.status).toBe(200)
    await sse.ended
    expect(sse.raw.length).toBeLessThan(10_000)
    expect(sse.raw).toContain('"resultRef":{"ref":"v_')
    const state = await get(job.id)
    expect(state).toMatchObject({ status: 'completed', result: null, resultRef: { size: JSON.stringify(result).length }, checkpoint: null })
    const full = await t.api.call<{ result: typeof result }>('GET', `/v1/jobs/${job.id}/result`)
    expect(full.body.result.transcript.length).toBe(result.transcript.length)
    const checkpoint = await t.api.call<{ checkpoint: { part: string } }>('GET', `/v1/jobs/${job.id}/checkpoint`)
    expect(checkpoint.body.checkpoint.part.length).toBe(100_000)
  })

  it('serves a small result inline both in the snapshot and at /result, null before there is one, and 404 out of scope', async () => {
    const job = await create({ type: 'small-result' })
    expect((await t.api.call('GET', `/v1/jobs/${job.id}/result`)).body).toEqual({ result: null })
    await append(job.id, { type: 'completed', result: { ok: true } })
    expect((await get(job.id)).result).toEqual({ ok: true })
    expect((await t.api.call('GET', `/v1/jobs/${job.id}/result`)).body).toEqual({ result: { ok: true } })
    const stranger = mintSubscriptionToken({ secret: new TextDecoder().decode(t.server.auth.tokenSecret), tenant: 'other', user: 'u', ttlSeconds: 600 }).token
    const client = createJsonClient(t.url, stranger)
    expect((await client.call('GET', `/v1/jobs/${job.id}/result`)).status).toBe(404)
    await client.close()
  })
})
