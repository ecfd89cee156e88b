// @vitest-environment happy-dom
import { describe, expect, it } from 'vitest'
import { render, screen } from '@testing-library/react'
import { fetch as nodeFetch } from 'undici'
import WebSocket from 'ws'
import { createJobwireClient, type JobState, type JobwireClient, type WebSocketConstructor } from '@jobwire/client'
import { JobwireProvider, useJobResult } from '@jobwire/react'
import { spawnJobwire, type ServerProcess } from './server-process.js'
import { liveDomSuite } from './dom-suite.js'

let server: ServerProcess
let client: JobwireClient | null = null
liveDomSuite(() => [client, server])

const resultRequests: string[] = []
const recordingFetch = ((input: string, init?: RequestInit) => {
  if (input.endsWith('/result')) resultRequests.push(input)
  return nodeFetch(input, init as never)
}) as unknown as typeof fetch

function Transcript({ jobId }: { jobId: string }) {
  const view = useJobResult(jobId)
  if (view.status !== 'ready') return <p>{view.status}</p>
  const { transcript } = view.result as { transcript: string }
  return <p data-testid="length">{transcript.length}</p>
}

describe('useJobResult', () => {
  it('shows a result too large for an event once the job completes, fetched once; a small one with no request', async () => {
    server = await spawnJobwire()
    client = createJobwireClient({ url: server.url, getToken: () => server.key, fetch: recordingFetch, WebSocket: WebSocket as unknown as WebSocketConstructor })
    const big = (await server.call<JobState>('POST', '/v1/jobs', { type: 'long', dispatch: false })).body
    const small = (await server.call<JobState>('POST', '/v1/jobs', { type: 'short', dispatch: false })).body
    render(
      <JobwireProvider client={client}>
        <Transcript jobId={big.id} />
        <Transcript jobId={small.id} />
      </JobwireProvider>,
    )
    expect(await screen.findAllByText('pending')).toHaveLength(2)
    const transcript = 'x'.repeat(300_000)
    expect((await server.call('POST', `/v1/jobs/${big.id}/events`, { type: 'completed', result: { transcript } })).status).toBe(200)
    expect((await server.call('POST', `/v1/jobs/${small.id}/events`, { type: 'completed', result: { transcript: 'short' } })).status).toBe(200)
    await expect.poll(() => screen.queryAllByTestId('length').length).toBe(2)
    expect(screen.getAllByTestId('length').map((node) => node.textContent).sort()).toEqual(['300000', '5'])
    expect(resultRequests).toEqual([`${server.url}/v1/jobs/${big.id}/result`])
  })
})
