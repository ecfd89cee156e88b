import { existsSync, readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { JobwireBackend } from '@jobwire/backend'
import { configDefaults } from '../config.js'

/** Where the CLI's commands send their requests, and with which key. */
export interface Target {
  url: string
  key: string
}

/** `--url`/`JOBWIRE_URL`, `--key`/`JOBWIRE_API_KEY`, else the key a local `serve` saved in its data dir. */
export function resolveTarget(flags: { url?: string; key?: string; 'data-dir'?: string }, env = process.env): Target {
  const url = (flags.url ?? env.JOBWIRE_URL ?? `http://127.0.0.1:${env.JOBWIRE_PORT ?? configDefaults.port}`).replace(/\/+$/, '')
  let key = flags.key ?? env.JOBWIRE_API_KEY
  if (key === undefined) {
    const file = join(resolve(flags['data-dir'] ?? env.JOBWIRE_DATA_DIR ?? configDefaults.dataDir), 'admin.key')
    if (existsSync(file)) key = readFileSync(file, 'utf8').trim()
  }
  if (key === undefined) {
    throw new Error('No API key: pass --key, set JOBWIRE_API_KEY, or run from the folder where `jobwire serve` keeps .jobwire/admin.key')
  }
  return { url, key }
}

/**
 * The CLI's REST client: @jobwire/backend on the target. Error answers are JobwireErrors with the
 * server's code; a server that cannot be reached is `unavailable`, naming it ("cannot reach …").
 */
export function backendFor(target: Target): JobwireBackend {
  return new JobwireBackend({ url: target.url, apiKey: target.key })
}
