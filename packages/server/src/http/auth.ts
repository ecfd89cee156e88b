import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

/** Where the admin key came from, so `serve` can say so once. */
export interface AdminKey {
  key: string
  source: 'config' | 'file' | 'generated'
  path: string | null
}

export function generateApiKey(): string {
  return `jw_${randomBytes(24).toString('base64url')}`
}

/**
 * The admin key: `JOBWIRE_API_KEY` if set, else the one saved in the data directory, else a new
 * one written there (mode 0600). With no data directory (memory mode) a new key per start.
 */
export function resolveAdminKey(configured: string | undefined, dataDir: string | null): AdminKey {
  if (configured !== undefined) return { key: configured, source: 'config', path: null }
  if (dataDir === null) return { key: generateApiKey(), source: 'generated', path: null }
  const path = join(dataDir, 'admin.key')
  if (existsSync(path)) return { key: readFileSync(path, 'utf8').trim(), source: 'file', path }
  mkdirSync(dataDir, { recursive: true })
  const key = generateApiKey()
  writeFileSync(path, `${key}\n`, { mode: 0o600 })
  return { key, source: 'generated', path }
}

/** Compares in constant time (hashing first makes the lengths equal). */
export function keyMatches(candidate: string, expected: string): boolean {
  const a = createHash('sha256').update(candidate).digest()
  const b = createHash('sha256').update(expected).digest()
  return timingSafeEqual(a, b)
}

/** The bearer credential: `Authorization: Bearer …`, or `?access_token=` where a browser cannot set headers. */
export function credentialOf(authorization: string | undefined, accessToken: string | undefined): string | null {
  if (authorization !== undefined) {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization)
    return match?.[1] ?? null
  }
  return accessToken ?? null
}
