import type { ReactNode } from 'react'
import type { JobConnection } from '@jobwire/react'

const labels: Record<JobConnection, string> = {
  live: 'live',
  polling: 'polling',
  reconnecting: 'reconnecting',
  offline: 'offline',
}

/** Connection state and counts; only the connection is announced (counts change too often to read out). */
export function StatusBar({ connection, running, queued, who }: { connection: JobConnection; running: number; queued: number; who: string }): ReactNode {
  return (
    <footer className="status-bar" aria-label="Status">
      <span className={`conn conn-${connection}`} data-testid="connection" role="status" aria-label={`Connection: ${labels[connection]}`}>
        <span className="dot" aria-hidden="true" />
        {labels[connection]}
      </span>
      <span data-testid="running-count">{running} running</span>
      <span>{queued} queued</span>
      <span className="muted who">{who}</span>
    </footer>
  )
}
