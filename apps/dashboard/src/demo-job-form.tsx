import { useState, type FormEvent, type ReactNode } from 'react'
import { jobHref } from './route.js'

/** "New demo job": pick one of the demo types; opens the new job's page. */
export function DemoJobForm({ types, create }: { types: readonly string[]; create: (type: string) => Promise<string> }): ReactNode {
  const [type, setType] = useState(types[0] ?? '')
  const [error, setError] = useState<string | null>(null)
  const [busy, setBusy] = useState(false)
  const submit = (event: FormEvent): void => {
    event.preventDefault()
    setBusy(true)
    setError(null)
    create(type)
      .then((jobId) => {
        location.hash = jobHref(jobId)
      })
      .catch((failure: unknown) => setError((failure as Error).message))
      .finally(() => setBusy(false))
  }
  return (
    <form className="demo-form" onSubmit={submit} aria-label="New demo job">
      <label htmlFor="demo-type">New demo job</label>
      <select id="demo-type" value={type} onChange={(event) => setType(event.target.value)}>
        {types.map((name) => (
          <option key={name} value={name}>
            {name}
          </option>
        ))}
      </select>
      <button type="submit" className="primary" disabled={busy}>
        Start
      </button>
      {error !== null && (
        <span role="alert" className="error-text small">
          {error}
        </span>
      )}
    </form>
  )
}
