import { afterEach, describe, expect, it } from 'vitest'
import type { JobState } from '@jobwire/protocol'
import { startTestServer, type TestServer } from './fixtures.js'

/**
 * `--demo-failure-rate`: the share of demo transcriptions that fail on purpose. The dashboard's
 * tests run the demo with 0, so a test waiting for a transcription to complete cannot see it fail
 * at random (it did, one run in ten, with the default of 0.1).
 */
describe('the demo failure rate', () => {
  let server: TestServer | undefined
  afterEach(async () => {
    await server?.close()
    server = undefined
  })

  /** The transcription the demo starts with, followed until it ends. */
  async function firstTranscription(running: TestServer): Promise<JobState> {
    let id: string | undefined
    await expect
      .poll(async () => {
        const { body } = await running.api.call<{ jobs: { id: string; type: string }[] }>('GET', '/demo/jobs')
        id = body.jobs.find((job) => job.type === 'transcription')?.id
        return id
      }, { timeout: 20_000 })
      .toBeDefined()
    let job: JobState | undefined
    await expect
      .poll(async () => {
        job = (await running.api.call<JobState>('GET', `/demo/jobs/${id}`)).body
        return ['completed', 'failed', 'cancelled'].includes(job.status)
      }, { timeout: 40_000, interval: 200 })
      .toBe(true)
    return job as JobState
  }

  it('fails every demo transcription with audio_corrupt at rate 1', async () => {
    server = await startTestServer({ demo: true, demoFailureRate: 1 })
    const job = await firstTranscription(server)
    expect(job.status).toBe('failed')
    expect(job.error?.code).toBe('audio_corrupt')
  })

  it('completes every demo transcription at rate 0', async () => {
    server = await startTestServer({ demo: true, demoFailureRate: 0 })
    const job = await firstTranscription(server)
    expect(job.status).toBe('completed')
    expect(job.items.every((item) => item.status === 'completed')).toBe(true)
  })

  it('defaults to failing one demo transcription in ten', async () => {
    server = await startTestServer()
    expect(server.server.config.demoFailureRate).toBe(0.1)
  })
})
