import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createJsonClient, startTestServer, type TestServer } from './fixtures.js'

describe('the dashboard routes', () => {
  let server: TestServer
  beforeAll(async () => {
    server = await startTestServer()
  })
  afterAll(async () => server.close())

  it('serves the dashboard page at / without a credential', async () => {
    const response = await fetch(`${server.url}/`)
    expect(response.status).toBe(200)
    expect(response.headers.get('content-type')).toMatch(/^text\/html/)
    expect(await response.text()).toMatch(/<title>Jobwire<\/title>/)
  })

  it('serves only flat asset names, so no path leaves the assets folder', async () => {
    for (const path of ['/assets/..%2Fpackage.json', '/assets/%2e%2e%2findex.html', '/assets/.hidden.js', '/assets/missing.js', '/assets/index.html']) {
      expect((await fetch(`${server.url}${path}`)).status, path).toBe(404)
    }
  })

  it('has no demo sign-in outside demo mode', async () => {
    expect((await server.api.call('POST', '/demo/session')).status).toBe(404)
  })
})

describe('the demo sign-in', () => {
  let server: TestServer
  beforeAll(async () => {
    server = await startTestServer({ demo: true })
  })
  afterAll(async () => server.close())

  it('mints a token that reads and cancels the demo user’s jobs but cannot resume or create', async () => {
    const session = await server.api.call<{ token: string; expiresAt: string; types: string[] }>('POST', '/demo/session')
    expect(session.status).toBe(200)
    expect(session.body.types).toContain('transcription')
    const asDemo = createJsonClient(server.url, session.body.token)
    try {
      const created = await server.api.call<{ id: string }>('POST', '/demo/jobs', { type: 'agent' })
      const listed = await asDemo.call<{ jobs: { id: string; owner: { tenant: string; user: string } }[] }>('GET', '/v1/jobs')
      expect(listed.status).toBe(200)
      expect(listed.body.jobs.map((job) => job.id)).toContain(created.body.id)
      expect(listed.body.jobs.every((job) => job.owner.tenant === 'demo' && job.owner.user === 'demo')).toBe(true)
      expect((await asDemo.call('POST', `/v1/jobs/${created.body.id}/cancel`, {})).status).toBe(200)
      expect((await asDemo.call('POST', `/v1/jobs/${created.body.id}/resume`, {})).status).toBe(403)
      expect((await asDemo.call('POST', '/v1/jobs', { type: 'agent' })).status).toBe(403)
    } finally {
      await asDemo.close()
    }
  })
})
