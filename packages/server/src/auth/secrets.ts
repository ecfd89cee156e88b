import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

/** Where a secret came from, so `serve` can say so once. */
export interface ResolvedSecret {
  value: string
  source: 'config' | 'file' | 'generated'
  path: string | null
}

/** The admin key is a credential like any other: `jw_` + 192 random bits. */
export function generateAdminKey(): string {
  return `jw_${randomBytes(24).toString('base64url')}`
}

/**
 * A secret from config if set, else the one saved in the data directory, else a new one written
 * there (mode 0600). With no data directory (memory mode) a new one per start.
 */
export function resolveSecret(configured: string | undefined, dataDir: string | null, file: string, generate: () => string): ResolvedSecret {
  if (configured !== undefined) return { value: configured, source: 'config', path: null }
  if (dataDir === null) return { value: generate(), source: 'generated', path: null }
  const path = join(dataDir, file)
  if (existsSync(path)) return { value: readFileSync(path, 'utf8').trim(), source: 'file', path }
  mkdirSync(dataDir, { recursive: true })
  const value = generate()
  writeFileSync(path, `${value}\n`, { mode: 0o600 })
  return { value, source: 'generated', path }
}

/**
 * The credential of a request: `Authorization: Bearer …`, else the session cookie, else
 * `?access_token=` (for EventSource, which cannot set headers). Says where it came from: a
 * cookie-borne credential needs an Origin check.
 */
export function credentialOf(
  headers: { authorization?: string | undefined; cookie?: string | undefined },
  accessToken: string | undefined,
  cookieName: string,
): { credential: string; source: 'header' | 'cookie' | 'query' } | null {
  if (headers.authorization !== undefined) {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(headers.authorization)
    return match?.[1] === undefined ? null : { credential: match[1], source: 'header' }
  }
  const cookie = headers.cookie === undefined ? undefined : readCookie(headers.cookie, cookieName)
  if (cookie !== undefined) return { credential: cookie, source: 'cookie' }
  return accessToken === undefined || accessToken === '' ? null : { credential: accessToken, source: 'query' }
}

function readCookie(header: string, name: string): string | undefined {
  for (const part of header.split(';')) {
    const eq = part.indexOf('=')
    if (eq !== -1 && part.slice(0, eq).trim() === name) {
      try {
        return decodeURIComponent(part.slice(eq + 1).trim())
      } catch {
        return undefined
      }
    }
  }
  return undefined
}
