import type { ReactNode } from 'react'
import type { JobwireError } from '@jobwire/client'
import type { JobConnection } from '@jobwire/react'

const labels: Record<JobConnection, string> = {
  live: 'live',
  polling: 'polling',
  reconnecting: 'reconnecting',
  offline: 'offline',
}

interface Props {
  connection: JobConnection
  running: string
  queued: string
  who: string
  /** Why the jobs cannot be followed (a refused credential), when they cannot. */
  error: JobwireError | null
}

/** Connection state and counts; only the connection is announced (counts change too often to read out). */
export function StatusBar({ connection, running, queued, who, error }: Props): ReactNode {
  return (
    <footer className="status-bar" aria-label="Status bar">
      <span className={`conn conn-${connection}`} data-testid="connection" role="status" aria-label={`Connection: ${labels[connection]}`}>
        <span className="dot" aria-hidden="true" />
        {labels[connection]}
      </span>
      <span data-testid="running-count">{running} running</span>
      <span>{queued} queued</span>
      {error !== null && (
        <span role="alert" className="error-text">
          <code>{error.code}</code> {error.message}
        </span>
      )}
      <span className="muted who">{who}</span>
    </footer>
  )
}
