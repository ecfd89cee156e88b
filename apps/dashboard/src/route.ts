import { useEffect, useState } from 'react'
import { jobStatuses, type JobStatus } from '@jobwire/client'

/** The list's filters; '' is "any". `owner` is `tenant` or `tenant:user` (API keys only). */
export interface ListFilters {
  status: JobStatus | ''
  type: string
  owner: string
}

export const noFilters: ListFilters = { status: '', type: '', owner: '' }

/**
 * Where the dashboard is: `#/?status=…&type=…&owner=…` the list with its filters (a view anyone can
 * share), `#/jobs/<id>` one job.
 */
export type Route = { view: 'list'; filters: ListFilters } | { view: 'job'; jobId: string }

function parseRoute(hash: string): Route {
  const match = /^#\/jobs\/([^/?#]+)$/.exec(hash)
  if (match?.[1] !== undefined) return { view: 'job', jobId: decodeURIComponent(match[1]) }
  const query = new URLSearchParams(/^#\/?\?(.*)$/.exec(hash)?.[1] ?? '')
  const status = query.get('status') ?? ''
  return {
    view: 'list',
    filters: {
      status: (jobStatuses as readonly string[]).includes(status) ? (status as JobStatus) : '',
      type: query.get('type')?.trim() ?? '',
      owner: query.get('owner')?.trim() ?? '',
    },
  }
}

export function jobHref(jobId: string): string {
  return `#/jobs/${encodeURIComponent(jobId)}`
}

export function listHref(filters: ListFilters): string {
  const query = new URLSearchParams()
  for (const key of ['status', 'type', 'owner'] as const) if (filters[key] !== '') query.set(key, filters[key])
  const search = query.toString()
  return search === '' ? '#/' : `#/?${search}`
}

/** A stable key for a set of filters (for memoizing what depends on them). */
export function filtersKey(filters: ListFilters): string {
  return `${filters.status}\u0000${filters.type}\u0000${filters.owner}`
}

export function useRoute(): Route {
  const [hash, setHash] = useState(() => location.hash)
  useEffect(() => {
    const onChange = (): void => setHash(location.hash)
    window.addEventListener('hashchange', onChange)
    return () => window.removeEventListener('hashchange', onChange)
  }, [])
  // Parsed per render from the hash string, so an unchanged hash gives equal filters.
  return parseRoute(hash)
}
