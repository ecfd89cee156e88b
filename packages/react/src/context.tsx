import { createContext, useContext, type ReactNode } from 'react'
import type { JobwireClient } from '@jobwire/client'

const JobwireContext = createContext<JobwireClient | null>(null)

/**
 * Makes a Jobwire client available to the hooks below it. Create the client once, outside the
 * component tree (`createJobwireClient({ url, getToken })`), so every watch shares its one socket
 * and re-renders never reconnect.
 */
export function JobwireProvider({ client, children }: { client: JobwireClient; children?: ReactNode }): ReactNode {
  return <JobwireContext.Provider value={client}>{children}</JobwireContext.Provider>
}

/** The client passed in options, else the nearest JobwireProvider's. */
export function useJobwireClient(client?: JobwireClient): JobwireClient {
  const fromContext = useContext(JobwireContext)
  const found = client ?? fromContext
  if (found === null) throw new Error('@jobwire/react: wrap the tree in <JobwireProvider client={…}> or pass { client }')
  return found
}
