// @vitest-environment happy-dom
/**
 * examples/analysis-react: the example's own component and worker against a real `jobwire serve`
 * process, the component rendered in happy-dom.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { cleanup, render, screen } from '@testing-library/react'
import { fetch as nodeFetch } from 'undici'
import { JobwireBackend } from '@jobwire/backend'
import { createJobwireClient, JobwireProvider } from '@jobwire/react'
import { spawnJobwire, type ServerProcess } from '../../packages/react/test/server-process.js'
import { Analysis } from '../analysis-react/Analysis.js'

const fetch = nodeFetch as unknown as typeof globalThis.fetch
/** The worker is a plain ES module (runnable without a build step); loaded by path and typed here. */
const load = <Module,>(path: string): Promise<Module> => import(/* @vite-ignore */ new URL(path, import.meta.url).href) as Promise<Module>

let server: ServerProcess
beforeAll(async () => {
  ;(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = false
  server = await spawnJobwire()
})
afterAll(async () => {
  cleanup()
  await server?.close()
})

describe('examples/analysis-react', () => {
  it('joins an analysis late, showing where it is now, and follows it to its result by polling only', async () => {
    const { analysisWorker, type } = await load<{ analysisWorker: (options: { url: string; apiKey: string; stepMs: number; fetch: typeof globalThis.fetch }) => { start(): Promise<void>; stop(options: { timeoutMs: number }): Promise<void> }; type: string }>('../analysis-react/worker.mjs')
    const worker = analysisWorker({ url: server.url, apiKey: server.key, stepMs: 60, fetch })
    await worker.start()
    const backend = new JobwireBackend({ url: server.url, apiKey: server.key, fetch })
    const job = await backend.createJob({ type, input: { documentId: 'contract-7' }, owner: { tenant: 'acme', user: 'ann' } })
    // Late join: the page opens once the analysis is past parsing.
    await expect.poll(async () => (await backend.getJob(job.id)).progress.stage, { timeout: 20_000 }).toMatch(/^(extracting|scoring|summarizing)$/)
    const { token } = await backend.mintToken({ jobIds: [job.id] })
    // Polling, as when neither WebSocket nor SSE gets through (the example page's `?transports=poll`).
    const client = createJobwireClient({ url: server.url, fetch, getToken: async () => token, transports: ['poll'], pollIntervalMs: 100 })
    try {
      render(
        <JobwireProvider client={client}>
          <Analysis jobId={job.id} />
        </JobwireProvider>,
      )
      const first = await screen.findByText(/^(extracting|scoring|summarizing): \d+%/)
      expect(first.textContent).not.toMatch(/^parsing/)
      expect((await screen.findByTestId('connection')).textContent).toBe('followed: polling')
      await screen.findByText('Risk low: 37 clauses, 2 flagged (followed: polling)', undefined, { timeout: 30_000 })
      expect(client.transport).toBe('poll')
    } finally {
      cleanup()
      client.close()
      await worker.stop({ timeoutMs: 5_000 })
    }
  })
})
