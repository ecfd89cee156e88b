import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { JobState, StreamMessage } from '@jobwire/protocol'
import { describeConfig } from '../src/config.js'
import {
  createJsonClient,
  freePort,
  makeTempDir,
  runCli,
  sleep,
  spawnServer,
  startTestServer,
  type CliResult,
  type TestServer,
} from './fixtures.js'

/** The real `jobwire` binary (bin/jobwire.js over dist), as a user runs it. */

let workDir: Awaited<ReturnType<typeof makeTempDir>>

beforeAll(async () => {
  // Every child runs here, so a default `.jobwire` can never land in the repository.
  workDir = await makeTempDir('jobwire-cli-')
})

afterAll(async () => {
  await workDir.remove()
})

describe('jobwire serve', () => {
  it('prints its URL and a new admin key saved to the data directory, and reuses it after a restart', async () => {
    const dataDir = join(workDir.path, 'fresh')
    const first = await spawnServer(['--port', '0', '--data-dir', dataDir], {}, workDir.path)
    let key: string
    try {
      expect(first.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
      expect(first.stdout).toMatch(/store: sqlite .*jobwire\.db/)
      expect(first.stdout).toMatch(/admin API key \(new, saved to .*admin\.key\): jw_/)
      key = first.key as string
      expect(key).toMatch(/^jw_\S{20,}$/)
      expect((await readFile(join(dataDir, 'admin.key'), 'utf8')).trim()).toBe(key)
      const client = createJsonClient(first.url, key)
      try {
        expect((await client.call('GET', '/healthz')).status).toBe(200)
        expect((await client.call('GET', '/v1/jobs')).status).toBe(200)
        expect((await client.call('GET', '/v1/jobs', undefined, { authorization: 'Bearer not-it' })).status).toBe(401)
      } finally {
        await client.close()
      }
    } finally {
      expect(await first.kill('SIGTERM')).toEqual({ code: 0, signal: null })
    }

    const second = await spawnServer(['--port', '0', '--data-dir', dataDir], {}, workDir.path)
    try {
      expect(second.stdout).toMatch(/admin API key: in .*admin\.key/)
      expect(second.stdout).not.toContain(key)
      const client = createJsonClient(second.url, key)
      try {
        expect((await client.call('GET', '/v1/jobs')).status).toBe(200)
      } finally {
        await client.close()
      }
    } finally {
      await second.kill('SIGTERM')
    }
  })

  it('says a memory node keeps nothing and its key is for this run only', async () => {
    const server = await spawnServer(['--memory', '--port', '0'], {}, workDir.path)
    try {
      expect(server.stdout).toContain('store: memory (nothing survives a restart)')
      expect(server.stdout).toMatch(/admin API key \(new, this run only\): jw_/)
    } finally {
      await server.kill('SIGTERM')
    }
  })

  it('takes its options from JOBWIRE_* variables, and flags win over them', async () => {
    const server = await spawnServer(['--port', '0'], { JOBWIRE_MEMORY: 'true', JOBWIRE_PORT: '1', JOBWIRE_API_KEY: 'key-from-the-environment' }, workDir.path)
    try {
      expect(server.url).not.toMatch(/:1$/)
      expect(server.stdout).toContain('store: memory')
      const client = createJsonClient(server.url, 'key-from-the-environment')
      try {
        expect((await client.call('GET', '/v1/jobs')).status).toBe(200)
      } finally {
        await client.close()
      }
    } finally {
      await server.kill('SIGTERM')
    }
  })

  const badConfigs: { name: string; args: string[]; env?: Record<string, string>; names: string }[] = [
    { name: '--port abc', args: ['--memory', '--port', 'abc'], names: '--port' },
    { name: 'JOBWIRE_HEARTBEAT=fast', args: ['--memory', '--port', '0'], env: { JOBWIRE_HEARTBEAT: 'fast' }, names: 'JOBWIRE_HEARTBEAT' },
    { name: '--heartbeat 10ms (below the minimum)', args: ['--memory', '--port', '0', '--heartbeat', '10ms'], names: '--heartbeat' },
    { name: 'JOBWIRE_SQLITE_SYNC=sometimes', args: ['--memory', '--port', '0'], env: { JOBWIRE_SQLITE_SYNC: 'sometimes' }, names: 'JOBWIRE_SQLITE_SYNC' },
    { name: 'an unknown flag', args: ['--memory', '--colour', 'red'], names: '--colour' },
    { name: '--demo-failure-rate 1.5 (above 1)', args: ['--memory', '--port', '0', '--demo', '--demo-failure-rate', '1.5'], names: '--demo-failure-rate' },
  ]
  it.for(badConfigs)('refuses to start on $name, naming it', async ({ args, env, names }) => {
    const result = await runCli(['serve', ...args], { env, cwd: workDir.path })
    expect(result.code, result.stdout).not.toBe(0)
    expect(result.code).not.toBeNull()
    expect(result.stderr).toContain(names)
    expect(result.stdout).not.toContain('listening on')
  })

  it('refuses a --data-dir that is a file, saying so in those words', async () => {
    const file = join(workDir.path, 'not-a-folder')
    await writeFile(file, 'x')
    const result = await runCli(['serve', '--port', '0', '--data-dir', file], { cwd: workDir.path })
    expect(result.code).toBe(1)
    expect(result.stderr).toContain(`Cannot use --data-dir ${file}: it is a file, not a folder (EEXIST`)
    expect(result.stdout).not.toContain('listening on')
  })

  it('lists every option with its environment variable, meaning and default under serve --help', async () => {
    const result = await runCli(['serve', '--help'], { cwd: workDir.path })
    expect(result.code).toBe(0)
    for (const name of ['--port', 'JOBWIRE_PORT', '--max-events-per-job', 'JOBWIRE_SQLITE_SYNC']) expect(result.stdout).toContain(name)
    // Each option's meaning and default from the schema, as plain text (no Markdown code spans or links).
    const plain = (text: string): string => text.replace(/\[([^\]]*)\]\([^)]*\)/g, '$1').replace(/`/g, '')
    for (const option of describeConfig()) {
      expect(result.stdout).toContain(`${option.flag.padEnd(26)} ${option.env}\n      ${plain(option.description)} (default: ${plain(option.defaultText)})\n`)
    }
    expect(result.stdout).toContain('TCP port (0 picks a free one) (default: 7070)')
    expect(result.stdout).not.toContain('`')
  })

  // `jobwire watch --help` and `jobwire jobs --help` used to fail: --help was parsed as an unknown
  // option or taken for a job id. Every command answers it with its usage, no server or key needed.
  const helpCases = [
    { args: ['--help'], shows: 'jobwire watch <id>' },
    { args: ['help'], shows: 'jobwire serve [options]' },
    { args: ['jobs', '--help'], shows: 'jobwire jobs create <type>' },
    { args: ['jobs', 'create', '--help'], shows: 'jobwire jobs list' },
    { args: ['watch', '--help'], shows: 'Exit code: 0 completed, 1 failed (or no server, key or job to watch), 2 cancelled' },
    { args: ['watch', '-h'], shows: 'jobwire watch <id> [--json]' },
    { args: ['keys', '--help'], shows: 'jobwire keys revoke <id>' },
    { args: ['token', '--help'], shows: '--rights read,cancel' },
    { args: ['demo-worker', '--help'], shows: '--concurrency N' },
    { args: ['config', '--help'], shows: 'jobwire config print' },
    { args: ['config', 'print', '--help'], shows: 'JOBWIRE_PORT' },
    { args: ['serve', '--help'], shows: 'JOBWIRE_PORT' },
  ]
  it.for(helpCases)('answers `jobwire $args` with its usage and exit code 0, without a server or a key', async ({ args, shows }) => {
    const result = await runCli(args, { cwd: workDir.path, env: { JOBWIRE_URL: 'http://127.0.0.1:9', JOBWIRE_API_KEY: undefined } })
    expect(result.code, result.stderr).toBe(0)
    expect(result.stdout).toContain(shows)
    expect(result.stderr).toBe('')
  })
})

describe('jobwire jobs and watch against a running server', () => {
  let server: TestServer

  beforeAll(async () => {
    server = await startTestServer({ heartbeat: 1000 })
  })

  afterAll(async () => {
    await server.close()
  })

  const cli = (args: string[], options: Parameters<typeof runCli>[1] = {}): Promise<CliResult> =>
    runCli([...args, '--url', server.url, '--key', server.key], { cwd: workDir.path, ...options })

  const json = <T>(result: CliResult): T => {
    expect(result.code, result.stderr).toBe(0)
    return JSON.parse(result.stdout) as T
  }

  const postEvents = async (jobId: string, body: unknown): Promise<void> => {
    const answer = await server.api.call('POST', `/v1/jobs/${jobId}/events`, body)
    expect(answer.status, JSON.stringify(answer.body)).toBe(200)
  }

  it('creates a job with input, owner and idempotency key and prints it as JSON', async () => {
    const args = ['jobs', 'create', 'cli-export', '--input', '{"rows":3}', '--owner', 'acme:ann', '--idempotency-key', 'cli-key-1']
    const job = json<JobState>(await cli(args))
    expect(job).toMatchObject({ type: 'cli-export', status: 'queued', seq: 1, input: { rows: 3 }, owner: { tenant: 'acme', user: 'ann' } })
    expect(json<JobState>(await cli(args)).id).toBe(job.id)
  })

  it('prints a job as JSON with get, equal to the API answer', async () => {
    const created = (await server.api.call<JobState>('POST', '/v1/jobs', { type: 'cli-get' })).body
    await postEvents(created.id, { type: 'progress', stage: 'one', percent: 10 })
    const printed = json<JobState>(await cli(['jobs', 'get', created.id]))
    expect(printed).toEqual((await server.api.call<JobState>('GET', `/v1/jobs/${created.id}`)).body)
  })

  it('lists jobs one line each, newest first, with filters and a next-page hint', async () => {
    const ids: string[] = []
    for (let i = 0; i < 3; i++) ids.push((await server.api.call<JobState>('POST', '/v1/jobs', { type: 'cli-list' })).body.id)
    await postEvents(ids[1] as string, { type: 'progress', stage: 'half', percent: 50 })
    const all = await cli(['jobs', 'list', '--type', 'cli-list'])
    expect(all.code, all.stderr).toBe(0)
    const lines = all.stdout.trim().split('\n')
    expect(lines.map((line) => line.split(/\s+/)[0])).toEqual([...ids].reverse())
    expect(lines[1]).toMatch(/running\s+50%\s+half/)
    const running = await cli(['jobs', 'list', '--type', 'cli-list', '--status', 'running'])
    expect(running.stdout.trim().split('\n')).toHaveLength(1)
    const paged = await cli(['jobs', 'list', '--type', 'cli-list', '--limit', '2'])
    expect(paged.stdout).toMatch(/more: jobwire jobs list --cursor \S+/)
  })

  it('cancels a job and prints the cancelled job as JSON', async () => {
    const created = (await server.api.call<JobState>('POST', '/v1/jobs', { type: 'cli-cancel' })).body
    const job = json<JobState>(await cli(['jobs', 'cancel', created.id, '--reason', 'no longer needed']))
    expect(job).toMatchObject({ id: created.id, status: 'cancelled', seq: 2 })
  })

  it('finds the server and key in JOBWIRE_URL and JOBWIRE_API_KEY', async () => {
    const result = await runCli(['jobs', 'create', 'cli-env'], { cwd: workDir.path, env: { JOBWIRE_URL: server.url, JOBWIRE_API_KEY: server.key } })
    expect(json<JobState>(result).type).toBe('cli-env')
  })

  it('exits 1 with the server message for an unknown job, a wrong key or no key at all', async () => {
    const missing = await cli(['jobs', 'get', 'job_missing'])
    expect(missing.code).toBe(1)
    expect(missing.stderr).toContain('Job job_missing does not exist')
    const wrongKey = await runCli(['jobs', 'list', '--url', server.url, '--key', 'wrong-wrong-wrong'], { cwd: workDir.path })
    expect(wrongKey.code).toBe(1)
    expect(wrongKey.stderr).toContain('API key')
    const noKey = await runCli(['jobs', 'list', '--url', server.url], { cwd: workDir.path })
    expect(noKey.code).toBe(1)
    expect(noKey.stderr).toContain('No API key')
  })

  it('demo-worker exits 1 with the server message when its key is refused, instead of retrying it for ever', async () => {
    const refused = await runCli(['demo-worker', '--url', server.url, '--key', 'wrong-wrong-wrong'], { cwd: workDir.path })
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(/: claim: A valid API key or token is required .*\n.*: the worker has stopped\n$/)
  })

  it('creates, lists and revokes an API key, and mints a token, through @jobwire/backend', async () => {
    const created = json<{ id: string; key: string; role: string; tenant: string }>(await cli(['keys', 'create', '--name', 'cli-backend', '--role', 'backend', '--tenant', 'acme']))
    expect(created).toMatchObject({ role: 'backend', tenant: 'acme' })
    expect((await server.api.call('GET', '/v1/jobs', undefined, { authorization: `Bearer ${created.key}` })).status).toBe(200)
    const listed = await cli(['keys', 'list'])
    expect(listed.stdout).toMatch(new RegExp(`${created.id}\\s+cli-backend\\s+backend\\s+acme\\s+\\*\\s+active`))
    expect(json<{ id: string; revoked: boolean }>(await cli(['keys', 'revoke', created.id]))).toEqual({ id: created.id, revoked: true })
    expect((await server.api.call('GET', '/v1/jobs', undefined, { authorization: `Bearer ${created.key}` })).status).toBe(401)

    const job = (await server.api.call<JobState>('POST', '/v1/jobs', { type: 'cli-token' })).body
    const minted = json<{ token: string; expiresAt: string }>(await cli(['token', '--job', job.id, '--rights', 'read,cancel', '--ttl', '60']))
    const watched = await server.api.call<JobState>('GET', `/v1/jobs/${job.id}`, undefined, { authorization: `Bearer ${minted.token}` })
    expect(watched.body.id).toBe(job.id)
  }, 120_000)

  /**
   * Runs `watch` on a new job; once it has printed its first line (it is connected), `drive`
   * produces the job's events.
   */
  async function watchWhile(drive: (jobId: string) => Promise<void>, extra: string[] = []): Promise<CliResult> {
    const job = (await server.api.call<JobState>('POST', '/v1/jobs', { type: 'cli-watch' })).body
    let connected: () => void = () => {}
    const firstOutput = new Promise<void>((resolve) => (connected = resolve))
    const watching = cli(['watch', job.id, ...extra], { onStdout: () => connected() })
    await firstOutput
    await drive(job.id)
    return watching
  }

  it('watch exits 0 when the job completes, printing progress and the result', async () => {
    const result = await watchWhile(async (id) => {
      await postEvents(id, { type: 'progress', stage: 'encoding', percent: 25, message: 'a quarter' })
      await sleep(20)
      await postEvents(id, { type: 'item', id: 'f1', label: 'a.mp3', status: 'completed' })
      await sleep(20)
      await postEvents(id, { type: 'completed', result: { url: '/out.zip' } })
    })
    expect(result.code, result.stderr).toBe(0)
    expect(result.stdout).toMatch(/queued/)
    expect(result.stdout).toMatch(/25%.*running.*encoding.*a quarter/)
    expect(result.stdout).toMatch(/100%.*completed/)
    expect(result.stdout).toContain('result: {"url":"/out.zip"}')
  })

  it('watch exits 1 when the job fails, printing the error', async () => {
    const result = await watchWhile(async (id) => {
      await postEvents(id, { type: 'progress', percent: 60 })
      await sleep(20)
      await postEvents(id, { type: 'failed', code: 'disk_full', message: 'no space left' })
    })
    expect(result.code, result.stderr).toBe(1)
    expect(result.stdout).toContain('disk_full: no space left')
  })

  it('watch exits 2 when the job is cancelled', async () => {
    const result = await watchWhile(async (id) => {
      await postEvents(id, { type: 'progress', percent: 10 })
      await sleep(20)
      expect((await server.api.call('POST', `/v1/jobs/${id}/cancel`, { reason: 'stop' })).status).toBe(200)
    })
    expect(result.code, result.stderr).toBe(2)
    expect(result.stdout).toMatch(/cancelled/)
  })

  it('watch --json prints the raw stream messages, one JSON line each', async () => {
    const result = await watchWhile(async (id) => {
      await postEvents(id, { events: [{ type: 'chunk', text: 'Hello' }, { type: 'completed' }] })
    }, ['--json'])
    expect(result.code, result.stderr).toBe(0)
    const messages = result.stdout.trim().split('\n').map((line) => JSON.parse(line) as StreamMessage)
    expect(messages[0]).toMatchObject({ type: 'snapshot', reason: 'initial', job: { seq: 1 } })
    expect(messages.slice(1).map((m) => (m.type === 'event' ? [m.event.seq, m.event.type] : m.type))).toEqual([
      [2, 'started'],
      [3, 'chunk'],
      [4, 'completed'],
    ])
  })

  it('watch exits at once with the outcome of a job that already ended', async () => {
    const job = (await server.api.call<JobState>('POST', '/v1/jobs', { type: 'cli-watch' })).body
    await postEvents(job.id, { type: 'failed', code: 'early', message: 'failed before anyone watched' })
    const result = await cli(['watch', job.id])
    expect(result.code).toBe(1)
    expect(result.stdout).toContain('early: failed before anyone watched')
  })

  it('watch exits 1 naming the error for an unknown job', async () => {
    const result = await cli(['watch', 'job_missing'])
    expect(result.code).toBe(1)
    expect(result.stderr).toContain('Job job_missing does not exist')
  })

  it('watch exits 1 at once, saying so, when nothing answers at --url (no retries in silence)', async () => {
    // A port nothing listens on (the old watch retried 30 times there, for minutes, printing nothing).
    const url = `http://127.0.0.1:${await freePort()}`
    const result = await runCli(['watch', 'job_anything', '--url', url, '--key', server.key], { cwd: workDir.path })
    expect(result.code).toBe(1)
    expect(result.stderr).toContain(`The server is not available: cannot reach ${url}: `)
    expect(result.stderr).toContain('ECONNREFUSED')
    expect(result.stdout).toBe('')
  })

  it('watch says on stderr that it is reconnecting, and why, when its server goes away', async () => {
    const own = await startTestServer({ heartbeat: 1000 })
    const job = (await own.api.call<JobState>('POST', '/v1/jobs', { type: 'cli-watch' })).body
    let connected!: () => void
    const watching = new Promise<void>((resolve) => (connected = resolve))
    let reconnecting!: () => void
    const noticed = new Promise<void>((resolve) => (reconnecting = resolve))
    const result = runCli(['watch', job.id, '--url', own.url, '--key', own.key], {
      cwd: workDir.path,
      onStdout: () => connected(),
      onStderr: (all) => all.includes('reconnecting') && reconnecting(),
      until: noticed,
    })
    await watching
    await own.close()
    const { stdout, stderr } = await result
    expect(stdout).toContain('queued')
    expect(stderr).toMatch(new RegExp(`^reconnecting to ${own.url.replace(/[.]/g, '\\.')}: \\S`, 'm'))
  })
})
