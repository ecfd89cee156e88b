import { useEffect, useState, useSyncExternalStore, type ReactNode } from 'react'
import { JobwireError, type Owner } from '@jobwire/client'
import { useJobwireClient, useMyJobs, type JobConnection } from '@jobwire/react'
import type { JobListStore } from './job-list-store.js'
import { StatusBar } from './status-bar.js'

/**
 * One owner's jobs over the user feed (`useMyJobs`): a person's token, or an API key following one
 * `tenant:user`. New jobs join the list the moment they are created; the counts are live.
 */
export function OwnerActivity({ owner, list, who }: { owner: Owner | undefined; list: JobListStore; who: string }): ReactNode {
  const mine = useMyJobs({}, owner === undefined ? {} : { owner })
  useEffect(() => {
    for (const job of mine.jobs) list.note(job)
  }, [list, mine.jobs])
  return (
    <StatusBar
      connection={mine.connection}
      running={String(mine.jobs.filter((job) => job.status === 'running').length)}
      queued={String(mine.jobs.filter((job) => job.status === 'queued').length)}
      who={who}
      error={mine.status === 'error' ? mine.error : null}
    />
  )
}

const countLimit = 200
const countEveryMs = 5_000

interface Counts {
  running: string
  queued: string
  reachable: boolean
  error: JobwireError | null
}

/**
 * Every owner, or a whole tenant (an API key): there is no user feed for that, so the counts come
 * from listing running and queued jobs every few seconds (the list finds new jobs the same way),
 * and the connection is the client's link while those answers keep coming.
 */
export function PolledActivity({ owner, who }: { owner: string; who: string }): ReactNode {
  const client = useJobwireClient()
  const [counts, setCounts] = useState<Counts>({ running: '…', queued: '…', reachable: true, error: null })
  useEffect(() => {
    const [tenant, user] = owner.split(':')
    const scope = tenant === undefined || tenant === '' ? {} : { owner: user === undefined || user === '' ? { tenant } : { tenant, user } }
    const controller = new AbortController()
    let timer: ReturnType<typeof setTimeout> | null = null
    const count = async (status: 'running' | 'queued'): Promise<string> => {
      const page = await client.listJobs({ ...scope, status, limit: countLimit, signal: controller.signal })
      return page.nextCursor === null ? String(page.jobs.length) : `${countLimit}+`
    }
    const round = async (): Promise<void> => {
      if (document.visibilityState !== 'hidden') {
        try {
          const [running, queued] = await Promise.all([count('running'), count('queued')])
          setCounts({ running, queued, reachable: true, error: null })
        } catch (error) {
          if (controller.signal.aborted) return
          // Unreachable is the connection's to show; anything else (a refused credential) is said in words.
          const refused = error instanceof JobwireError && error.code !== 'unavailable' ? error : null
          setCounts((previous) => ({ ...previous, reachable: false, error: refused }))
        }
      }
      if (!controller.signal.aborted) timer = setTimeout(() => void round(), countEveryMs)
    }
    void round()
    return () => {
      controller.abort()
      if (timer !== null) clearTimeout(timer)
    }
  }, [client, owner])
  const link = useSyncExternalStore(
    (onChange) => client.connection.subscribe(onChange),
    () => client.connection.state,
  )
  const online = useOnline()
  const connection: JobConnection = !online ? 'offline' : !counts.reachable || link === 'reconnecting' ? 'reconnecting' : link === 'polling' ? 'polling' : 'live'
  return <StatusBar connection={connection} running={counts.running} queued={counts.queued} who={who} error={counts.error} />
}

function useOnline(): boolean {
  return useSyncExternalStore(
    (onChange) => {
      window.addEventListener('online', onChange)
      window.addEventListener('offline', onChange)
      return () => {
        window.removeEventListener('online', onChange)
        window.removeEventListener('offline', onChange)
      }
    },
    () => navigator.onLine,
  )
}
