import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ask, next, start, stop } from './children.mjs'
import { unlinkPrefix } from './redis-keys.mjs'

const targets = join(dirname(fileURLToPath(import.meta.url)), '../shape/targets.mjs')

/**
 * Jobwire on `store` (memory, sqlite, redis) in a process of its own (bench/shape/targets.mjs),
 * with a data directory and a Redis key prefix of its own; `close()` stops it and deletes both.
 */
export async function startTarget(store, apiKey, redisUrl) {
  const prefix = `jwbench:${randomBytes(4).toString('hex')}`
  const dataDir = mkdtempSync(join(tmpdir(), `jobwire-${store}-`))
  const server = start(targets, [`jobwire-${store}`, apiKey, redisUrl, prefix, dataDir])
  const { url } = await next(server, 'ready')
  return {
    server,
    url,
    async close() {
      await stop(server)
      rmSync(dataDir, { recursive: true, force: true })
      if (store === 'redis') await unlinkPrefix(redisUrl, prefix)
    },
  }
}

/** The CPU (user + system, µs) a target's server process has used so far. */
export async function serverCpuUs(server) {
  const { cpu } = await ask(server, { type: 'stats' }, 'stats')
  return cpu.user + cpu.system
}
