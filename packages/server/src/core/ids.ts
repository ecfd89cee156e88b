import { randomFillSync } from 'node:crypto'

// Random bytes for ids, drawn from the CSPRNG 4 KiB at a time (as Node's randomUUID does): one
// system call per 256 ids instead of one per id, which shows on every create.
const pool = Buffer.alloc(4096)
let offset = pool.length

/** A job id: 128 random bits, base64url (22 characters), prefixed so it reads as a job id in logs. */
export function newJobId(): string {
  if (offset + 16 > pool.length) {
    randomFillSync(pool)
    offset = 0
  }
  const id = pool.toString('base64url', offset, offset + 16)
  offset += 16
  return `job_${id}`
}

/** Cheap check before touching the store with a path parameter. */
export function isJobIdShape(value: string): boolean {
  return /^job_[A-Za-z0-9_-]{22}$/.test(value)
}
