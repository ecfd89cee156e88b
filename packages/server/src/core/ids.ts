import { randomBytes } from 'node:crypto'

/** A job id: 128 random bits, base64url (22 characters), prefixed so it reads as a job id in logs. */
export function newJobId(): string {
  return `job_${randomBytes(16).toString('base64url')}`
}

/** Cheap check before touching the store with a path parameter. */
export function isJobIdShape(value: string): boolean {
  return /^job_[A-Za-z0-9_-]{22}$/.test(value)
}
