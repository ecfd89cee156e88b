import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { ConfigError, configKeys, envName, flagName, loadConfig } from '../src/config.js'
import { makeTempDir, runCli } from './fixtures.js'

const cleanups: (() => Promise<unknown>)[] = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup()
})

async function configFile(options: unknown, name = 'jobwire.json'): Promise<string> {
  const dir = await makeTempDir()
  cleanups.push(() => dir.remove())
  const path = join(dir.path, name)
  await writeFile(path, typeof options === 'string' ? options : JSON.stringify(options))
  return path
}

function problemsOf(load: () => unknown): string[] {
  try {
    load()
  } catch (error) {
    if (error instanceof ConfigError) return error.problems
    throw error
  }
  throw new Error('expected a ConfigError')
}

describe('configuration', () => {
  it('takes flags over JOBWIRE_* variables over the config file over defaults', async () => {
    const path = await configFile({ port: 8001, heartbeat: '5s', sseRetry: 700, logLevel: 'debug', memory: true })
    const config = loadConfig({ config: path, port: '8003' }, { JOBWIRE_PORT: '8002', JOBWIRE_HEARTBEAT: '6s' })
    expect(config).toMatchObject({ port: 8003, heartbeat: 6_000, sseRetry: 700, logLevel: 'debug', memory: true, host: '127.0.0.1' })
    // JOBWIRE_CONFIG names the file when --config does not.
    expect(loadConfig({}, { JOBWIRE_CONFIG: path })).toMatchObject({ port: 8001, heartbeat: 5_000 })
  })

  it('names the bad key and where it came from: file, variable or flag', async () => {
    const path = await configFile({ port: 'eighty', heartbeat: '5 minutes', colour: 'blue' })
    const problems = problemsOf(() => loadConfig({ config: path, sseRetry: 'soon' }, { JOBWIRE_MAX_ATTEMPTS: '0' }))
    expect(problems).toHaveLength(5)
    expect(problems).toEqual(
      expect.arrayContaining([
        `colour in ${path}: unknown option`,
        expect.stringMatching(new RegExp(`^port in ${path}: .*\\(got "eighty"\\)$`)),
        expect.stringMatching(new RegExp(`^heartbeat in ${path}: expected a duration`)),
        expect.stringMatching(/^--sse-retry: expected a duration .*\(got "soon"\)$/),
        expect.stringMatching(/^JOBWIRE_MAX_ATTEMPTS: .*\(got "0"\)$/),
      ]),
    )
  })

  it('refuses a config file that is missing, not JSON, or not an object, naming the file', async () => {
    expect(problemsOf(() => loadConfig({ config: '/nonexistent/jobwire.json' }, {}))).toEqual(['/nonexistent/jobwire.json: cannot read the config file (ENOENT)'])
    const broken = await configFile('{"port": 80,', 'broken.json')
    expect(problemsOf(() => loadConfig({}, { JOBWIRE_CONFIG: broken }))[0]).toMatch(new RegExp(`^${broken}: not valid JSON`))
    const list = await configFile([1, 2], 'list.json')
    expect(problemsOf(() => loadConfig({ config: list }, {}))).toEqual([`${list}: expected a JSON object of options`])
  })

  it('jobwire config print shows the effective config with secrets masked', async () => {
    const path = await configFile({ port: 9000, tokenSecret: 'file-token-secret-0123456789abcdefghij', redis: 'redis://app:hunter2hunter2@cache:6379' })
    const result = await runCli(['config', 'print', '--config', path, '--host', '0.0.0.0'], {
      env: { JOBWIRE_API_KEY: 'env-admin-key-0123456789', JOBWIRE_JWT_SECRET: 'jwt-secret-0123456789' },
    })
    expect(result.code, result.stderr).toBe(0)
    const printed = JSON.parse(result.stdout) as Record<string, unknown>
    expect(printed).toMatchObject({
      port: 9000,
      host: '0.0.0.0',
      apiKey: '***',
      tokenSecret: '***',
      jwtSecret: '***',
      redis: 'redis://app:***@cache:6379',
      heartbeat: 15_000,
      jwksUrl: null,
    })
    for (const secret of ['env-admin-key', 'file-token-secret', 'jwt-secret-0123', 'hunter2']) expect(result.stdout).not.toContain(secret)
  })

  it('docs/configuration.md documents every option with its variable and default', async () => {
    const page = await readFile(new URL('../../../docs/configuration.md', import.meta.url), 'utf8')
    const rows = new Set(page.split('\n').filter((line) => line.startsWith('| `--')).map((line) => line.split('|').slice(1, 4).map((cell) => cell.trim()).join(' ')))
    const documented = (key: string): boolean => [...rows].some((row) => row.startsWith(`\`${flagName(key)}\` \`${envName(key)}\` `) && row.split(' ').length >= 3)
    expect(configKeys.filter((key) => !documented(key))).toEqual([])
  })

  it('jobwire config print and serve exit 78 naming the bad key', async () => {
    const path = await configFile({ port: 70000 })
    const printed = await runCli(['config', 'print', '--config', path])
    expect(printed.code).toBe(78)
    expect(printed.stderr).toContain(`port in ${path}: `)
    const served = await runCli(['serve', '--memory'], { env: { JOBWIRE_CONFIG: path } })
    expect(served.code).toBe(78)
    expect(served.stderr).toContain(`port in ${path}: `)
  })
})
