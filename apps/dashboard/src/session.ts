import type { SubscriptionToken } from '@jobwire/protocol'

/**
 * The dashboard's credential: kept in session storage (gone with the tab, never in the URL).
 * A demo session re-mints its short-lived token from the demo server when asked for a new one.
 */
export type Session =
  | { kind: 'demo'; token: string; types: string[] }
  | { kind: 'token'; token: string }
  | { kind: 'key'; token: string }

const storageKey = 'jobwire.dashboard.session'

export function loadSession(): Session | null {
  try {
    const raw = sessionStorage.getItem(storageKey)
    if (raw === null) return null
    const parsed = JSON.parse(raw) as Session
    return typeof parsed.token === 'string' && parsed.token !== '' ? parsed : null
  } catch {
    return null
  }
}

export function saveSession(session: Session | null): void {
  if (session === null) sessionStorage.removeItem(storageKey)
  else sessionStorage.setItem(storageKey, JSON.stringify(session))
}

/** A pasted credential: subscription tokens are JWTs (three dot-separated parts), API keys are not. */
export function sessionFromPaste(value: string): Session {
  const token = value.trim()
  return token.split('.').length === 3 ? { kind: 'token', token } : { kind: 'key', token }
}

/** `POST /demo/session`: a token for the demo user's jobs; the route exists only under `--demo`. */
export async function startDemoSession(): Promise<Session & { kind: 'demo' }> {
  const response = await fetch('/demo/session', { method: 'POST' })
  if (!response.ok) throw new Error(response.status === 404 ? 'This server is not in demo mode.' : `Demo sign-in failed (HTTP ${response.status}).`)
  const body = (await response.json()) as SubscriptionToken & { types: string[] }
  return { kind: 'demo', token: body.token, types: body.types }
}

/** Whether the server runs `--demo` (then the sign-in page offers one click). */
export async function isDemoServer(): Promise<boolean> {
  try {
    const response = await fetch('/demo/jobs', { method: 'GET' })
    return response.ok
  } catch {
    return false
  }
}

/** The rights a subscription token carries (read from its payload; the server still checks). */
export function tokenRights(session: Session): { cancel: boolean } {
  if (session.kind === 'key') return { cancel: true }
  const rights = tokenPayload(session)?.rights
  return { cancel: Array.isArray(rights) && rights.includes('cancel') }
}

/** Whose jobs a person's token shows (`tenant:user`), when its payload says; null for API keys. */
export function tokenOwner(session: Session): string | null {
  if (session.kind === 'key') return null
  const payload = tokenPayload(session)
  return typeof payload?.tenant === 'string' && typeof payload.user === 'string' ? `${payload.tenant}:${payload.user}` : null
}

function tokenPayload(session: Session): { rights?: unknown; tenant?: unknown; user?: unknown } | null {
  try {
    const payload = session.token.split('.')[1] ?? ''
    return JSON.parse(atob(payload.replace(/-/g, '+').replace(/_/g, '/'))) as { rights?: unknown; tenant?: unknown; user?: unknown }
  } catch {
    return null
  }
}
