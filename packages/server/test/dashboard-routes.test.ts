import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createJsonClient, startTestServer, type TestServer } from './fixtures.js'

const built = fileURLToPath(new URL('../public/dashboard/', import.meta.url))

/** The built dashboard's page and the hashed assets it names (as `npm run build` leaves them). */
function builtDashboard(): { index: string; assets: string[] } {
  if (!existsSync(join(built, 'index.html'))) throw new Error(`the dashboard is not built (${built}): run npm run build`)
  const index = readFileSync(join(built, 'index.html'), 'utf8')
  return { index, assets: [...index.matchAll(/"\/assets\/([\w.-]+)"/g)].map((match) => match[1] as string) }
}

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

  it('serves the page no-cache and the hashed assets immutable, each with ETag and Last-Modified, and answers a revalidation 304', async () => {
    const { index, assets } = builtDashboard()
    const page = await fetch(`${server.url}/`)
    expect(page.headers.get('cache-control')).toBe('no-cache')
    expect(await page.text()).toBe(index)
    expect(assets.map((name) => name.replace(/^.*\./, '')).sort()).toEqual(['css', 'js'])
    const types = { js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8' }
    for (const [path, cacheControl, type] of [
      ['/', 'no-cache', 'text/html; charset=utf-8'],
      ...assets.map((name) => [`/assets/${name}`, 'public, max-age=31536000, immutable', types[name.replace(/^.*\./, '') as 'js' | 'css']] as const),
    ] as const) {
      const first = await fetch(`${server.url}${path}`)
      expect(first.status, path).toBe(200)
      expect(first.headers.get('content-type'), path).toBe(type)
      expect(first.headers.get('cache-control'), path).toBe(cacheControl)
      const etag = first.headers.get('etag')
      const lastModified = first.headers.get('last-modified')
      expect(etag, path).toMatch(/^W\/".+"$/)
      expect(Date.parse(lastModified ?? ''), path).not.toBeNaN()
      if (path !== '/') expect(Buffer.from(await first.arrayBuffer()).equals(readFileSync(join(built, path))), path).toBe(true)
      else await first.arrayBuffer()
      // As a browser revalidates (fetch() would add Cache-Control: no-cache, which asks for the full answer).
      const byTag = await request(`${server.url}${path}`, { headers: { 'if-none-match': etag as string } })
      expect(byTag.statusCode, path).toBe(304)
      expect(await byTag.body.text()).toBe('')
      const byDate = await request(`${server.url}${path}`, { headers: { 'if-modified-since': lastModified as string } })
      expect(byDate.statusCode, path).toBe(304)
      await byDate.body.dump()
      const head = await fetch(`${server.url}${path}`, { method: 'HEAD' })
      expect(head.status, path).toBe(200)
      expect(head.headers.get('etag'), path).toBe(etag)
    }
  })

  it('answers a missing asset with route_not_found, in the API\'s error body', async () => {
    const missing = await fetch(`${server.url}/assets/index-00000000.js`)
    expect(missing.status).toBe(404)
    expect(((await missing.json()) as { error: { code: string } }).error.code).toBe('route_not_found')
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
