import { StrictMode } from 'react'
import { createRoot } from 'react-dom/client'
import { createJobwireClient, JobwireProvider } from '@jobwire/react'
import type { TransportName } from '@jobwire/client'
import { Analysis } from './Analysis.js'

// start.mjs gives this page the job and a token for it in the query (a real app gets the token from its
// backend); Jobwire is reached through the page's own origin. `?transports=poll` shows the polling fallback.
const query = new URLSearchParams(location.search)
const transports = (query.get('transports') ?? 'ws,sse,poll').split(',') as TransportName[]
const token = query.get('token') ?? ''
const client = createJobwireClient({ url: location.origin, getToken: async () => token, transports, pollIntervalMs: 1000 })

const root = document.getElementById('root')
if (root === null) throw new Error('no #root element')
createRoot(root).render(
  <StrictMode>
    <JobwireProvider client={client}>
      <h1>Contract analysis</h1>
      <Analysis jobId={query.get('job') ?? ''} />
    </JobwireProvider>
  </StrictMode>,
)
