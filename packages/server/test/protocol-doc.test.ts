/**
 * docs/protocol.md is the wire spec: it names every WebSocket message type of both directions and
 * the protocol version, and the `welcome` it documents is the one a real server sends.
 */
import { readFileSync } from 'node:fs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { protocolVersion, wsClientMessageTypes, type WsServerMessage, type WsServerMessageType } from '@jobwire/protocol'
import { startTestServer, type TestServer } from './fixtures.js'
import { openWs, wsUrl } from './ws-client.js'

const spec = readFileSync(new URL('../../../docs/protocol.md', import.meta.url), 'utf8')
/** The first cell of each row of the table whose header starts with `header`. */
function firstCells(header: string): string[] {
  const table = spec.split(`\n| ${header}`)[1]?.split('\n\n')[0] ?? ''
  return table
    .split('\n')
    .slice(2)
    .map((row) => row.replace(/^\| /, '').split(' | ')[0] ?? '')
}
const typesIn = (cells: string[]): Set<string> => new Set(cells.flatMap((cell) => [...cell.matchAll(/`([a-z_]+)[ `]/g)].map((m) => m[1] as string)))

// Every server message type, by the compiler's count: a type added to WsServerMessage must be added here, and documented.
const serverTypes: Record<WsServerMessageType, true> = {
  welcome: true,
  subscribed: true,
  snapshot: true,
  event: true,
  coalesced: true,
  queue: true,
  user_synced: true,
  token_expiring: true,
  error: true,
  token_refreshed: true,
  ack: true,
  pong: true,
  heartbeat: true,
}

let t: TestServer

beforeAll(async () => {
  t = await startTestServer()
})

afterAll(async () => {
  await t.close()
})

describe('docs/protocol.md', () => {
  it('states the protocol version the server speaks', () => {
    expect(spec).toMatch(new RegExp(`version \\*\\*${protocolVersion}\\*\\*`))
  })

  it('has a row for every message a client may send', () => {
    const documented = typesIn(firstCells('client → server'))
    expect(wsClientMessageTypes.filter((type) => !documented.has(type))).toEqual([])
  })

  it('has a row for every message the server sends', () => {
    const documented = typesIn(firstCells('server → client'))
    expect(Object.keys(serverTypes).filter((type) => !documented.has(type))).toEqual([])
  })

  it('documents exactly the fields of the welcome a real server sends', async () => {
    const row = firstCells('server → client').find((cell) => cell.startsWith('`welcome {'))
    const documented = [...(/\{([^}]*)\}/.exec(row ?? '')?.[1] ?? '').split(',')].map((field) => field.trim()).sort()
    const client = await openWs(wsUrl(t.url), { token: t.key })
    try {
      const welcome = await client.next<Extract<WsServerMessage, { type: 'welcome' }>>((message) => message.type === 'welcome')
      expect(welcome.protocol).toBe(protocolVersion)
      expect(Object.keys(welcome).filter((key) => key !== 'type').sort()).toEqual(documented)
    } finally {
      client.close()
    }
  })
})
