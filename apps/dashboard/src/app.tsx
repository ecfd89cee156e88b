import { useCallback, useEffect, useMemo, useRef, useState, type ReactNode } from 'react'
import type { JobState, Owner } from '@jobwire/client'
import { createJobwireClient, JobwireProvider, useJobwireClient, type JobwireClient } from '@jobwire/react'
import { jobActions, type JobActions } from './actions.js'
import { OwnerActivity, PolledActivity } from './activity.js'
import { DemoJobForm } from './demo-job-form.js'
import { JobPage } from './job-page.js'
import { JobListStore } from './job-list-store.js'
import { JobsList } from './jobs-list.js'
import { filtersKey, listHref, noFilters, useRoute, type ListFilters } from './route.js'
import { loadSession, saveSession, startDemoSession, tokenOwner, tokenRights, type Session } from './session.js'
import { SignIn } from './sign-in.js'

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
  const kind = session.kind
  const pasted = session.token
  useEffect(() => {
    const created = createJobwireClient({
      url: location.origin,
      getToken: kind === 'demo' ? renewDemoToken : () => pasted,
    })
    setClient(created)
    return () => created.close()
  }, [kind, pasted])
  if (client === null) return null
  return (
    <JobwireProvider client={client}>
      <Dashboard session={session} onSignOut={onSignOut} />
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

function Dashboard({ session, onSignOut }: { session: Session; onSignOut: () => void }): ReactNode {
  const client = useJobwireClient()
  const route = useRoute()
  // The list's filters live in its address; a job page keeps the ones the list had.
  const listFilters = route.view === 'list' ? route.filters : null
  const [remembered, setRemembered] = useState<ListFilters>(noFilters)
  const listKey = listFilters === null ? null : filtersKey(listFilters)
  useEffect(() => {
    if (listFilters !== null) setRemembered(listFilters)
    // listFilters is compared by value, through listKey.
  }, [listKey])
  // People's credentials see their own jobs only: an owner in the address means nothing to them.
  const wanted = listFilters ?? remembered
  const filters = session.kind === 'key' || wanted.owner === '' ? wanted : { ...wanted, owner: '' }
  const key = filtersKey(filters)
  // One list per set of filters; it outlives a visit to a job page, so coming back keeps the pages loaded.
  const list = useMemo(() => new JobListStore(client, filters), [client, key])

  const actions = useMemo<JobActions>(() => {
    const base = jobActions(session)
    return {
      ...base,
      // A resumed job goes on in the same watches (the job page's, the list's, the user feed's).
      resume: async (jobId) => {
        const job = await base.resume(jobId)
        client.refollow(jobId)
        list.note(job)
        return job
      },
    }
  }, [session, client, list])
  const rights = useMemo(() => tokenRights(session), [session])
  const noteInList = useCallback((job: JobState) => list.note(job), [list])

  // After navigating, keyboard and screen-reader users start at the new page's content.
  const routeKey = route.view === 'job' ? route.jobId : ''
  const firstRoute = useRef(true)
  useEffect(() => {
    if (firstRoute.current) firstRoute.current = false
    else document.getElementById('main')?.focus()
  }, [routeKey])

  // One owner's jobs (a person's token, or an API key filtered to tenant:user) come over the user
  // feed; every owner or a whole tenant (an API key) by listing.
  const owner = session.kind === 'key' ? fullOwner(filters.owner) : null
  const tokenScope = tokenOwner(session)
  const scope =
    session.kind !== 'key'
      ? tokenScope === null
        ? 'your jobs'
        : `${tokenScope}, this credential's own jobs`
      : owner !== null
        ? `${owner.tenant}:${owner.user}'s jobs`
        : filters.owner === ''
          ? 'all owners'
          : `tenant ${filters.owner}`
  const who = describe(session)

  return (
    <div className="shell">
      {/* Not href="#main": the hash is the route. */}
      <button type="button" className="skip" onClick={() => document.getElementById('main')?.focus()}>
        Skip to content
      </button>
      <header className="top">
        <h1>
          <a href={listHref(filters)}>Jobwire</a>
        </h1>
        {session.kind === 'demo' && <DemoJobForm types={session.types} create={actions.createDemo} />}
        <button type="button" className="quiet" onClick={onSignOut}>
          Sign out
        </button>
      </header>
      <main id="main" tabIndex={-1}>
        {route.view === 'job' ? (
          <JobPage key={route.jobId} jobId={route.jobId} actions={actions} canCancel={rights.cancel} backHref={listHref(filters)} onState={noteInList} />
        ) : (
          <JobsList
            list={list}
            filters={filters}
            onFilters={(next) => (location.hash = listHref(next))}
            scope={scope}
            ownerFilter={session.kind === 'key'}
            knownTypes={session.kind === 'demo' ? session.types : noTypes}
          />
        )}
      </main>
      {session.kind !== 'key' ? (
        <OwnerActivity owner={undefined} list={list} who={who} />
      ) : owner !== null ? (
        <OwnerActivity key={`${owner.tenant}:${owner.user}`} owner={owner} list={list} who={who} />
      ) : (
        <PolledActivity owner={filters.owner} who={who} />
      )}
    </div>
  )
}

const noTypes: readonly string[] = []

/** `tenant:user` as an owner; null for "all owners" or a whole tenant. */
function fullOwner(text: string): Owner | null {
  const [tenant, user, ...rest] = text.split(':')
  return tenant !== undefined && tenant !== '' && user !== undefined && user !== '' && rest.length === 0 ? { tenant, user } : null
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
