import { existsSync, readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { JobwireError, type ErrorBody } from '@jobwire/protocol'

/** Where the CLI's commands send their requests, and with which key. */
export interface Target {
  url: string
  key: string
}

/** `--url`/`JOBWIRE_URL`, `--key`/`JOBWIRE_API_KEY`, else the key a local `serve` saved in its data dir. */
export function resolveTarget(flags: { url?: string; key?: string; 'data-dir'?: string }, env = process.env): Target {
  const url = (flags.url ?? env.JOBWIRE_URL ?? `http://127.0.0.1:${env.JOBWIRE_PORT ?? 7070}`).replace(/\/+$/, '')
  let key = flags.key ?? env.JOBWIRE_API_KEY
  if (key === undefined) {
    const file = join(resolve(flags['data-dir'] ?? env.JOBWIRE_DATA_DIR ?? '.jobwire'), 'admin.key')
    if (existsSync(file)) key = readFileSync(file, 'utf8').trim()
  }
  if (key === undefined) {
    throw new Error('No API key: pass --key, set JOBWIRE_API_KEY, or run from the folder where `jobwire serve` keeps .jobwire/admin.key')
  }
  return { url, key }
}

/** One JSON request; an error answer becomes a JobwireError with the server's code. */
export async function request<T>(target: Target, method: string, path: string, body?: unknown): Promise<T> {
  let response: Response
  try {
    response = await fetch(`${target.url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${target.key}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    })
  } catch (error) {
    throw new Error(`Cannot reach Jobwire at ${target.url}: ${(error as Error & { cause?: Error }).cause?.message ?? (error as Error).message}`, { cause: error })
  }
  const text = await response.text()
  const parsed: unknown = text === '' ? null : JSON.parse(text)
  if (!response.ok) {
    const error = (parsed as { error?: ErrorBody } | null)?.error
    throw error === undefined ? new Error(`HTTP ${response.status}`) : JobwireError.fromBody(error)
  }
  return parsed as T
}
