// @vitest-environment happy-dom
import { StrictMode, useState, type ReactNode } from 'react'
import { describe, expect, it } from 'vitest'
import { render, screen, waitFor, act } from '@testing-library/react'
import { fetch as nodeFetch } from 'undici'
import WebSocket from 'ws'
import { mintSubscriptionToken } from '@jobwire/backend'
import { createJobwireClient, type JobState, type JobwireClient, type WebSocketConstructor } from '@jobwire/client'
import { JobwireProvider, useJob, useJobs, useMyJobs, type JobView } from '@jobwire/react'
import { ManualTimers } from '../../../test/support/manual-timers.js'
import { spawnJobwire, type ServerProcess } from './server-process.js'
import { liveDomSuite } from './dom-suite.js'

const secret = 'react-suite-token-secret-0123456789abcdef'
let server: ServerProcess
let client: JobwireClient | null = null
liveDomSuite(() => [client, server])

/** `ws` sockets, remembered so a test can count and inspect them. */
function sockets(): { WebSocket: WebSocketConstructor; list: WebSocket[] } {
  const list: WebSocket[] = []
  class Recorded extends WebSocket {
    constructor(url: string) {
      super(url)
      list.push(this)
    }
  }
  return { WebSocket: Recorded as unknown as WebSocketConstructor, list }
}

/** A WebSocket that never gets through (as behind a proxy that blocks upgrades). */
class Blocked extends WebSocket {
  constructor() {
    super('ws://127.0.0.1:9/v1/ws')
  }
}

let requests = 0
const countingFetch = ((input: string, init?: RequestInit) => {
  requests++
  return nodeFetch(input, init as never)
}) as unknown as typeof fetch

function makeClient(
  options: { WebSocket?: WebSocketConstructor; getToken?: () => string; transports?: ('ws' | 'sse' | 'poll')[]; clock?: ManualTimers } = {},
): JobwireClient {
  client = createJobwireClient({
    url: server.url,
    getToken: options.getToken ?? (() => server.key),
    fetch: countingFetch,
    WebSocket: options.WebSocket ?? sockets().WebSocket,
    lingerMs: 50,
    pollIntervalMs: 100,
    ...(options.transports === undefined ? {} : { transports: options.transports }),
    ...(options.clock === undefined ? {} : { timers: options.clock, now: () => (options.clock as ManualTimers).now() }),
  })
  return client
}

async function createJob(body: Record<string, unknown> = {}): Promise<JobState> {
  return (await server.call<JobState>('POST', '/v1/jobs', { type: 'analysis', dispatch: false, ...body })).body
}

async function append(jobId: string, events: unknown[]): Promise<void> {
  const answer = await server.call('POST', `/v1/jobs/${jobId}/events`, { events })
  expect(answer.status).toBe(200)
}

/** What a status bar would render for a job, one line. */
function describeView(job: JobView): string {
  switch (job.status) {
    case 'idle':
      return 'no job'
    case 'loading':
      return 'loading'
    case 'queued':
      return `queued`
    case 'running':
      return `running ${job.progress.stage ?? '-'} ${job.progress.percent ?? 0}% "${job.text}" ${job.items.length} items`
    case 'completed':
      return `completed ${JSON.stringify(job.result)}`
    case 'failed':
      return `failed ${job.error.code}`
    case 'cancelled':
      return 'cancelled'
    case 'error':
      return `error ${job.error.code}`
  }
}

/** Renders `view` with client `c` under StrictMode, which runs every effect twice on mount. */
function renderStrict(c: JobwireClient, view: ReactNode) {
  return render(
    <StrictMode>
      <JobwireProvider client={c}>{view}</JobwireProvider>
    </StrictMode>,
  )
}

function JobStatus({ id }: { id: string | null }) {
  const job = useJob(id)
  return (
    <div>
      <p data-testid="status">{describeView(job)}</p>
      <p data-testid="connection">{job.connection}</p>
    </div>
  )
}

describe('useJob', () => {
  it('shows a job live from its snapshot to its result under StrictMode, on one socket, and stops listening after the end', async () => {
    server = await spawnJobwire()
    const ws = sockets()
    const clock = new ManualTimers(Date.now())
    const c = makeClient({ WebSocket: ws.WebSocket, clock })
    const job = await createJob()
    renderStrict(c, <JobStatus id={job.id} />)
    await waitFor(() => expect(screen.getByTestId('status').textContent).toBe('queued'))
    expect(screen.getByTestId('connection').textContent).toBe('live')
    await append(job.id, [{ type: 'progress', stage: 'decoding', percent: 40 }, { type: 'item', id: 'a.mp3' }, { type: 'chunk', text: 'hi' }])
    await waitFor(() => expect(screen.getByTestId('status').textContent).toBe('running decoding 40% "hi" 1 items'))
    await append(job.id, [{ type: 'completed', result: { words: 2 } }])
    await waitFor(() => expect(screen.getByTestId('status').textContent).toBe('completed {"words":2}'))
    expect(ws.list).toHaveLength(1)
    const before = requests
    // Past every linger and poll interval (short of the heartbeat watchdog, whose server heartbeats come in real time).
    await clock.advance(30_000)
    expect(requests).toBe(before)
    expect(ws.list).toHaveLength(1)
  })

  it('keeps working when the WebSocket is blocked: the same view over SSE', async () => {
    server = await spawnJobwire()
    const c = makeClient({ WebSocket: Blocked as unknown as WebSocketConstructor })
    const job = await createJob()
    render(
      <JobwireProvider client={c}>
        <JobStatus id={job.id} />
      </JobwireProvider>,
    )
    await waitFor(() => expect(screen.getByTestId('status').textContent).toBe('queued'))
    await waitFor(() => expect(screen.getByTestId('connection').textContent).toBe('live'))
    expect(c.transport).toBe('sse')
    await append(job.id, [{ type: 'progress', stage: 'decoding', percent: 40 }, { type: 'item', id: 'a.mp3' }, { type: 'chunk', text: 'hi' }])
    await waitFor(() => expect(screen.getByTestId('status').textContent).toBe('running decoding 40% "hi" 1 items'))
    await append(job.id, [{ type: 'failed', code: 'decode_error', message: 'bad file' }])
    await waitFor(() => expect(screen.getByTestId('status').textContent).toBe('failed decode_error'))
  })

  it('shows polling as the connection when only polling gets through', async () => {
    server = await spawnJobwire()
    const c = makeClient({ transports: ['poll'] })
    const job = await createJob()
    render(
      <JobwireProvider client={c}>
        <JobStatus id={job.id} />
      </JobwireProvider>,
    )
    await waitFor(() => expect(screen.getByTestId('connection').textContent).toBe('polling'))
    await append(job.id, [{ type: 'completed', result: 1 }])
    await waitFor(() => expect(screen.getByTestId('status').textContent).toBe('completed 1'))
  })

  it('answers an unknown job with error job_not_found, and no id with idle', async () => {
    server = await spawnJobwire()
    const c = makeClient()
    render(
      <JobwireProvider client={c}>
        <JobStatus id="job_nope" />
        <JobStatus id={null} />
      </JobwireProvider>,
    )
    await waitFor(() => expect(screen.getAllByTestId('status').map((node) => node.textContent)).toEqual(['error job_not_found', 'no job']))
  })

  it('cleans up on unmount: the watch stops and the socket closes', async () => {
    server = await spawnJobwire()
    const ws = sockets()
    const c = makeClient({ WebSocket: ws.WebSocket })
    const job = await createJob()
    function Toggle() {
      const [shown, setShown] = useState(true)
      return (
        <div>
          <button onClick={() => setShown(false)}>hide</button>
          {shown ? <JobStatus id={job.id} /> : null}
        </div>
      )
    }
    render(
      <JobwireProvider client={c}>
        <Toggle />
      </JobwireProvider>,
    )
    await waitFor(() => expect(screen.getByTestId('status').textContent).toBe('queued'))
    act(() => screen.getByText('hide').click())
    await waitFor(() => expect(ws.list[0]?.readyState).toBe(WebSocket.CLOSED))
  })

  it('cancels through the view', async () => {
    server = await spawnJobwire({ JOBWIRE_TOKEN_SECRET: secret })
    const job = await createJob({ owner: { tenant: 'acme', user: 'ann' } })
    const c = makeClient({ getToken: () => mintSubscriptionToken({ secret, jobIds: [job.id], rights: ['read', 'cancel'] }).token })
    function Cancellable() {
      const view = useJob(job.id)
      return <button onClick={() => void (view.status === 'queued' || view.status === 'running' ? view.cancel('user') : undefined)}>{view.status}</button>
    }
    render(
      <JobwireProvider client={c}>
        <Cancellable />
      </JobwireProvider>,
    )
    ;(await screen.findByText('queued')).click()
    await screen.findByText('cancelled')
  })
})

describe('a resumed job', () => {
  it('is followed again by the same useJob view after client.refollow, under StrictMode', async () => {
    server = await spawnJobwire()
    const c = makeClient()
    const job = await createJob()
    renderStrict(c, <JobStatus id={job.id} />)
    await waitFor(() => expect(screen.getByTestId('status').textContent).toBe('queued'))
    await server.call('POST', `/v1/jobs/${job.id}/cancel`, {})
    await waitFor(() => expect(screen.getByTestId('status').textContent).toBe('cancelled'))
    expect((await server.call('POST', `/v1/jobs/${job.id}/resume`, {})).status).toBe(200)
    expect(c.refollow(job.id)).toBe(true)
    await waitFor(() => expect(screen.getByTestId('status').textContent).toBe('queued'))
    await append(job.id, [{ type: 'chunk', text: 'again' }])
    await waitFor(() => expect(screen.getByTestId('status').textContent).toBe('running - 0% "again" 0 items'))
    expect(screen.getByTestId('connection').textContent).toBe('live')
    await append(job.id, [{ type: 'completed', result: 'second try' }])
    await waitFor(() => expect(screen.getByTestId('status').textContent).toBe('completed "second try"'))
  })
})

describe('useJobs and useMyJobs', () => {
  it('watches several jobs in the order given, on one socket', async () => {
    server = await spawnJobwire()
    const ws = sockets()
    const c = makeClient({ WebSocket: ws.WebSocket })
    const jobs = [await createJob(), await createJob(), await createJob()]
    function List() {
      const views = useJobs(jobs.map((job) => job.id))
      return <p data-testid="list">{views.map(describeView).join(' | ')}</p>
    }
    renderStrict(c, <List />)
    await waitFor(() => expect(screen.getByTestId('list').textContent).toBe('queued | queued | queued'))
    await append(jobs[1]?.id as string, [{ type: 'completed', result: 'b' }])
    await waitFor(() => expect(screen.getByTestId('list').textContent).toBe('queued | completed "b" | queued'))
    expect(ws.list).toHaveLength(1)
  })

  it('shows my jobs as an activity panel: new ones appear, filtered by status', async () => {
    server = await spawnJobwire({ JOBWIRE_TOKEN_SECRET: secret })
    const owner = { tenant: 'acme', user: 'ann' }
    const first = await createJob({ owner, type: 'transcription' })
    const c = makeClient({ getToken: () => mintSubscriptionToken({ secret, tenant: 'acme', user: 'ann' }).token })
    function Panel() {
      const all = useMyJobs()
      const active = useMyJobs({ status: ['queued', 'running'] })
      return (
        <div>
          <p data-testid="all">{`${all.status}: ${all.jobs.map((job) => `${job.type}/${job.status}`).join(', ')}`}</p>
          <p data-testid="active">{active.jobs.length}</p>
        </div>
      )
    }
    renderStrict(c, <Panel />)
    await waitFor(() => expect(screen.getByTestId('all').textContent).toBe('ready: transcription/queued'))
    await createJob({ owner, type: 'suggestion' })
    await waitFor(() => expect(screen.getByTestId('all').textContent).toBe('ready: suggestion/queued, transcription/queued'))
    await append(first.id, [{ type: 'completed' }])
    await waitFor(() => expect(screen.getByTestId('all').textContent).toBe('ready: suggestion/queued, transcription/completed'))
    expect(screen.getByTestId('active').textContent).toBe('1')
  })
})
