/**
 * A typecheck test (compiled by `npm run typecheck`, run by nothing): the `ws` package's WebSocket
 * is accepted as the client's `WebSocket` under strict TypeScript, with no cast. It failed with
 * TS2322 when the client's socket handlers were typed more narrowly than `ws`'s events.
 */
import WebSocket from 'ws'
import { createJobwireClient, type JobwireClient } from '@jobwire/client'

export function clientWithWsPackage(url: string): JobwireClient {
  return createJobwireClient({ url, WebSocket })
}
