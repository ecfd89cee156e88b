import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import semver from 'semver'
import { describe, expect, it } from 'vitest'

/**
 * `npm ci` on the oldest Node we support prints no `EBADENGINE`: every package in the lockfile
 * accepts that Node. It used to warn `cookie@2.0.2 requires node >=22` (fastify's light-my-request
 * pulls it; an `overrides` entry pins cookie 1.x there, which has the same API and supports Node 18+).
 */
const repo = fileURLToPath(new URL('../', import.meta.url))
const json = <T>(path: string): T => JSON.parse(readFileSync(`${repo}${path}`, 'utf8')) as T

interface LockEntry {
  version?: string
  dev?: boolean
  engines?: { node?: string } | string[]
}
const lock = json<{ packages: Record<string, LockEntry> }>('package-lock.json')
const publicPackages = ['protocol', 'backend', 'client', 'react', 'worker', 'server']

/** Lockfile entries whose `engines.node` refuses `version`. */
function refusing(version: string, include: (entry: LockEntry) => boolean): string[] {
  return Object.entries(lock.packages)
    .filter(([path, entry]) => path !== '' && include(entry))
    .flatMap(([path, entry]) => {
      const range = Array.isArray(entry.engines) ? undefined : entry.engines?.node
      return range === undefined || semver.satisfies(version, range, { includePrerelease: true }) ? [] : [`${path}@${entry.version ?? '?'} wants node ${range}`]
    })
}

describe('Node engines', () => {
  it('has no package in the lockfile that refuses the repository’s oldest Node (npm ci prints no EBADENGINE)', () => {
    const oldest = semver.minVersion(json<{ engines: { node: string } }>('package.json').engines.node)?.version
    expect(oldest).toBeDefined()
    expect(refusing(oldest as string, () => true)).toEqual([])
  })

  it('installs the published packages’ runtime dependencies on the oldest Node they declare', () => {
    for (const name of publicPackages) {
      const manifest = json<{ name: string; engines?: { node?: string } }>(`packages/${name}/package.json`)
      expect(manifest.engines?.node, manifest.name).toBeDefined()
      const oldest = semver.minVersion(manifest.engines?.node as string)?.version as string
      expect(refusing(oldest, (entry) => entry.dev !== true), manifest.name).toEqual([])
    }
  })
})
