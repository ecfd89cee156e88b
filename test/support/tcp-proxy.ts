/**
 * A TCP proxy in front of a real server (the shared Redis, a Jobwire server), so a test can break
 * one client's connections without touching the server itself: take the server "away" (refuse and
 * drop connections), bring it back, blackhole some connections (they stay open but nothing gets
 * through: a silent death), or slow some down (what they send arrives late, in order).
 */
import { createServer, connect, type Server, type Socket } from 'node:net'

export interface TcpProxy {
  /** The upstream's URL with the proxy's address: `redis://127.0.0.1:<port>`, `http://127.0.0.1:<port>` (with its path, if any). */
  readonly url: string
  /** Connections whose first bytes contain `marker` stop passing data both ways, but stay open. */
  blackhole(marker: string): number
  /** What connections whose first bytes contain `marker` send from now on reaches the server `ms` later, in order. */
  delay(marker: string, ms: number): number
  /** How many times `text` went from the clients to the server since `watch(text)` (e.g. a script's SHA). */
  watch(text: string): () => number
  /** Drops every connection and refuses new ones: the server is unreachable. */
  down(): Promise<void>
  /** Accepts connections again on the same port. */
  up(): Promise<void>
  close(): Promise<void>
}

interface Link {
  client: Socket
  upstream: Socket
  /** The first bytes the client sent (its handshake: CLIENT SETNAME tells connections apart). */
  hello: string
  dead: boolean
  /** Delay of what the client sends (ms); 0: passed on at once. */
  lagMs: number
}

const defaultPorts: Record<string, number> = { 'redis:': 6379, 'http:': 80 }

export async function startTcpProxy(upstreamUrl: string): Promise<TcpProxy> {
  const target = new URL(upstreamUrl)
  const links = new Set<Link>()
  /** Per watched text: occurrences so far, and the tail of each link's stream (a match may span chunks). */
  const watched = new Map<string, { count: number; tails: WeakMap<Link, string> }>()
  let server: Server | null = null
  let port = 0

  const accept = (client: Socket): void => {
    const upstream = connect(Number(target.port || defaultPorts[target.protocol] || 0), target.hostname)
    const link: Link = { client, upstream, hello: '', dead: false, lagMs: 0 }
    links.add(link)
    client.on('data', (chunk: Buffer) => {
      if (link.hello.length < 4096) link.hello += chunk.toString('latin1')
      for (const [text, seen] of watched) {
        const stream = (seen.tails.get(link) ?? '') + chunk.toString('latin1')
        for (let at = stream.indexOf(text); at !== -1; at = stream.indexOf(text, at + text.length)) seen.count++
        seen.tails.set(link, stream.slice(-(text.length - 1)))
      }
      if (link.lagMs > 0) setTimeout(() => link.dead || upstream.write(chunk), link.lagMs)
      else if (!link.dead) upstream.write(chunk)
    })
    upstream.on('data', (chunk: Buffer) => {
      if (!link.dead) client.write(chunk)
    })
    const end = (): void => {
      links.delete(link)
      client.destroy()
      upstream.destroy()
    }
    client.on('close', end)
    upstream.on('close', end)
    client.on('error', end)
    upstream.on('error', end)
  }

  const listen = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const next = createServer(accept)
      next.once('error', reject)
      next.listen(port, '127.0.0.1', () => {
        const address = next.address()
        if (typeof address === 'object' && address !== null) port = address.port
        server = next
        resolve()
      })
    })

  const stop = async (): Promise<void> => {
    const current = server
    server = null
    for (const link of links) {
      link.client.destroy()
      link.upstream.destroy()
    }
    links.clear()
    if (current !== null) await new Promise<void>((resolve) => current.close(() => resolve()))
  }

  /** Applies `change` to every link whose connection announced itself with `marker`; how many. */
  function linksOf(marker: string, change: (link: Link) => void): number {
    let count = 0
    for (const link of links) {
      if (link.hello.includes(marker)) {
        change(link)
        count++
      }
    }
    return count
  }

  await listen()
  return {
    url: `${target.protocol}//127.0.0.1:${port}${target.pathname === '/' ? '' : target.pathname}`,
    blackhole(marker) {
      return linksOf(marker, (link) => (link.dead = true))
    },
    delay(marker, ms) {
      return linksOf(marker, (link) => (link.lagMs = ms))
    },
    watch(text) {
      const seen = { count: 0, tails: new WeakMap<Link, string>() }
      watched.set(text, seen)
      return () => seen.count
    },
    down: stop,
    up: listen,
    close: stop,
  }
}
