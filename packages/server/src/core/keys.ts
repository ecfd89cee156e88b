import type { Principal, Role } from './scopes.js'

/** An API key as stored: never the key itself, only a hash of its secret part. */
export interface ApiKeyRecord {
  id: string
  name: string
  role: Role
  /** Bound to one tenant's jobs, or null for all. */
  tenant: string | null
  /** For workers: the job types it may claim, or null for any. */
  types: string[] | null
  /** sha256 of the secret, hex. Keys are 192 random bits, so a fast hash is enough. */
  hash: string
  createdAt: string
  revokedAt: string | null
}

/** Where API keys live: beside the jobs, in the same backend. */
export interface KeyStore {
  create(record: ApiKeyRecord): Promise<void>
  get(id: string): Promise<ApiKeyRecord | null>
  list(): Promise<ApiKeyRecord[]>
  /** Marks the key revoked; false if there is no such key. */
  revoke(id: string, at: string): Promise<boolean>
  /**
   * Only in stores that several nodes share: calls `listener` with each key revoked through another
   * node, so this node closes the streams it holds for it. Returns a function that stops it.
   */
  watchRevocations?(listener: (keyId: string) => void): () => void
  close(): Promise<void>
}

/** Counts requests per subject in fixed windows. Async so a shared (Redis) counter fits. */
export interface RateCounter {
  /** Counts one hit; `ok: false` (and how long to wait) when `max` were already counted this window. */
  hit(key: string, max: number, windowMs: number): Promise<{ ok: boolean; retryAfterMs: number }>
}

/** Counts open streams per subject; `acquire` returns a release function, or null when full. */
export interface StreamCounter {
  acquire(key: string, max: number): Promise<(() => void) | null>
  /** Streams of `key` open now (on every node, for a shared counter). */
  count(key: string): Promise<number>
}

/** The slots of one open stream. */
export interface StreamSlot {
  /** Gives them back (idempotent). */
  release(): void
  /**
   * The stream's credential changed (a WebSocket's `refresh_token`): when it names another person,
   * takes one of their streams, then gives back the old person's; rejects with
   * `too_many_streams`, keeping the old one, when the new person has none left.
   */
  moveTo(principal: Principal): Promise<void>
}
