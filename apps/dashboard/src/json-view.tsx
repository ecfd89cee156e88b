import type { ReactNode } from 'react'

/** A JSON viewer: objects and arrays fold (native <details>, keyboard-friendly), leaves show typed. */
export function JsonView({ value, label }: { value: unknown; label: string }): ReactNode {
  return (
    <div className="json" aria-label={label}>
      <JsonNode value={value} name={null} depth={0} />
    </div>
  )
}

function JsonNode({ value, name, depth }: { value: unknown; name: string | null; depth: number }): ReactNode {
  const key = name === null ? null : <span className="json-key">{name}: </span>
  if (value === null || typeof value !== 'object') {
    return (
      <div className="json-leaf">
        {key}
        <span className={`json-${value === null ? 'null' : typeof value}`}>{JSON.stringify(value) ?? 'undefined'}</span>
      </div>
    )
  }
  const entries = Array.isArray(value) ? value.map((item, index) => [String(index), item] as const) : Object.entries(value)
  const summary = Array.isArray(value) ? `[${entries.length}]` : `{${entries.length}}`
  return (
    <details open={depth < 2}>
      <summary>
        {key}
        <span className="muted">{summary}</span>
      </summary>
      <div className="json-children">
        {entries.map(([childName, child]) => (
          <JsonNode key={childName} value={child} name={childName} depth={depth + 1} />
        ))}
      </div>
    </details>
  )
}
