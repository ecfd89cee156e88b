import type { ApiKeyRole, TokenRight } from '@jobwire/protocol'

export type Role = ApiKeyRole
export const roles: readonly Role[] = ['admin', 'backend', 'worker']
export type Right = TokenRight

/**
 * Who is asking, as established by authentication. What a principal may do is decided in one
 * place, `access.ts`, as a pure function of the principal and the job, so the same rules hold on
 * every route, every transport and every node.
 */
export type Principal =
  /** An API key (or the bootstrap admin key). A `tenant` binds it to that tenant's jobs. */
  | { kind: 'key'; keyId: string; role: Role; tenant: string | null; types: readonly string[] | null }
  /**
   * A person, from the app's own JWT: their jobs only; with `tenantWide`, they may also read
   * (not cancel) every job of their tenant (a team's page). `create`: job types they may start
   * (and resume) themselves, as their own jobs (`--jwt-create-types`).
   */
  | { kind: 'user'; tenant: string; user: string; rights: ReadonlySet<Right>; expiresAt: number | null; tenantWide?: boolean; create?: readonly string[] }
  /** A subscription token minted by a backend: listed jobs, all jobs of one user, or all jobs of one tenant (`user` null). */
  | {
      kind: 'token'
      tenant: string | null
      user: string | null
      jobIds: readonly string[] | null
      rights: ReadonlySet<Right>
      expiresAt: number
      tokenId: string
      /** Job types the holder may start (and resume) as the token's user; only tokens naming a user carry it. */
      create?: readonly string[]
    }

/**
 * The identity limits are counted against: one person (the same whether an app JWT, a user token or
 * a per-job token minted for them carries them), one token minted for no one, or one key.
 */
export function limitSubject(principal: Principal): string {
  switch (principal.kind) {
    case 'key':
      return `key:${principal.keyId}`
    case 'user':
      return `user:${personKey(principal.tenant, principal.user)}`
    case 'token':
      return principal.user !== null ? `user:${personKey(principal.tenant ?? '', principal.user)}` : `token:${principal.tokenId}`
  }
}

/**
 * What an owner's tenant and user may hold, wherever one is named (HTTP bodies and queries, a
 * WebSocket `subscribe_user`): no control characters, and no ":" in a tenant, so that
 * `owner=tenant:user` splits at the first one.
 */
export const ownerNamePatterns = { tenant: /^[^\p{Cc}:]+$/u, user: /^[^\p{Cc}]+$/u } as const
export const ownerNameRules = { tenant: 'no control characters or ":"', user: 'no control characters' } as const

/**
 * The address a client's stream counts against (`--streams-per-ip`), or null when the client is
 * gone: a destroyed or reset socket has no address any more (Node answers undefined), and streams
 * counted it under "undefined" (or '', on WebSocket), one bucket for every gone client of every
 * address. A caller gives up such a request before counting it.
 */
export function clientAddress(socket: { readonly destroyed: boolean; readonly remoteAddress?: string | undefined }): string | null {
  const address = socket.remoteAddress
  return socket.destroyed || address === undefined || address === '' ? null : address
}

/** A person as one counter key: escaped, so that no tenant or user with a `:` in it can pass for another person. */
export function personKey(tenant: string, user: string): string {
  return `${encodeURIComponent(tenant)}:${encodeURIComponent(user)}`
}
