import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import Database from 'better-sqlite3'
import type { ApiKeyRecord, KeyStore } from '../core/keys.js'

interface Row {
  id: string
  name: string
  role: ApiKeyRecord['role']
  tenant: string | null
  types: string | null
  hash: string
  created_at: string
  revoked_at: string | null
}

/** API keys in the same SQLite file as the jobs (its own connection and table). */
export class SqliteKeyStore implements KeyStore {
  readonly #db: Database.Database

  constructor(path: string) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true })
    this.#db = new Database(path)
    this.#db.pragma('journal_mode = WAL')
    this.#db.pragma('synchronous = FULL')
    this.#db.pragma('busy_timeout = 5000')
    this.#db.exec(`CREATE TABLE IF NOT EXISTS api_keys (
      id TEXT PRIMARY KEY,
      name TEXT NOT NULL,
      role TEXT NOT NULL,
      tenant TEXT,
      types TEXT,
      hash TEXT NOT NULL,
      created_at TEXT NOT NULL,
      revoked_at TEXT
    )`)
  }

  async create(record: ApiKeyRecord): Promise<void> {
    this.#db
      .prepare('INSERT INTO api_keys (id, name, role, tenant, types, hash, created_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
      .run(record.id, record.name, record.role, record.tenant, record.types === null ? null : JSON.stringify(record.types), record.hash, record.createdAt, record.revokedAt)
  }

  async get(id: string): Promise<ApiKeyRecord | null> {
    const row = this.#db.prepare<[string], Row>('SELECT * FROM api_keys WHERE id = ?').get(id)
    return row === undefined ? null : toRecord(row)
  }

  async list(): Promise<ApiKeyRecord[]> {
    return this.#db.prepare<[], Row>('SELECT * FROM api_keys ORDER BY created_at').all().map(toRecord)
  }

  async revoke(id: string, at: string): Promise<boolean> {
    const result = this.#db.prepare('UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?').run(at, id)
    return result.changes > 0
  }

  async close(): Promise<void> {
    if (this.#db.open) this.#db.close()
  }
}

function toRecord(row: Row): ApiKeyRecord {
  return {
    id: row.id,
    name: row.name,
    role: row.role,
    tenant: row.tenant,
    types: row.types === null ? null : (JSON.parse(row.types) as string[]),
    hash: row.hash,
    createdAt: row.created_at,
    revokedAt: row.revoked_at,
  }
}
