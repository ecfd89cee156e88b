import { decodeJwt, decodeProtectedHeader } from 'jose'
import { describe, expect, it } from 'vitest'
import { mintSubscriptionToken } from '@jobwire/backend'
import { signSubscriptionToken, verifySubscriptionToken } from '../src/auth/tokens.js'

const secret = 'token-format-test-secret-0123456789abcdef'
const key = new TextEncoder().encode(secret)

/**
 * `@jobwire/backend` signs subscription tokens with node:crypto (its mint is synchronous; jose only
 * signs asynchronously); the server signs them with jose. Both must make the same token.
 */
describe('subscription tokens: the backend mints what the server signs', () => {
  const scopes = [
    { jobIds: ['job_a', 'job_b'], rights: ['read', 'cancel'] as ('read' | 'cancel')[] },
    { tenant: 'acme', user: 'ann', create: ['report'] },
    { tenant: 'acme' },
  ]

  it.each(scopes.map((scope) => [JSON.stringify(scope), scope] as const))('%s: the same header and claims (but jti), and the server reads both alike', async (_name, scope) => {
    const now = Date.now()
    const minted = mintSubscriptionToken({ secret, ...scope, ...(scope.tenant !== undefined && !('user' in scope) ? { tenantWide: true } : {}), ttlSeconds: 600, now })
    const signed = await signSubscriptionToken(key, scope, 600, now)
    expect(decodeProtectedHeader(minted.token)).toEqual(decodeProtectedHeader(signed.token))
    const { jti: mintedId, ...mintedClaims } = decodeJwt(minted.token)
    const { jti: signedId, ...signedClaims } = decodeJwt(signed.token)
    expect(mintedClaims).toEqual(signedClaims)
    expect(mintedId).toMatch(/^[\w-]{16}$/)
    expect(signedId).toMatch(/^[\w-]{16}$/)
    expect(minted.expiresAt).toBe(signed.expiresAt)
    const fromMinted = await verifySubscriptionToken(key, minted.token)
    const fromSigned = await verifySubscriptionToken(key, signed.token)
    expect({ ...fromMinted, tokenId: 'either' }).toEqual({ ...fromSigned, tokenId: 'either' })
  })
})
