// @vitest-environment happy-dom
/**
 * The worked example of docs/react.md, run as written as far as a test can: the backend routes (on node:http
 * instead of Express), the client with its getToken, and the Analysis component (the runnable example's own file), against a real
 * Jobwire server. Differences: absolute URLs and Node's fetch and ws, which a browser has built in.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { useState } from 'react'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { cleanup, render, screen, waitFor } from '@testing-library/react'
import { fetch as nodeFetch } from 'undici'
import WebSocket from 'ws'
import { JobwireBackend, mintSubscriptionToken } from '@jobwire/backend'
import { createJobwireClient, JobwireError, JobwireProvider, type JobwireClient } from '@jobwire/react'
import type { WebSocketConstructor } from '@jobwire/client'
import { Analysis } from '../../../examples/analysis-react/Analysis.js'
import { spawnJobwire, type ServerProcess } from './server-process.js'

const fetch = nodeFetch as unknown as typeof globalThis.fetch
const JOBWIRE_TOKEN_SECRET = 'readme-example-token-secret-0123456789ab'
let server: ServerProcess
let backend: Server
let backendUrl = ''
let jobwire: JobwireClient

beforeAll(async () => {
  ;(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = false
  server = await spawnJobwire({ JOBWIRE_TOKEN_SECRET })
  const key = await server.call<{ key: string }>('POST', '/v1/keys', { name: 'app', role: 'backend', tenant: 'acme' })

  // ---- server.ts of the example
  const jobwireBackend = new JobwireBackend({ url: server.url, apiKey: key.body.key, fetch })
  const tokenFor = (user: { org: string; id: string }) =>
    mintSubscriptionToken({ secret: JOBWIRE_TOKEN_SECRET, tenant: user.org, user: user.id, rights: ['read', 'cancel'] }).token
  const requireLogin = (req: IncomingMessage) => (req.headers['x-user'] === 'ann' ? { org: 'acme', id: 'ann', mayAnalyze: true } : null)
  backend = createServer((req, res) => {
    const user = requireLogin(req)
    const send = (status: number, body: unknown) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body))
    if (user === null) return send(401, { error: 'sign in' })
    let raw = ''
    req.on('data', (chunk) => (raw += chunk))
    req.on('end', async () => {
      if (req.url === '/api/analyses') {
        if (!user.mayAnalyze) return send(403, { error: 'not allowed' })
        const body = JSON.parse(raw) as { documentId: string }
        const job = await jobwireBackend.createJob({ type: 'analysis', input: { documentId: body.documentId }, owner: { tenant: user.org, user: user.id } })
        return send(200, { jobId: job.id, token: tokenFor(user) })
      }
      if (req.url === '/api/jobwire-token') return send(200, { token: tokenFor(user) })
      send(404, {})
    })
  })
  await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve))
  backendUrl = `http://127.0.0.1:${(backend.address() as AddressInfo).port}`
})

afterAll(async () => {
  cleanup()
  jobwire?.close()
  await new Promise((resolve) => backend?.close(resolve))
  await server?.close()
})

const asAnn = { 'x-user': 'ann' }
let tokenCalls = 0

it('creates a job through the backend route and shows it live with useJob until its result', async () => {
  // ---- App.tsx of the example (Analysis is examples/analysis-react/Analysis.tsx)
  let latest: string | null = null
  jobwire = createJobwireClient({
    url: server.url,
    fetch,
    WebSocket: WebSocket as unknown as WebSocketConstructor,
    getToken: async () => {
      tokenCalls++
      const first = latest
      latest = null
      if (first !== null) return first
      const response = await fetch(`${backendUrl}/api/jobwire-token`, { method: 'POST', headers: asAnn })
      if (response.status === 401 || response.status === 403) throw new JobwireError('unauthorized')
      return ((await response.json()) as { token: string }).token
    },
  })

  function App() {
    return (
      <JobwireProvider client={jobwire}>
        <StartAnalysis documentId="doc-1" />
      </JobwireProvider>
    )
  }

  function StartAnalysis({ documentId }: { documentId: string }) {
    const [jobId, setJobId] = useState<string | null>(null)
    const start = async () => {
      const response = await fetch(`${backendUrl}/api/analyses`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...asAnn },
        body: JSON.stringify({ documentId }),
      })
      const { jobId, token } = (await response.json()) as { jobId: string; token: string }
      latest = token
      setJobId(jobId)
    }
    return jobId === null ? <button onClick={start}>Analyze</button> : <Analysis jobId={jobId} />
  }

  render(<App />)
  screen.getByText('Analyze').click()
  await screen.findByText('Queued, 1 ahead')
  const jobs = await server.call<{ jobs: { id: string }[] }>('GET', '/v1/jobs?owner=acme:ann')
  const jobId = jobs.body.jobs[0]?.id as string
  await server.call('POST', `/v1/jobs/${jobId}/events`, { events: [{ type: 'progress', stage: 'reading', percent: 30 }] })
  await screen.findByText(/reading: 30%/)
  await server.call('POST', `/v1/jobs/${jobId}/events`, { events: [{ type: 'completed', result: { risk: 'low', clauses: 12, flagged: [4] } }] })
  await waitFor(() => expect(screen.getByText(/Risk low: 12 clauses, 1 flagged/)).toBeTruthy())
  // The token that came with the answer was used first; no second one was needed.
  expect(tokenCalls).toBe(1)
  expect(jobwire.transport).toBe('ws')
})
