import { execFileSync, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'

/**
 * The Dockerfile: the image builds and `docker run` of it serves the dashboard and the API. Runs only
 * where a Docker engine answers (`docker info`); elsewhere it is skipped, saying so.
 */
const repo = fileURLToPath(new URL('../', import.meta.url))
const docker = (args: string[], timeoutMs = 60_000): string => execFileSync('docker', args, { cwd: repo, encoding: 'utf8', timeout: timeoutMs, stdio: ['ignore', 'pipe', 'pipe'] }).trim()
const haveDocker = spawnSync('docker', ['info'], { stdio: 'ignore', timeout: 20_000 }).status === 0
if (!haveDocker) console.warn('docker image test SKIPPED: no Docker engine answers `docker info` here')

describe.skipIf(!haveDocker)('the Docker image', () => {
  const tag = `jobwire-test:${randomBytes(4).toString('hex')}`
  let container: string | null = null

  afterAll(() => {
    if (container !== null) spawnSync('docker', ['rm', '-f', container], { stdio: 'ignore' })
    spawnSync('docker', ['rmi', '-f', tag], { stdio: 'ignore' })
  })

  it('builds, and `docker run … serve --demo` serves the dashboard, the API and /readyz', { timeout: 1_200_000 }, async () => {
    docker(['build', '-t', tag, '.'], 1_140_000)
    container = docker(['run', '-d', '-p', '127.0.0.1::7070', '-e', 'JOBWIRE_API_KEY=docker-test-admin-key-123', tag, 'serve', '--demo'])
    const port = /:(\d+)$/m.exec(docker(['port', container, '7070/tcp']))?.[1]
    expect(port).toBeDefined()
    const url = `http://127.0.0.1:${port}`
    await expect
      .poll(() => fetch(`${url}/readyz`).then((response) => response.status, () => 0), { timeout: 60_000, interval: 500 })
      .toBe(200)
    const page = await fetch(`${url}/`)
    expect(page.status).toBe(200)
    expect(await page.text()).toContain('<title>Jobwire</title>')
    const jobs = await fetch(`${url}/v1/jobs`, { headers: { authorization: 'Bearer docker-test-admin-key-123' } })
    expect(jobs.status).toBe(200)
    expect(docker(['exec', container, 'id', '-un'])).toBe('node')
  })
})
