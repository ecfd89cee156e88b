import { useEffect, useState, type FormEvent, type ReactNode } from 'react'
import { isDemoServer, sessionFromPaste, startDemoSession, type Session } from './session.js'

/** Paste an API key or a subscription token, or (under `--demo`) one click. */
export function SignIn({ onSignIn }: { onSignIn: (session: Session) => void }): ReactNode {
  const [demo, setDemo] = useState(false)
  const [value, setValue] = useState('')
  const [error, setError] = useState<string | null>(null)
  const [busy, setBusy] = useState(false)
  useEffect(() => {
    let live = true
    void isDemoServer().then((yes) => live && setDemo(yes))
    return () => {
      live = false
    }
  }, [])

  const submit = (event: FormEvent): void => {
    event.preventDefault()
    if (value.trim() === '') {
      setError('Paste an API key or a subscription token.')
      return
    }
    onSignIn(sessionFromPaste(value))
  }
  const demoSignIn = (): void => {
    setBusy(true)
    setError(null)
    startDemoSession().then(onSignIn, (failure: unknown) => {
      setBusy(false)
      setError((failure as Error).message)
    })
  }

  return (
    <main className="sign-in" id="main">
      <h1>Jobwire</h1>
      <p className="muted">Watch your jobs move, live.</p>
      {demo && (
        <section className="card" aria-labelledby="demo-title">
          <h2 id="demo-title">Demo</h2>
          <p>This server runs in demo mode: sign in as the demo user to watch and steer demo jobs.</p>
          <button type="button" className="primary" onClick={demoSignIn} disabled={busy}>
            {busy ? 'Signing in…' : 'Sign in to the demo'}
          </button>
        </section>
      )}
      <form className="card" onSubmit={submit} aria-labelledby="credential-title">
        <h2 id="credential-title">Sign in with a credential</h2>
        <label htmlFor="credential">API key or subscription token</label>
        <input
          id="credential"
          type="password"
          autoComplete="off"
          spellCheck={false}
          value={value}
          onChange={(event) => setValue(event.target.value)}
          aria-describedby="credential-hint"
        />
        <p id="credential-hint" className="muted small">
          Kept in this tab's session storage only, never in the address bar.
        </p>
        <button type="submit" className="primary">
          Sign in
        </button>
      </form>
      {error !== null && (
        <p role="alert" className="error-text">
          {error}
        </p>
      )}
    </main>
  )
}
