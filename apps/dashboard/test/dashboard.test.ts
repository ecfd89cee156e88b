import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium, type Browser, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

/**
 * The dashboard in a real browser (Debian's Chromium, driven by playwright-core) against a real
 * `jobwire serve --demo` process. Outside CI the suite skips, saying so, when Chromium is missing.
 */
const chromiumPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const haveChromium = existsSync(chromiumPath)
const inCi = process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== 'false'
if (!haveChromium && !inCi) console.warn(`dashboard browser tests SKIPPED: no Chromium at ${chromiumPath} (apt-get install chromium, or set CHROMIUM_PATH)`)

const repo = fileURLToPath(new URL('../../../', import.meta.url))
const cli = join(repo, 'packages/server/bin/jobwire.js')
const builtDashboard = join(repo, 'packages/server/public/dashboard/index.html')
const shots = join(repo, 'test-output/dashboard')

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer()
    probe.once('error', reject)
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address()
      probe.close(() => (typeof address === 'object' && address !== null ? resolve(address.port) : reject(new Error('no port'))))
    })
  })
}

/** One `jobwire serve --demo` process; the data dir survives restarts, so jobs and the token secret do. */
class DemoServer {
  #child: ChildProcess | null = null
  #log = ''
  constructor(
    readonly dir: string,
    readonly port: number,
  ) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`
  }

  async start(): Promise<void> {
    const child = spawn(process.execPath, [cli, 'serve', '--demo', '--port', String(this.port), '--host', '127.0.0.1'], {
      cwd: this.dir,
      env: { ...process.env, NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    this.#child = child
    child.stdout?.on('data', (chunk: Buffer) => (this.#log += chunk.toString()))
    child.stderr?.on('data', (chunk: Buffer) => (this.#log += chunk.toString()))
    const deadline = Date.now() + 15_000
    while (Date.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`jobwire serve exited ${child.exitCode}:\n${this.#log}`)
      const ready = await fetch(`${this.url}/readyz`).then(
        (response) => response.ok,
        () => false,
      )
      if (ready) return
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    throw new Error(`jobwire serve did not become ready:\n${this.#log}`)
  }

  async stop(): Promise<void> {
    const child = this.#child
    this.#child = null
    if (child === null || child.exitCode !== null) return
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000)
    await exited
    clearTimeout(timer)
  }
}

describe.skipIf(!haveChromium && !inCi)('dashboard in Chromium against jobwire serve --demo', () => {
  let server: DemoServer
  let browser: Browser
  let page: Page
  let dir: string

  beforeAll(async () => {
    if (!existsSync(builtDashboard)) throw new Error(`the dashboard is not built (${builtDashboard}): run npm run build`)
    if (!haveChromium) throw new Error(`CI needs Chromium at ${chromiumPath}: .ci/run installs it`)
    mkdirSync(shots, { recursive: true })
    dir = mkdtempSync(join(tmpdir(), 'jobwire-dashboard-'))
    server = new DemoServer(dir, await freePort())
    await server.start()
    browser = await chromium.launch({
      executablePath: chromiumPath,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
    })
    page = await browser.newPage({ viewport: { width: 1100, height: 900 } })
    page.setDefaultTimeout(20_000)
  }, 30_000)

  afterAll(async () => {
    await browser?.close()
    await server?.stop()
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
  })

  const status = () => page.getByTestId('job-status')
  const connection = () => page.getByTestId('connection')

  async function startDemoJob(type: string): Promise<string> {
    const before = page.url()
    await page.getByRole('combobox', { name: 'New demo job' }).selectOption(type)
    await page.getByRole('button', { name: 'Start' }).click()
    await page.waitForURL((url) => /#\/jobs\/[^/]+$/.test(url.hash) && url.href !== before)
    return decodeURIComponent(new URL(page.url()).hash.slice('#/jobs/'.length))
  }

  it('signs in with one click and lists the demo jobs live', async () => {
    await page.goto(server.url)
    await page.getByRole('button', { name: 'Sign in to the demo' }).click()
    await expect.poll(() => connection().textContent()).toBe('live')
    await page.locator('.job-row').first().waitFor()
    // The credential lives in session storage, never in the address bar.
    expect(page.url()).not.toMatch(/token|key/i)
    expect(await page.evaluate(() => sessionStorage.getItem('jobwire.dashboard.session'))).toContain('"kind":"demo"')
    await page.getByText(/\d+ running/).waitFor()
    await page.screenshot({ path: join(shots, 'jobs-list.png'), fullPage: true })
  })

  it('fits a 375 px phone screen in dark mode', async () => {
    await page.setViewportSize({ width: 375, height: 740 })
    await page.emulateMedia({ colorScheme: 'dark' })
    await page.locator('.job-row').first().waitFor()
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(375)
    await page.screenshot({ path: join(shots, 'jobs-list-375-dark.png'), fullPage: true })
    await page.setViewportSize({ width: 1100, height: 900 })
    await page.emulateMedia({ colorScheme: 'light' })
  })

  it('starts a transcription job and watches it complete with a bar per file', async () => {
    await startDemoJob('transcription')
    await expect.poll(() => status().textContent(), { timeout: 40_000 }).toBe('completed')
    const items = page.locator('[data-item-status]')
    expect(await items.count()).toBeGreaterThan(1)
    expect(await page.locator('[data-item-status="completed"]').count()).toBe(await items.count())
    expect(await page.getByRole('progressbar', { name: /progress/ }).count()).toBeGreaterThan(await items.count())
    await page.getByRole('heading', { name: 'Result' }).waitFor()
    await page.getByRole('heading', { name: 'Stages' }).waitFor()
    await page.screenshot({ path: join(shots, 'job-page.png'), fullPage: true })
    await page.setViewportSize({ width: 375, height: 740 })
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(375)
    await page.screenshot({ path: join(shots, 'job-page-375.png'), fullPage: true })
    await page.setViewportSize({ width: 1100, height: 900 })
  })

  it('cancels a running agent job, then resumes it', async () => {
    await startDemoJob('agent')
    await expect.poll(() => status().textContent(), { timeout: 30_000 }).toBe('running')
    await page.getByRole('button', { name: 'Cancel' }).click()
    await expect.poll(() => status().textContent()).toBe('cancelled')
    await page.getByRole('button', { name: 'Resume' }).click()
    await expect.poll(() => status().textContent(), { timeout: 30_000 }).toMatch(/queued|running|completed/)
  })

  it('recovers by itself when the server restarts while a job streams', async () => {
    const jobId = await startDemoJob('agent')
    await expect.poll(() => status().textContent(), { timeout: 30_000 }).toBe('running')
    await page.getByTestId('job-text').filter({ hasText: /\S/ }).waitFor()
    const textLength = async () => ((await page.getByTestId('job-text').textContent()) ?? '').length
    await server.stop()
    await expect.poll(() => connection().textContent(), { timeout: 15_000 }).toMatch(/reconnecting|offline|polling/)
    await server.start()
    await expect.poll(() => connection().textContent(), { timeout: 30_000 }).toBe('live')
    // The same page keeps following the same job, without a reload: its text grows again.
    expect(new URL(page.url()).hash).toBe(`#/jobs/${jobId}`)
    const before = await textLength()
    await expect.poll(async () => (await status().textContent()) === 'completed' || (await textLength()) > before, { timeout: 30_000 }).toBe(true)
  })
}, 90_000)
