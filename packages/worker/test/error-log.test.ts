import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { freePort } from '../../../test/support/free-port.js'
import { startTcpProxy } from '../../../test/support/tcp-proxy.js'
import { createWorker } from '../src/index.js'
import { apiKey, ManualTimers, startTestServer, until, type TestServer } from './harness.js'

let t: TestServer
let lines: string[] = []
const original = console.warn

beforeAll(async () => {
  t = await startTestServer()
})

afterAll(async () => {
  await t.close()
})

afterEach(() => {
  console.warn = original
})

/** What the default onError writes, from now on. */
function captureWarnings(): string[] {
  lines = []
  console.warn = (line: string) => lines.push(line)
  return lines
}

/** A fetch that counts the worker's claims (sent, whatever became of them). */
function countingClaims(): { fetch: typeof fetch; claims: () => number } {
  let claims = 0
  return {
    fetch: (input, init) => {
      if (new URL(String(input)).pathname === '/v1/workers/claim') claims++
      return fetch(input, init)
    },
    claims: () => claims,
  }
}

describe("the default onError while the server can't be reached", () => {
  it('says the first failure once, not once per retry, and reminds once a minute with the count', async () => {
    const said = captureWarnings()
    const timers = new ManualTimers()
    const counted = countingClaims()
    const port = await freePort()
    const worker = createWorker({ url: `http://127.0.0.1:${port}`, apiKey: 'k', timers, random: () => 0.5, fetch: counted.fetch })
    worker.handle('nowhere', () => null)
    await worker.start()
    await until(() => counted.claims() === 1 && said.length === 1, 'the first failure')
    // Retries at 50, 100, 200… ms (full jitter at 0.5), capped at 5 s: some 17 in the first minute.
    await timers.advance(59_000)
    const retries = counted.claims()
    expect(retries).toBeGreaterThan(10)
    expect(said).toEqual([expect.stringMatching(/^jobwire worker: claim: .*ECONNREFUSED/)])
    await timers.advance(6_000)
    expect(said).toHaveLength(2)
    const reminder = /^jobwire worker: still failing: (\d+) failed requests in the last 6\d\.\d s: .*ECONNREFUSED/.exec(said[1] ?? '')
    expect(reminder).not.toBeNull()
    expect(Number(reminder?.[1])).toBeGreaterThan(retries)
    expect(Number(reminder?.[1])).toBeLessThanOrEqual(counted.claims())
    await worker.stop()
  })

  it('says when the server answers again, after one line for the outage', async () => {
    const proxy = await startTcpProxy(t.url)
    try {
      const said = captureWarnings()
      const counted = countingClaims()
      const worker = createWorker({ url: proxy.url, apiKey, pollWaitSeconds: 1, fetch: counted.fetch })
      worker.handle('across-an-outage', () => 'done')
      await worker.start()
      await until(() => counted.claims() >= 1, 'a claim')
      await proxy.down()
      const before = counted.claims()
      await until(() => counted.claims() >= before + 4, 'four claims while the server is away')
      expect(said).toHaveLength(1)
      expect(said[0]).toMatch(/^jobwire worker: claim: /)
      await proxy.up()
      const { id } = await t.createJob('across-an-outage')
      await t.waitForJob(id, (job) => job.status === 'completed')
      expect(said).toHaveLength(2)
      expect(said[1]).toMatch(/^jobwire worker: the server answers again \(\d+ failed requests over [\d.]+ s\)$/)
      await worker.stop()
    } finally {
      await proxy.close()
    }
  })

  it('still says every failure to an onError of its own', async () => {
    const timers = new ManualTimers()
    const errors: unknown[] = []
    const worker = createWorker({ url: `http://127.0.0.1:${await freePort()}`, apiKey: 'k', timers, random: () => 0.5, onError: (error) => errors.push(error) })
    worker.handle('nowhere-custom', () => null)
    await worker.start()
    await until(() => errors.length === 1, 'the first failure')
    await timers.advance(1_000)
    expect(errors.length).toBeGreaterThan(3)
    await worker.stop()
  })
})
