import type { ReactNode } from 'react'
import type { JobState } from '@jobwire/client'

type Plan = NonNullable<JobState['plan']>

/**
 * A job's stage plan as a timeline: one segment per stage, as wide as its share of the bar,
 * filled by how far it got, and a list saying each stage's status.
 */
export function StagePlanTimeline({ plan }: { plan: Plan }): ReactNode {
  return (
    <section className="card" aria-labelledby="plan-title">
      <h3 id="plan-title">Plan</h3>
      <div className="plan-bar" aria-hidden="true">
        {plan.map((stage) => (
          <span key={stage.name} className={`plan-segment ${stage.status}`} style={{ flexGrow: Math.max(stage.to - stage.from, 0.5) }}>
            <i style={{ width: `${Math.round((stage.status === 'done' ? 1 : (stage.fraction ?? 0)) * 100)}%` }} />
          </span>
        ))}
      </div>
      <ol className="plan-stages">
        {plan.map((stage) => (
          <li key={stage.name} data-plan-stage={stage.name} data-stage-status={stage.status}>
            <span className="stage-name">{stage.name}</span>
            <span className="muted">
              {formatPercent(stage.from)}–{formatPercent(stage.to)}
            </span>
            <span className={`badge ${stageTone(stage.status)}`}>
              {stage.status === 'running' && stage.fraction !== null ? `running ${Math.round(stage.fraction * 100)}%` : stage.status}
            </span>
          </li>
        ))}
      </ol>
    </section>
  )
}

/** App metadata a job or an item reports (`progress({metadata})`), as a compact list of keys and values. */
export function MetadataList({ metadata, label }: { metadata: Record<string, unknown> | undefined; label: string }): ReactNode {
  if (metadata === undefined) return null
  const entries = Object.entries(metadata)
  if (entries.length === 0) return null
  return (
    <dl className="metadata" aria-label={label}>
      {entries.map(([key, value]) => (
        <div key={key}>
          <dt>{key}</dt>
          <dd>{typeof value === 'string' ? value : JSON.stringify(value)}</dd>
        </div>
      ))}
    </dl>
  )
}

function formatPercent(value: number): string {
  return `${Math.round(value * 10) / 10}%`
}

function stageTone(status: Plan[number]['status']): string {
  switch (status) {
    case 'done':
      return 'completed'
    case 'running':
    case 'failed':
    case 'cancelled':
      return status
    case 'skipped':
      return 'cancelled'
    case 'pending':
      return 'queued'
  }
}
