/**
 * A real `jobwire serve --memory` in a child process, for tests that run in a DOM environment
 * (whose globals — URL, fetch — are the DOM's, not Node's, so the server cannot share them).
 * It runs the built `dist`: `npm test` builds before it tests.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath, URL as NodeURL } from 'node:url'
import { request } from 'undici'

const cliPath = fileURLToPath(new NodeURL('../../server/bin/jobwire.js', import.meta.url))
const apiKey = 'react-suite-admin-key-0123456789'

export interface ServerProcess {
  url: string
  key: string
  call<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<{ status: number; body: T }>
  close(): Promise<void>
}

const running = new Set<ChildProcess>()
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL')
})

export async function spawnJobwire(env: Record<string, string> = {}): Promise<ServerProcess> {
  const clean: NodeJS.ProcessEnv = {}
  for (const [name, value] of Object.entries(process.env)) if (!name.startsWith('JOBWIRE_')) clean[name] = value
  const child = spawn(process.execPath, [cliPath, 'serve', '--memory', '--port', '0'], {
    env: { ...clean, JOBWIRE_LOG_LEVEL: 'warn', JOBWIRE_API_KEY: apiKey, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  running.add(child)
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  let output = ''
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`jobwire serve printed no banner:\n${output}`)), 20_000)
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      output += chunk
      const match = /listening on (http:\/\/\S+)/.exec(output)
      if (match?.[1] !== undefined) {
        clearTimeout(timer)
        resolve(match[1])
      }
    })
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk))
    void exited.then(() => reject(new Error(`jobwire serve exited:\n${output}`)))
  })
  return {
    url,
    key: apiKey,
    async call<T>(method: 'GET' | 'POST', path: string, body?: unknown) {
      const answer = await request(`${url}${path}`, {
        method,
        headers: { authorization: `Bearer ${apiKey}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      })
      return { status: answer.statusCode, body: (await answer.body.json()) as T }
    },
    async close() {
      child.kill('SIGTERM')
      await exited
      running.delete(child)
    },
  }
}
