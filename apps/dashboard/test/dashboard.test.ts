import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium, type Browser, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { freePort } from '../../../test/support/free-port.js'

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
const axePath = createRequire(import.meta.url).resolve('axe-core/axe.min.js')

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
    // A high creation limit: one test creates 2,000 jobs for a few owners in seconds. No demo failures at
    // random: a test that waits for a transcription to complete must not see one fail one run in ten.
    const args = [cli, 'serve', '--demo', '--port', String(this.port), '--host', '127.0.0.1', '--create-limit', '100000', '--demo-failure-rate', '0']
    const child = spawn(process.execPath, args, {
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
  /** WebSockets the page opened, to tell "followed on the same socket" from "reconnected". */
  let socketsOpened = 0

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
    page.on('websocket', () => socketsOpened++)
  }, 30_000)

  afterAll(async () => {
    await browser?.close()
    await server?.stop()
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
  })

  const status = () => page.getByTestId('job-status')
  const connection = () => page.getByTestId('connection')
  const rows = () => page.locator('.job-row')
  const rowValues = (attribute: string) => rows().evaluateAll((els, name) => els.map((el) => el.getAttribute(name) ?? ''), attribute)
  const adminKey = () => readFileSync(join(dir, '.jobwire', 'admin.key'), 'utf8').trim()

  async function startDemoJob(type: string): Promise<string> {
    const before = page.url()
    await page.getByRole('combobox', { name: 'New demo job' }).selectOption(type)
    await page.getByRole('button', { name: 'Start' }).click()
    await page.waitForURL((url) => /#\/jobs\/[^/]+$/.test(url.hash) && url.href !== before)
    return decodeURIComponent(new URL(page.url()).hash.slice('#/jobs/'.length))
  }

  /** The whole page (up to 2,400 px), with the sticky status bar at its foot rather than over a row. */
  async function screenshot(name: string): Promise<void> {
    const size = page.viewportSize() ?? { width: 1100, height: 900 }
    const height = Math.min(2400, Math.max(size.height, await page.evaluate(() => document.documentElement.scrollHeight)))
    await page.setViewportSize({ width: size.width, height })
    await page.screenshot({ path: join(shots, name) })
    await page.setViewportSize(size)
  }

  /** axe-core's serious and critical violations on the page as it is. */
  async function accessibilityProblems(): Promise<string[]> {
    await page.addScriptTag({ path: axePath })
    return page.evaluate(async () => {
      type Result = { violations: { id: string; impact?: string | null; help: string; nodes: { target: unknown[] }[] }[] }
      const axe = (window as unknown as { axe: { run(context: Document, options: object): Promise<Result> } }).axe
      const result = await axe.run(document, { resultTypes: ['violations'] })
      return result.violations
        .filter((violation) => violation.impact === 'serious' || violation.impact === 'critical')
        .map((violation) => `${violation.id} (${violation.impact}): ${violation.help} at ${violation.nodes.map((node) => node.target.join(' ')).join(', ')}`)
    })
  }

  async function auditInBothSchemes(where: string): Promise<void> {
    for (const colorScheme of ['light', 'dark'] as const) {
      await page.emulateMedia({ colorScheme })
      expect(await accessibilityProblems(), `${where}, ${colorScheme}`).toEqual([])
    }
    await page.emulateMedia({ colorScheme: 'light' })
  }

  async function focusRing(): Promise<{ style: string; width: number; tag: string }> {
    return page.evaluate(() => {
      const element = document.activeElement as HTMLElement
      const style = getComputedStyle(element)
      return { style: style.outlineStyle, width: parseFloat(style.outlineWidth), tag: element.tagName.toLowerCase() }
    })
  }

  async function signInWithKey(key: string): Promise<void> {
    await page.getByRole('button', { name: 'Sign out' }).click()
    await page.goto(`${server.url}/#/`)
    await page.getByLabel('API key or subscription token').fill(key)
    await page.getByRole('button', { name: 'Sign in', exact: true }).click()
  }

  /** Creates `count` jobs of three types for four owners through the API, 50 at a time; some completed, some failed. */
  async function seedJobs(count: number): Promise<{ id: string; type: string; owner: string; status: string }[]> {
    const key = adminKey()
    const owners = ['acme:alice', 'acme:bob', 'globex:carol', 'initech:dave']
    const types = ['export', 'import', 'report']
    const call = async <T>(path: string, body: unknown): Promise<T> => {
      const response = await fetch(`${server.url}${path}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      })
      if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`)
      return (await response.json()) as T
    }
    const created: { id: string; type: string; owner: string; status: string }[] = new Array(count)
    for (let start = 0; start < count; start += 50) {
      await Promise.all(
        Array.from({ length: Math.min(50, count - start) }, async (_, offset) => {
          const n = start + offset
          const owner = owners[n % owners.length] as string
          const [tenant, user] = owner.split(':')
          const type = types[n % types.length] as string
          const job = await call<{ id: string }>('/v1/jobs', { type, owner: { tenant, user }, input: { n }, dispatch: n % 2 === 0 })
          let status = 'queued'
          if (n % 10 === 3) {
            await call(`/v1/jobs/${job.id}/events`, { events: [{ type: 'progress', stage: 'writing', percent: 60 }, { type: 'completed', result: { n } }] })
            status = 'completed'
          } else if (n % 10 === 6) {
            await call(`/v1/jobs/${job.id}/events`, { type: 'failed', code: 'quota_exceeded', message: 'The export quota is used up' })
            status = 'failed'
          }
          created[n] = { id: job.id, type, owner, status }
        }),
      )
    }
    return created
  }

  it('signs in with one click and lists the demo jobs live', async () => {
    await page.goto(server.url)
    await page.getByRole('button', { name: 'Sign in to the demo' }).click()
    await expect.poll(() => connection().textContent()).toBe('live')
    await rows().first().waitFor()
    // The credential lives in session storage, never in the address bar.
    expect(page.url()).not.toMatch(/token|key/i)
    expect(await page.evaluate(() => sessionStorage.getItem('jobwire.dashboard.session'))).toContain('"kind":"demo"')
    await page.getByText(/\d+ running/).waitFor()
    expect(new Set(await rowValues('data-owner'))).toEqual(new Set(['demo:demo']))
    await screenshot('jobs-list.png')
    await page.emulateMedia({ colorScheme: 'dark' })
    await screenshot('jobs-list-dark.png')
    await page.emulateMedia({ colorScheme: 'light' })
  })

  it('fits a 375 px phone screen in dark mode', async () => {
    await page.setViewportSize({ width: 375, height: 740 })
    await page.emulateMedia({ colorScheme: 'dark' })
    await rows().first().waitFor()
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(375)
    await screenshot('jobs-list-375-dark.png')
    await page.setViewportSize({ width: 1100, height: 900 })
    await page.emulateMedia({ colorScheme: 'light' })
  })

  it('is usable from the keyboard alone, with a visible focus ring', async () => {
    await page.goto(`${server.url}/#/`)
    await rows().first().waitFor()
    await page.keyboard.press('Tab')
    await expect.poll(() => page.evaluate(() => document.activeElement?.textContent)).toBe('Skip to content')
    expect(await focusRing()).toMatchObject({ style: 'solid', width: 3 })
    await page.keyboard.press('Enter')
    await expect.poll(() => page.evaluate(() => document.activeElement?.id)).toBe('main')
    // From the content: the filters, then the jobs.
    const onRow = () => page.evaluate(() => document.activeElement?.closest('.job-row') !== null)
    for (let presses = 0; presses < 12 && !(await onRow()); presses++) await page.keyboard.press('Tab')
    expect(await onRow()).toBe(true)
    expect(await focusRing()).toMatchObject({ style: 'solid', width: 3, tag: 'a' })
    await page.keyboard.press('Enter')
    await page.waitForURL(/#\/jobs\//)
    await status().waitFor()
    // After navigating, focus starts at the new page's content; the way back is the next stop.
    await expect.poll(() => page.evaluate(() => document.activeElement?.id)).toBe('main')
    await page.keyboard.press('Tab')
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe('← All jobs')
    await page.keyboard.press('Enter')
    await page.waitForURL((url) => url.hash === '#/')
    await rows().first().waitFor()
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
    // The stage plan's timeline: every stage ran, and the files' metadata is shown.
    await page.getByRole('heading', { name: 'Plan' }).waitFor()
    expect(await page.locator('[data-plan-stage]').evaluateAll((rows) => rows.map((row) => `${row.getAttribute('data-plan-stage')}:${row.getAttribute('data-stage-status')}`))).toEqual([
      'validating:done',
      'decoding:done',
      'transcribing:done',
      'synthesizing:done',
    ])
    expect(await page.getByLabel('Progress metadata').textContent()).toMatch(/filesDone\d+totalFiles\d+/)
    await screenshot('job-page.png')
    await page.emulateMedia({ colorScheme: 'dark' })
    await screenshot('job-page-dark.png')
    await page.emulateMedia({ colorScheme: 'light' })
    await page.setViewportSize({ width: 375, height: 740 })
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(375)
    await screenshot('job-page-375.png')
    await page.setViewportSize({ width: 1100, height: 900 })
  })

  it('has no serious or critical accessibility violations on the list and a job page, light and dark (axe-core)', async () => {
    await auditInBothSchemes(`job page ${page.url()}`)
    await page.goto(`${server.url}/#/`)
    await rows().first().waitFor()
    await auditInBothSchemes('jobs list')
  })

  it('cancels a running agent job, resumes it, and follows it live again on its page and in the list', async () => {
    const jobId = await startDemoJob('agent')
    await expect.poll(() => status().textContent(), { timeout: 30_000 }).toBe('running')
    const text = page.getByTestId('job-text')
    await text.filter({ hasText: /\S/ }).waitFor()
    await page.getByRole('button', { name: 'Cancel' }).click()
    await expect.poll(() => status().textContent()).toBe('cancelled')
    const textBefore = ((await text.textContent()) ?? '').length
    const sockets = socketsOpened
    await page.getByRole('button', { name: 'Resume' }).click()
    // The same page follows the resumed job on the same socket: a new attempt, then its text growing.
    await expect.poll(() => status().textContent(), { timeout: 30_000 }).toBe('running')
    await expect.poll(() => page.getByTestId('attempts').textContent()).toMatch(/^2 of /)
    await expect.poll(async () => ((await text.textContent()) ?? '').length, { timeout: 30_000 }).toBeGreaterThan(textBefore)
    expect(socketsOpened).toBe(sockets)
    // And so does its row in the list: running, then settled once it completes.
    await page.getByRole('link', { name: '← All jobs' }).click()
    const row = page.locator(`[data-job-id="${jobId}"]`)
    await expect.poll(() => row.getAttribute('data-status')).toMatch(/running|completed/)
    const progress = row.getByRole('progressbar')
    const percent = await progress.getAttribute('aria-valuenow')
    await expect
      .poll(async () => (await row.getAttribute('data-status')) === 'completed' || (await progress.getAttribute('aria-valuenow')) !== percent, { timeout: 30_000 })
      .toBe(true)
    expect(await row.textContent()).toContain('attempt 2')
  })

  it('shows an admin key 2,000 jobs of every owner a page at a time, filtered by owner, type and status, new ones at the top', async () => {
    const seeded = await seedJobs(2000)
    const newestFirst = (match: (job: (typeof seeded)[number]) => boolean) => seeded.filter(match).map((job) => job.id).reverse()
    await signInWithKey(adminKey())
    await expect.poll(() => page.getByTestId('scope').textContent()).toBe('all owners')
    await expect.poll(() => rows().count()).toBe(50)
    expect(new Set(await rowValues('data-owner')).size).toBeGreaterThan(2)
    await expect.poll(() => page.getByTestId('running-count').textContent()).toMatch(/^\d+\+? running$/)
    await screenshot('jobs-list-admin.png')

    // One tenant, page by page: the newest 50, then 50 older; never all 500 at once.
    const owner = page.getByLabel('Owner', { exact: true })
    await owner.fill('globex')
    await owner.press('Enter')
    await page.waitForURL((url) => url.hash === '#/?owner=globex')
    await expect.poll(() => page.getByTestId('scope').textContent()).toBe('tenant globex')
    const globex = newestFirst((job) => job.owner.startsWith('globex:'))
    await expect.poll(() => rowValues('data-job-id')).toEqual(globex.slice(0, 50))
    await page.getByRole('button', { name: 'Load older jobs' }).click()
    await expect.poll(() => rowValues('data-job-id')).toEqual(globex.slice(0, 100))
    await expect.poll(() => page.getByTestId('list-count').textContent()).toBe('100 jobs shown, newest first')

    // Narrowed by type, then by status, on the server.
    const type = page.getByLabel('Type', { exact: true })
    await type.fill('report')
    await type.press('Enter')
    await expect.poll(() => rowValues('data-job-id')).toEqual(newestFirst((job) => job.owner.startsWith('globex:') && job.type === 'report').slice(0, 50))
    await page.getByLabel('Status', { exact: true }).selectOption('failed')
    const failedReports = newestFirst((job) => job.owner.startsWith('globex:') && job.type === 'report' && job.status === 'failed')
    expect(failedReports.length).toBeGreaterThan(0)
    await expect.poll(() => rowValues('data-job-id')).toEqual(failedReports.slice(0, 50))
    expect(new Set(await rowValues('data-status'))).toEqual(new Set(['failed']))
    await page.getByRole('button', { name: 'Clear filters' }).click()
    await expect.poll(() => page.getByTestId('scope').textContent()).toBe('all owners')

    // A job created now appears at the top of the all-owners view without a reload.
    const call = async (path: string, body: unknown) =>
      fetch(`${server.url}${path}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${adminKey()}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      }).then((response) => response.json() as Promise<{ id: string }>)
    const fresh = await call('/v1/jobs', { type: 'export', owner: { tenant: 'initech', user: 'dave' }, dispatch: false })
    await expect.poll(async () => (await rowValues('data-job-id')).includes(fresh.id), { timeout: 20_000 }).toBe(true)

    // One user's jobs come over the user feed: a new one at the top, then live, then settled.
    await owner.fill('acme:alice')
    await owner.press('Enter')
    await expect.poll(() => page.getByTestId('scope').textContent()).toBe("acme:alice's jobs")
    await expect.poll(() => rows().count()).toBe(50)
    const hers = await call('/v1/jobs', { type: 'report', owner: { tenant: 'acme', user: 'alice' }, dispatch: false })
    await expect.poll(async () => (await rowValues('data-job-id'))[0]).toBe(hers.id)
    const row = page.locator(`[data-job-id="${hers.id}"]`)
    await call(`/v1/jobs/${hers.id}/events`, { type: 'progress', stage: 'rendering', percent: 40 })
    await expect.poll(() => row.getByRole('progressbar').getAttribute('aria-valuenow')).toBe('40')
    await call(`/v1/jobs/${hers.id}/events`, { type: 'completed', result: { pages: 3 } })
    await expect.poll(() => row.getAttribute('data-status')).toBe('completed')
    expect(new Set(await rowValues('data-owner'))).toEqual(new Set(['acme:alice']))
  })

  it('shows a person’s token only its own jobs among thousands, whatever the address asks for', async () => {
    await page.getByRole('button', { name: 'Sign out' }).click()
    expect(await accessibilityProblems()).toEqual([])
    await page.getByRole('button', { name: 'Sign in to the demo' }).click()
    await page.goto(`${server.url}/#/?owner=globex`)
    await expect.poll(() => page.getByTestId('scope').textContent()).toBe("demo:demo, this credential's own jobs")
    await rows().first().waitFor()
    expect(new Set(await rowValues('data-owner'))).toEqual(new Set(['demo:demo']))
    expect(await page.getByLabel('Owner', { exact: true }).count()).toBe(0)
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
