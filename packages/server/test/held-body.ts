/**
 * Requests whose body is held back on a raw socket, for the `--max-body-bytes-in-flight` tests:
 * the server has the headers (and all but the last byte of the body) and waits for the rest.
 */
import { connect, type Socket } from 'node:net'
import { until } from '../../../test/support/wait.js'

export interface HeldRequest {
  /** Everything the server answered, once it closes the connection (`Connection: close` is sent). */
  answer: Promise<string>
  /** Sends what was held back: the body's last byte, or a chunked body's last chunk and end. */
  finish(): void
  /** Goes away mid-body. */
  abort(): void
}

/**
 * POSTs `body` to `path` with the headers and all but its last byte sent (`chunked`: as one chunk
 * of all but the last byte, without the terminating chunk).
 */
export function holdRequest(url: string, key: string, path: string, body: string, options: { chunked?: boolean } = {}): HeldRequest {
  const { port } = new URL(url)
  const socket: Socket = connect(Number(port), '127.0.0.1')
  const framing = options.chunked === true ? 'transfer-encoding: chunked' : `content-length: ${Buffer.byteLength(body)}`
  socket.write(`POST ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${key}\r\ncontent-type: application/json\r\nconnection: close\r\n${framing}\r\n\r\n`)
  const head = body.slice(0, -1)
  const last = body.slice(-1)
  socket.write(options.chunked === true ? `${Buffer.byteLength(head).toString(16)}\r\n${head}\r\n` : head)
  let text = ''
  socket.setEncoding('utf8')
  socket.on('data', (chunk: string) => (text += chunk))
  socket.on('error', () => {})
  return {
    answer: new Promise((resolve) => socket.on('close', () => resolve(text))),
    finish: () => socket.write(options.chunked === true ? `1\r\n${last}\r\n0\r\n\r\n` : last),
    abort: () => socket.destroy(),
  }
}

/** The node's `jobwire_http_body_bytes_in_flight`, read from /metrics with the admin key. */
export async function bodyBytesInFlight(url: string, key: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${key}` } })).text()
  const found = /^jobwire_http_body_bytes_in_flight (\d+)$/m.exec(text)
  if (found === null) throw new Error('/metrics has no jobwire_http_body_bytes_in_flight')
  return Number(found[1])
}

/** Resolves once the gauge reads `bytes` (the server has taken the held requests' headers); rejects after 10 s. */
export function untilBodyBytesInFlight(url: string, key: string, bytes: number): Promise<void> {
  return until(async () => (await bodyBytesInFlight(url, key)) === bytes, `jobwire_http_body_bytes_in_flight to read ${bytes}`, 10_000)
}
