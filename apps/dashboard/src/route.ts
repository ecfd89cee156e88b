import { useEffect, useState } from 'react'

/** Where the dashboard is: `#/` the list, `#/jobs/<id>` one job (a link anyone can share). */
export type Route = { view: 'list' } | { view: 'job'; jobId: string }

export function parseRoute(hash: string): Route {
  const match = /^#\/jobs\/([^/?#]+)$/.exec(hash)
  return match?.[1] === undefined ? { view: 'list' } : { view: 'job', jobId: decodeURIComponent(match[1]) }
}

export function jobHref(jobId: string): string {
  return `#/jobs/${encodeURIComponent(jobId)}`
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(location.hash))
  useEffect(() => {
    const onChange = (): void => setRoute(parseRoute(location.hash))
    window.addEventListener('hashchange', onChange)
    return () => window.removeEventListener('hashchange', onChange)
  }, [])
  return route
}
