import { useCallback, useEffect, useMemo, useRef, useState, type ReactNode } from 'react'
import type { Owner } from '@jobwire/client'
import { createJobwireClient, JobwireProvider, useMyJobs, type JobwireClient } from '@jobwire/react'
import { jobActions } from './actions.js'
import { DemoJobForm } from './demo-job-form.js'
import { JobPage } from './job-page.js'
import { JobsList } from './jobs-list.js'
import { useRoute } from './route.js'
import { loadSession, saveSession, startDemoSession, tokenRights, type Session } from './session.js'
import { SignIn } from './sign-in.js'
import { StatusBar } from './status-bar.js'

export function App(): ReactNode {
  const [session, setSession] = useState<Session | null>(loadSession)
  const signIn = (next: Session | null): void => {
    saveSession(next)
    setSession(next)
  }
  if (session === null) return <SignIn onSignIn={signIn} />
  return <Signedin session={session} onSignOut={() => signIn(null)} />
}

/** One client per session, closed when the session ends (StrictMode-safe: made in an effect). */
function Signedin({ session, onSignOut }: { session: Session; onSignOut: () => void }): ReactNode {
  const [client, setClient] = useState<JobwireClient | null>(null)
  // A watch ends with its job; a resumed job needs fresh watches, so resuming starts a new client.
  const [generation, setGeneration] = useState(0)
  const renew = useCallback(() => setGeneration((n) => n + 1), [])
  const kind = session.kind
  const pasted = session.token
  useEffect(() => {
    const created = createJobwireClient({
      url: location.origin,
      getToken: kind === 'demo' ? renewDemoToken : () => pasted,
    })
    setClient(created)
    return () => created.close()
  }, [kind, pasted, generation])
  if (client === null) return null
  return (
    <JobwireProvider client={client}>
      <Dashboard session={session} onSignOut={onSignOut} onResumed={renew} />
    </JobwireProvider>
  )
}

/** Demo tokens are short-lived: each time the client asks, mint a fresh one (the old one if the server is away). */
async function renewDemoToken(): Promise<string> {
  try {
    const fresh = await startDemoSession()
    saveSession(fresh)
    return fresh.token
  } catch (error) {
    const stored = loadSession()
    if (stored !== null) return stored.token
    throw error
  }
}

function Dashboard({ session, onSignOut, onResumed }: { session: Session; onSignOut: () => void; onResumed: () => void }): ReactNode {
  const route = useRoute()
  // After navigating, keyboard and screen-reader users start at the new page's content.
  const routeKey = route.view === 'job' ? route.jobId : ''
  const firstRoute = useRef(true)
  useEffect(() => {
    if (firstRoute.current) firstRoute.current = false
    else document.getElementById('main')?.focus()
  }, [routeKey])
  // API keys must name whose jobs to follow; tokens imply their user.
  const [owner, setOwner] = useState<Owner | undefined>(undefined)
  const jobs = useMyJobs({}, session.kind === 'key' && owner !== undefined ? { owner } : {})
  const actions = useMemo(() => {
    const base = jobActions(session)
    return { ...base, resume: (jobId: string) => base.resume(jobId).then(onResumed) }
  }, [session, onResumed])
  const rights = useMemo(() => tokenRights(session), [session])
  const running = jobs.jobs.filter((job) => job.status === 'running').length
  const queued = jobs.jobs.filter((job) => job.status === 'queued').length
  return (
    <div className="shell">
      {/* Not href="#main": the hash is the route. */}
      <button type="button" className="skip" onClick={() => document.getElementById('main')?.focus()}>
        Skip to content
      </button>
      <header className="top">
        <h1>
          <a href="#/">Jobwire</a>
        </h1>
        {session.kind === 'demo' && <DemoJobForm types={session.types} create={actions.createDemo} />}
        <button type="button" className="quiet" onClick={onSignOut}>
          Sign out
        </button>
      </header>
      <main id="main" tabIndex={-1}>
        {route.view === 'job' ? (
          <JobPage key={route.jobId} jobId={route.jobId} actions={actions} canCancel={rights.cancel} />
        ) : (
          <JobsList view={jobs} needsOwner={session.kind === 'key'} owner={owner} onOwner={setOwner} />
        )}
      </main>
      <StatusBar connection={jobs.connection} running={running} queued={queued} who={describe(session)} />
    </div>
  )
}

function describe(session: Session): string {
  switch (session.kind) {
    case 'demo':
      return 'demo user'
    case 'token':
      return 'subscription token'
    case 'key':
      return 'API key'
  }
}
