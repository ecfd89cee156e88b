import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { ErrorBody, JobState } from '@jobwire/protocol'
import { startTestServer, type TestServer } from './fixtures.js'

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
