import { readFile } from 'node:fs/promises'
import type { JobState } from '@jobwire/protocol'
import { afterEach, describe, expect, it } from 'vitest'
import { configDefaults, configKeys, maxTokenTtlMs } from '../src/config.js'
import { defaultCoreLimits, defaultRetention } from '../src/options.js'
import { startTestServer, type TestServer } from './fixtures.js'

const servers: TestServer[] = []
afterEach(async () => {
  for (const server of servers.splice(0)) await server.close()
})

/** The payload of a JWT, unverified (the test only reads what the server put in it). */
function claims(token: string): { iat: number; exp: number } {
  return JSON.parse(Buffer.from(token.split('.')[1] as string, 'base64url').toString('utf8')) as { iat: number; exp: number }
}

describe('config → component options (options.ts)', () => {
  it('every option is read where the config becomes component options (options.ts, or server.ts for the node itself)', async () => {
    const read = async (file: string) => readFile(new URL(`../src/${file}`, import.meta.url), 'utf8')
    const composition = (await read('options.ts')) + (await read('server.ts'))
    const unread = configKeys.filter((key) => !new RegExp(`\\bconfig\\.${key}\\b|\\b${key}\\b[,}]`).test(composition))
    expect(unread).toEqual([])
  })

  it('the defaults components fall back to are the config schema\'s', () => {
    expect(defaultRetention).toEqual({
      maxEventsPerJob: configDefaults.maxEventsPerJob,
      ttlMs: { completed: configDefaults.ttlCompleted, failed: configDefaults.ttlFailed, cancelled: configDefaults.ttlCancelled },
    })
    expect(defaultCoreLimits).toMatchObject({
      maxTextLength: configDefaults.maxTextLength,
      maxItemsPerJob: configDefaults.maxItemsPerJob,
      maxAttempts: configDefaults.maxAttempts,
      retryBackoffMs: configDefaults.retryBackoff,
      inlineValueBytes: configDefaults.maxEventBytes,
    })
  })

  it('options set in the config reach the job service and the routes; a minted token is capped at the one maximum', async () => {
    const server = await startTestServer({ maxAttempts: 7, maxAttemptsByType: 'export=2', tokenTtl: '20s' })
    servers.push(server)
    const created = await server.api.call<JobState>('POST', '/v1/jobs', { type: 'transcription' })
    expect(created.body.maxAttempts).toBe(7)
    const exported = await server.api.call<JobState>('POST', '/v1/jobs', { type: 'export' })
    expect(exported.body.maxAttempts).toBe(2)

    const byDefault = await server.api.call<{ token: string }>('POST', '/v1/tokens', { jobIds: [created.body.id] })
    expect(byDefault.status).toBe(200)
    const minted = claims(byDefault.body.token)
    expect(minted.exp - minted.iat).toBe(20)

    const asked = await server.api.call<{ token: string }>('POST', '/v1/tokens', { jobIds: [created.body.id], ttl: 10 * 24 * 3600 })
    expect(asked.status).toBe(200)
    const capped = claims(asked.body.token)
    expect(capped.exp - capped.iat).toBe(maxTokenTtlMs / 1000)
  })
})
