/**
 * The pieces of the platform the client uses, all replaceable: tests drive reconnects with their
 * own timers, sockets and network; Node passes the `ws` package's WebSocket.
 */

/**
 * An event handler the client sets. Written as a method's type so that a platform's handler
 * property typed with its own, richer event (the `ws` package's `MessageEvent`, the DOM's) fits it
 * without a cast: the client only reads the fields named here.
 */
type Handler<Event> = { handle(event: Event): void }['handle']

/** The part of the WebSocket API the client uses (browsers' and the `ws` package's both fit, as they are). */
export interface WebSocketLike {
  readonly readyState: number
  onopen: Handler<unknown> | null
  onmessage: Handler<{ data: unknown }> | null
  onclose: Handler<{ code: number; reason: string }> | null
  onerror: Handler<unknown> | null
  send(data: string): void
  close(code?: number, reason?: string): void
}
export type WebSocketConstructor = new (url: string) => WebSocketLike

/** The part of the EventSource API the client uses. */
export interface EventSourceLike {
  /** 2 (CLOSED) in `onerror` when the server refused the stream rather than dropped it. */
  readonly readyState?: number
  onopen: ((event: unknown) => void) | null
  onerror: ((event: unknown) => void) | null
  addEventListener(type: string, listener: (event: { data: string }) => void): void
  close(): void
}
export type EventSourceConstructor = new (url: string) => EventSourceLike

export type TimerHandle = unknown

export interface Timers {
  setTimeout(callback: () => void, ms: number): TimerHandle
  clearTimeout(handle: TimerHandle): void
}

/** Whether the device is online, and when that changes (`online`/`offline` events in browsers). */
export interface OnlineSource {
  isOnline(): boolean
  subscribe(listener: (online: boolean) => void): () => void
}

export interface Environment {
  fetch: typeof fetch
  WebSocket: WebSocketConstructor | null
  EventSource: EventSourceConstructor | null
  timers: Timers
  online: OnlineSource
  /** Uniform in [0, 1): the jitter of backoffs. */
  random: () => number
  /** Epoch milliseconds. */
  now: () => number
}

export interface EnvironmentOptions {
  fetch?: typeof fetch
  /** `null` disables the transport even where the platform has one. */
  WebSocket?: WebSocketConstructor | null
  EventSource?: EventSourceConstructor | null
  timers?: Timers
  online?: OnlineSource
  random?: () => number
  now?: () => number
}

/** Online/offline from `navigator.onLine` and window events where they exist; always online elsewhere. */
function platformOnlineSource(): OnlineSource {
  const target = globalThis as unknown as {
    navigator?: { onLine?: boolean }
    addEventListener?: (type: string, listener: () => void) => void
    removeEventListener?: (type: string, listener: () => void) => void
  }
  return {
    isOnline: () => target.navigator?.onLine !== false,
    subscribe(listener) {
      if (typeof target.addEventListener !== 'function' || typeof target.removeEventListener !== 'function') return () => {}
      const online = (): void => listener(true)
      const offline = (): void => listener(false)
      target.addEventListener('online', online)
      target.addEventListener('offline', offline)
      return () => {
        target.removeEventListener?.('online', online)
        target.removeEventListener?.('offline', offline)
      }
    },
  }
}

export function resolveEnvironment(options: EnvironmentOptions): Environment {
  const platform = globalThis as unknown as { WebSocket?: WebSocketConstructor; EventSource?: EventSourceConstructor }
  const fetchFn = options.fetch ?? globalThis.fetch
  if (typeof fetchFn !== 'function') throw new TypeError('@jobwire/client: no fetch on this platform; pass options.fetch')
  return {
    fetch: options.fetch ?? ((input, init) => globalThis.fetch(input, init)),
    WebSocket: options.WebSocket !== undefined ? options.WebSocket : (platform.WebSocket ?? null),
    EventSource: options.EventSource !== undefined ? options.EventSource : (platform.EventSource ?? null),
    timers: options.timers ?? {
      setTimeout: (callback, ms) => setTimeout(callback, ms),
      clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
    },
    online: options.online ?? platformOnlineSource(),
    random: options.random ?? Math.random,
    now: options.now ?? Date.now,
  }
}
