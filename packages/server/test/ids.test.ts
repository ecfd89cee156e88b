import { describe, expect, it } from 'vitest'
import { isJobIdShape, newJobId } from '../src/core/ids.js'

describe('job ids', () => {
  it('are 128 random bits in the documented shape, distinct across many refills of the random pool', () => {
    const ids = Array.from({ length: 5_000 }, () => newJobId())
    expect(ids.every(isJobIdShape)).toBe(true)
    expect(new Set(ids).size).toBe(ids.length)
    // Every base64url character position varies: no byte of the pool is reused as a constant.
    const lastChars = new Set(ids.map((id) => id.at(-1)))
    expect(lastChars.size).toBeGreaterThan(1)
    const firstChars = new Set(ids.map((id) => id.charAt(4)))
    expect(firstChars.size).toBeGreaterThan(32)
  })
})
