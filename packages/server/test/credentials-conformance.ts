import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { JobwireError } from '@jobwire/protocol'
import { Authenticator } from '../src/auth/authenticator.js'
import type { ApiKeyRecord, KeyStore, RateCounter, StreamCounter } from '../src/core/keys.js'
import type { Principal } from '../src/core/scopes.js'
import { Limits, type LimitSettings } from '../src/http/limits.js'
import { Metrics } from '../src/metrics.js'

/** One server node's view of a deployment's credentials: its key store and its limit counters. */
export interface CredentialsNode {
  keys: KeyStore
  rate: RateCounter
  streams: StreamCounter
}

/** One deployment (a memory server, a SQLite file, a Redis prefix) whose nodes the suite opens. */
export interface CredentialsDeployment {
  /** Opens a node on the deployment (on SQLite: another process on the same file). */
  node(): Promise<CredentialsNode>
  /** The node dies without a word: no release, no close (its process was killed). */
  crash(node: CredentialsNode): Promise<void>
  /** Closes whatever is still open and deletes what the deployment wrote. */
  close(): Promise<void>
}

export interface CredentialsBackend {
  /** API keys outlive the node that wrote them (a file, a shared Redis). */
  durable: boolean
  /** Nodes count limits together; otherwise each node (a single-node deployment) counts its own. */
  shared: boolean
  /** A fresh, empty deployment. */
  deployment(): Promise<CredentialsDeployment>
}

/** Polls `condition` every 20 ms (up to 10 s): for what a backend does in the background (a release reaching Redis, a lease lapsing). */
async function eventually(condition: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await condition()) return
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  throw new Error(`never happened: ${what}`)
}

const record = (id: string, createdAt: string, overrides: Partial<ApiKeyRecord> = {}): ApiKeyRecord => ({
  id,
  name: `key ${id}`,
  role: 'backend',
  tenant: 'acme',
  types: ['export', 'import'],
  hash: 'cd'.repeat(32),
  createdAt,
  revokedAt: null,
  ...overrides,
})

const at = (second: number): string => new Date(Date.UTC(2026, 0, 1, 0, 0, second)).toISOString()

const person = (tenant: string, user: string): Principal => ({ kind: 'user', tenant, user, rights: new Set(), expiresAt: null })

const limitSettings = (overrides: Partial<LimitSettings> = {}): LimitSettings => ({
  createLimit: 3,
  createWindowMs: 60_000,
  streamsPerUser: 2,
  streamsPerIp: 1_000,
  maxConnections: 1_000,
  maxBodyBytesInFlight: 128 * 1024 ** 2,
  ...overrides,
})

/** Sorts settled promises into what was granted and the error codes of what was refused. */
function outcomes<T>(settled: PromiseSettledResult<T>[]): { granted: T[]; refused: string[] } {
  const granted: T[] = []
  const refused: string[] = []
  for (const result of settled) {
    if (result.status === 'fulfilled') granted.push(result.value)
    else refused.push(result.reason instanceof JobwireError ? result.reason.code : String(result.reason))
  }
  return { granted, refused }
}

/**
 * The contract of the API key store and the limit counters (rate windows, stream slots), the same
 * on every backend a server runs on: memory, SQLite (keys in the file, counters in the process)
 * and Redis (both shared by the nodes). Used only through the KeyStore / RateCounter /
 * StreamCounter interfaces, and through the Authenticator and Limits the server builds on them.
 */
export function describeCredentialsConformance(name: string, backend: CredentialsBackend): void {
  describe(`Credentials conformance: ${name}`, () => {
    const open: CredentialsDeployment[] = []
    afterEach(async () => {
      for (const deployment of open.splice(0)) await deployment.close()
    })
    afterAll(async () => {
      for (const deployment of open.splice(0)) await deployment.close()
    })
    async function deployment(): Promise<CredentialsDeployment> {
      const made = await backend.deployment()
      open.push(made)
      return made
    }

    describe('API keys', () => {
      it('creates, gets and lists keys exactly as given, in creation order; an unknown id is null', async () => {
        const { keys } = await (await deployment()).node()
        const one = record('key-one', at(1))
        const two = record('key-two', at(2), { role: 'worker', tenant: null, types: null })
        const three = record('key-three', at(3), { role: 'admin', types: [] })
        await keys.create(one)
        await keys.create(two)
        await keys.create(three)
        expect(await keys.get('key-one')).toEqual(one)
        expect(await keys.get('key-two')).toEqual(two)
        expect(await keys.get('key-three')).toEqual(three)
        expect(await keys.get('key-none')).toBeNull()
        expect(await keys.list()).toEqual([one, two, three])
      })

      it('hands out copies: changing a record read does not change the stored one', async () => {
        const { keys } = await (await deployment()).node()
        await keys.create(record('key-copy', at(1)))
        const read = (await keys.get('key-copy')) as ApiKeyRecord
        read.revokedAt = at(9)
        ;(read.types as string[]).push('everything')
        const listed = (await keys.list())[0] as ApiKeyRecord
        listed.role = 'admin'
        expect(await keys.get('key-copy')).toEqual(record('key-copy', at(1)))
      })

      it('revokes a key once: the first time is kept, an unknown id is false, other keys stay valid', async () => {
        const { keys } = await (await deployment()).node()
        await keys.create(record('key-a', at(1)))
        await keys.create(record('key-b', at(2)))
        expect(await keys.revoke('key-a', at(10))).toBe(true)
        expect(await keys.revoke('key-a', at(20))).toBe(true)
        expect(await keys.revoke('key-missing', at(10))).toBe(false)
        expect((await keys.get('key-a'))?.revokedAt).toBe(at(10))
        expect((await keys.get('key-b'))?.revokedAt).toBeNull()
        expect((await keys.list()).map((key) => [key.id, key.revokedAt])).toEqual([
          ['key-a', at(10)],
          ['key-b', null],
        ])
      })

      it('keeps every one of many keys created at once', async () => {
        const { keys } = await (await deployment()).node()
        const made = Array.from({ length: 40 }, (_, i) => record(`key-${String(i).padStart(2, '0')}`, at(i)))
        await Promise.all(made.map((one) => keys.create(one)))
        expect(await keys.list()).toEqual(made)
      })

      it('key ids never start with - or _ (a CLI argument such as `keys revoke <id>` would be read as an option)', async () => {
        const { keys } = await (await deployment()).node()
        const auth = new Authenticator({ adminKey: 'conformance-admin-key-0123456789', keys, tokenSecret: new TextEncoder().encode('s'.repeat(32)), appJwt: null })
        // Without the rule, 200 ids would start with one of the two about six times.
        const made = await Promise.all(Array.from({ length: 200 }, (_, i) => auth.createKey({ name: `k${i}`, role: 'worker' })))
        expect(made.filter(({ record }) => !/^[A-Za-z0-9]/.test(record.id))).toEqual([])
      })

      it('rotates a key through the Authenticator: both work until the old one is revoked, then only the new one', async () => {
        const { keys } = await (await deployment()).node()
        const auth = new Authenticator({ adminKey: 'conformance-admin-key-0123456789', keys, tokenSecret: new TextEncoder().encode('s'.repeat(32)), appJwt: null })
        const revoked: string[] = []
        auth.onRevoke((id) => revoked.push(id))
        const old = await auth.createKey({ name: 'backend', role: 'backend', tenant: 'acme' })
        const principalOf = (key: string) => auth.authenticate(key)
        expect(await principalOf(old.key)).toEqual({ kind: 'key', keyId: old.record.id, role: 'backend', tenant: 'acme', types: null })
        const next = await auth.createKey({ name: 'backend (rotated)', role: 'backend', tenant: 'acme' })
        expect((await principalOf(old.key)).kind).toBe('key')
        expect((await principalOf(next.key)).kind).toBe('key')
        expect((await auth.listKeys()).map((key) => key.id).sort()).toEqual([old.record.id, next.record.id].sort())

        await auth.revokeKey(old.record.id)
        expect(revoked).toEqual([old.record.id])
        await expect(principalOf(old.key)).rejects.toMatchObject({ code: 'unauthorized' })
        expect(await principalOf(next.key)).toMatchObject({ keyId: next.record.id })
        expect(await auth.stillValid(await principalOf(next.key))).toBe(true)
        expect(await auth.stillValid({ kind: 'key', keyId: old.record.id, role: 'backend', tenant: 'acme', types: null })).toBe(false)
        await expect(auth.revokeKey('no-such-key')).rejects.toMatchObject({ code: 'key_not_found' })
        // The secret is never stored: the record holds its hash, which the key does not contain.
        const stored = (await keys.get(next.record.id)) as ApiKeyRecord
        expect(stored.hash).toMatch(/^[0-9a-f]{64}$/)
        expect(next.key).not.toContain(stored.hash)
        // A wrong secret for a real id is refused like an unknown key.
        await expect(principalOf(`jwk_${next.record.id}.${'x'.repeat(32)}`)).rejects.toMatchObject({ code: 'unauthorized' })
      })

      if (backend.durable) {
        it('keys and revocations written by one node are read by another, also after the writer is gone', async () => {
          const d = await deployment()
          const writer = await d.node()
          await writer.keys.create(record('key-kept', at(1)))
          await writer.keys.create(record('key-dropped', at(2)))
          await writer.keys.revoke('key-dropped', at(5))
          await d.crash(writer)
          const reader = await d.node()
          expect(await reader.keys.list()).toEqual([record('key-kept', at(1)), record('key-dropped', at(2), { revokedAt: at(5) })])
          expect(await reader.keys.revoke('key-kept', at(7))).toBe(true)
          const third = await d.node()
          expect((await third.keys.get('key-kept'))?.revokedAt).toBe(at(7))
        })
      }

      if (backend.shared) {
        it('a key revoked through one node is announced to the others that watch revocations', async () => {
          const d = await deployment()
          const [a, b] = [await d.node(), await d.node()]
          const heard: string[] = []
          expect(a.keys.watchRevocations).toBeTypeOf('function')
          a.keys.watchRevocations?.((id) => heard.push(id))
          await b.keys.create(record('key-watched', at(1)))
          await b.keys.revoke('key-watched', at(2))
          await eventually(() => heard.length > 0, 'the other node hears of the revocation')
          expect(heard).toEqual(['key-watched'])
        })
      }
    })

    describe('rate counters (fixed windows)', () => {
      it('admits exactly max of many concurrent hits in a window, then says how long to wait; subjects count apart', async () => {
        const d = await deployment()
        const nodes = backend.shared ? [await d.node(), await d.node()] : [await d.node()]
        const answers = await Promise.all(Array.from({ length: 25 }, (_, i) => (nodes[i % nodes.length] as CredentialsNode).rate.hit('create:acme:ann', 7, 60_000)))
        expect(answers.filter((answer) => answer.ok)).toHaveLength(7)
        for (const answer of answers) {
          if (answer.ok) expect(answer.retryAfterMs).toBe(0)
          else expect(answer.retryAfterMs).toBeGreaterThan(0)
          expect(answer.retryAfterMs).toBeLessThanOrEqual(60_000)
        }
        expect(await (nodes[0] as CredentialsNode).rate.hit('create:acme:bob', 7, 60_000)).toEqual({ ok: true, retryAfterMs: 0 })
      })

      it('a full window admits again once it has passed, and refused hits do not count', async () => {
        const { rate } = await (await deployment()).node()
        for (let i = 0; i < 2; i++) expect((await rate.hit('create:window', 2, 300)).ok).toBe(true)
        const refused = await rate.hit('create:window', 2, 300)
        expect(refused.ok).toBe(false)
        expect(refused.retryAfterMs).toBeLessThanOrEqual(300)
        // Polling with hits: a refused hit counts nothing, so the first admitted one opens the next window.
        await eventually(async () => (await rate.hit('create:window', 2, 300)).ok, 'the next window')
      })
    })

    describe('stream counters (slots)', () => {
      it('admits exactly max of many concurrent acquires; count says so; subjects count apart', async () => {
        const d = await deployment()
        const nodes = backend.shared ? [await d.node(), await d.node()] : [await d.node()]
        const grants = await Promise.all(Array.from({ length: 12 }, (_, i) => (nodes[i % nodes.length] as CredentialsNode).streams.acquire('streams:user:acme:ann', 3)))
        const held = grants.filter((grant): grant is () => void => grant !== null)
        expect(held).toHaveLength(3)
        for (const node of nodes) expect(await node.streams.count('streams:user:acme:ann')).toBe(3)
        expect(await (nodes[0] as CredentialsNode).streams.acquire('streams:user:acme:ann', 3)).toBeNull()
        expect(await (nodes[0] as CredentialsNode).streams.count('streams:user:acme:bob')).toBe(0)
        expect(await (nodes[0] as CredentialsNode).streams.acquire('streams:user:acme:bob', 3)).not.toBeNull()
        for (const release of held) release()
      })

      it('a release (given twice, counted once) frees exactly one slot; all released, the count is zero', async () => {
        const d = await deployment()
        const nodes = backend.shared ? [await d.node(), await d.node()] : [await d.node()]
        const [a, b] = [nodes[0] as CredentialsNode, nodes.at(-1) as CredentialsNode]
        const held = [await a.streams.acquire('streams-ip:10.0.0.1', 2), await b.streams.acquire('streams-ip:10.0.0.1', 2)]
        expect(held.every((slot) => slot !== null)).toBe(true)
        expect(await a.streams.acquire('streams-ip:10.0.0.1', 2)).toBeNull()
        held[0]?.()
        held[0]?.()
        await eventually(async () => (await b.streams.count('streams-ip:10.0.0.1')) === 1, 'the release to be counted')
        const again = await b.streams.acquire('streams-ip:10.0.0.1', 2)
        expect(again).not.toBeNull()
        expect(await b.streams.acquire('streams-ip:10.0.0.1', 2)).toBeNull()
        held[1]?.()
        again?.()
        await eventually(async () => (await a.streams.count('streams-ip:10.0.0.1')) === 0, 'every slot given back')
        expect(await b.streams.count('streams-ip:10.0.0.1')).toBe(0)
      })

      it('the slots of a node that crashed are not held forever: the deployment admits max again', async () => {
        const d = await deployment()
        const doomed = await d.node()
        for (let i = 0; i < 2; i++) expect(await doomed.streams.acquire('streams:user:acme:cy', 2)).not.toBeNull()
        const survivor = await d.node()
        if (backend.shared) {
          expect(await survivor.streams.count('streams:user:acme:cy')).toBe(2)
          expect(await survivor.streams.acquire('streams:user:acme:cy', 2)).toBeNull()
        }
        await d.crash(doomed)
        await eventually(async () => (await survivor.streams.count('streams:user:acme:cy')) === 0, "the crashed node's slots to lapse")
        const grants = await Promise.all(Array.from({ length: 5 }, () => survivor.streams.acquire('streams:user:acme:cy', 2)))
        expect(grants.filter((grant) => grant !== null)).toHaveLength(2)
      })
    })

    describe('the server limits on these counters', () => {
      it("a person's concurrent stream opens at the limit: exactly streamsPerUser get through, the rest too_many_streams", async () => {
        const d = await deployment()
        const nodes = backend.shared ? [await d.node(), await d.node()] : [await d.node()]
        const limits = nodes.map((node) => new Limits(limitSettings({ streamsPerUser: 2 }), node.rate, node.streams, new Metrics()))
        const settled = await Promise.allSettled(Array.from({ length: 9 }, (_, i) => (limits[i % limits.length] as Limits).openStream(person('acme', 'ann'), `10.0.0.${i}`)))
        const { granted, refused } = outcomes(settled)
        expect(granted).toHaveLength(2)
        expect(refused).toEqual(Array(7).fill('too_many_streams'))
        // The refused ones gave back what they had taken: the node's connections and the addresses' slots.
        expect(limits.reduce((sum, one) => sum + one.connections, 0)).toBe(2)
        expect(await (nodes[0] as CredentialsNode).streams.count('streams-ip:10.0.0.8')).toBe(0)
        // API keys are not counted per person.
        const key: Principal = { kind: 'key', keyId: 'k1', role: 'backend', tenant: null, types: null }
        const keyed = await Promise.all(Array.from({ length: 5 }, () => (limits[0] as Limits).openStream(key, '10.0.0.1')))
        for (const slot of [...granted, ...keyed]) slot.release()
        await eventually(async () => (await (nodes[0] as CredentialsNode).streams.count('streams:user:acme:ann')) === 0, 'the slots released')
      })

      it("a tenant's tier sets its people's stream limit; a moved stream changes whose slot it holds", async () => {
        const d = await deployment()
        const node = await d.node()
        const limits = new Limits(limitSettings({ streamsPerUser: 1, tenantTiers: { acme: 'gold' }, streamsPerUserByTier: { gold: 3 } }), node.rate, node.streams, new Metrics())
        const gold = outcomes(await Promise.allSettled(Array.from({ length: 6 }, () => limits.openStream(person('acme', 'ann'), '10.0.0.1'))))
        expect(gold.granted).toHaveLength(3)
        const plain = outcomes(await Promise.allSettled(Array.from({ length: 4 }, () => limits.openStream(person('initech', 'bob'), '10.0.0.2'))))
        expect(plain.granted).toHaveLength(1)
        // One of ann's streams is taken over by dan (a refreshed credential naming another person).
        await (gold.granted[0] as (typeof gold.granted)[number]).moveTo(person('acme', 'dan'))
        await eventually(async () => (await node.streams.count('streams:user:acme:ann')) === 2, "ann's slot given back")
        expect(await node.streams.count('streams:user:acme:dan')).toBe(1)
        // bob has no slot left to move into.
        await expect((gold.granted[1] as (typeof gold.granted)[number]).moveTo(person('initech', 'bob'))).rejects.toMatchObject({ code: 'too_many_streams' })
        expect(await node.streams.count('streams:user:acme:ann')).toBe(2)
        for (const slot of [...gold.granted, ...plain.granted]) slot.release()
      })

      it("concurrent job creations at a person's limit: exactly createLimit get through, then rate_limited with a retry time", async () => {
        const d = await deployment()
        const nodes = backend.shared ? [await d.node(), await d.node()] : [await d.node()]
        const limits = nodes.map((node) => new Limits(limitSettings({ createLimit: 3, createLimitByType: { export: 1 } }), node.rate, node.streams, new Metrics()))
        const owner = { tenant: 'acme', user: 'ann' }
        const settled = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => (limits[i % limits.length] as Limits).countCreation(owner, 'report')))
        expect(outcomes(settled)).toEqual({ granted: Array(3).fill(undefined), refused: Array(7).fill('rate_limited') })
        const refusal = settled.find((result) => result.status === 'rejected') as PromiseRejectedResult
        expect((refusal.reason as JobwireError).details).toMatchObject({ limit: 'job creations', max: 3, retryAfter: expect.any(Number) })
        // A type with its own limit counts apart; jobs without an owner are not counted.
        await (limits[0] as Limits).countCreation(owner, 'export')
        await expect((limits.at(-1) as Limits).countCreation(owner, 'export')).rejects.toMatchObject({ code: 'rate_limited' })
        await (limits[0] as Limits).countCreation(null, 'report')
      })
    })
  })
}
