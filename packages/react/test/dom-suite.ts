import { afterEach, beforeAll } from 'vitest'
import { cleanup } from '@testing-library/react'

/**
 * The hooks of a DOM suite against a live server. Updates come from real sockets, outside act()
 * (findBy/waitFor wait for them); after each test its render is unmounted and what `opened`
 * returns (the test's client and server; closing one twice is harmless) is closed.
 */
export function liveDomSuite(opened: () => ({ close(): unknown } | null | undefined)[]): void {
  beforeAll(() => {
    ;(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = false
  })
  afterEach(async () => {
    cleanup()
    for (const one of opened()) await one?.close()
  })
}
