import { readFileSync } from 'node:fs'
import { relative, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import type { CreateJob, JobwireBackend, NewApiKey } from '@jobwire/backend'
import type { JobStatus } from '@jobwire/protocol'
import { ConfigError, configFileEnv, configKeys, describeConfig, flagName, loadConfig, maskedConfig, type Config } from '../config.js'
import { createLogger, startServer } from '../server.js'
import { backendFor, resolveTarget } from './client.js'
import { watchExitCodes, watchJob } from './watch.js'

const version = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version

const usage = `jobwire ${version} — stream the progress of long-running jobs

Usage:
  jobwire serve [options]              start a node (SQLite in ./.jobwire by default)
  jobwire config print [options]       the effective configuration (flags > env > --config file > defaults), secrets masked
  jobwire jobs create <type> [--input JSON] [--owner tenant:user] [--idempotency-key K]
  jobwire jobs get <id>
  jobwire jobs list [--status S] [--type T] [--owner tenant[:user]] [--limit N] [--cursor C]
  jobwire jobs cancel <id> [--reason TEXT]
  jobwire watch <id> [--json]          live progress until the job ends; exit 0 completed, 1 failed, 2 cancelled
  jobwire keys create --name N --role admin|backend|worker [--tenant T] [--types a,b]
  jobwire keys list | jobwire keys revoke <id>
  jobwire token (--job <id>... | --tenant T --user U) [--rights read,cancel] [--ttl SECONDS]
                                       mint a subscription token for a browser
  jobwire demo-worker [--concurrency N] [--name NAME]
                                       run the demo job handlers in this process (kill it: its jobs resume elsewhere)
  jobwire help | --version

Client commands take --url (JOBWIRE_URL, default http://127.0.0.1:7070) and --key (JOBWIRE_API_KEY,
else ./.jobwire/admin.key). \`jobwire serve --help\` lists the server's options.`

const clientHelp = `Client options:
  --url URL        the server (JOBWIRE_URL, default http://127.0.0.1:7070)
  --key KEY        an API key (JOBWIRE_API_KEY, else the admin key in --data-dir)
  --data-dir DIR   where to find admin.key (default ./.jobwire)`

/** `jobwire <command> --help`: each client command's own usage (`serve --help` lists the server's options). */
const commandHelp: Record<string, string> = {
  jobs: `Usage:
  jobwire jobs create <type> [--input JSON] [--owner tenant:user] [--idempotency-key K]
                                 create a job and print it as JSON
  jobwire jobs get <id>          print a job as JSON
  jobwire jobs list [--status S] [--type T] [--owner tenant[:user]] [--limit N] [--cursor C]
                                 one line per job, newest first
  jobwire jobs cancel <id> [--reason TEXT]

${clientHelp}`,
  watch: `Usage:
  jobwire watch <id> [--json]    follow a job live until it ends (resumes after a dropped connection,
                                 saying why on stderr; gives up after 30 failed attempts in a row)

  --json           print the stream messages (snapshot, event, queue), one JSON line each
  Exit code: 0 completed, 1 failed (or no server, key or job to watch), 2 cancelled.

${clientHelp}`,
  keys: `Usage:
  jobwire keys create --name N --role admin|backend|worker [--tenant T] [--types a,b]
                                 print the new key once, as JSON
  jobwire keys list              one line per key
  jobwire keys revoke <id>

${clientHelp}`,
  token: `Usage:
  jobwire token (--job <id>... | --tenant T --user U) [--rights read,cancel] [--ttl SECONDS]
                                 mint a subscription token for a browser, printed as JSON

${clientHelp}`,
  'demo-worker': `Usage:
  jobwire demo-worker [--concurrency N] [--name NAME]
                                 run the demo job handlers in this process against a server
                                 (kill it: its jobs resume on another worker)

  --concurrency N  jobs at once, 1 to 100 (default 4)
  --name NAME      the worker's name in job events (default "demo-worker pid <pid>")

${clientHelp}`,
}

const wantsHelp = (argv: readonly string[]): boolean => argv.includes('--help') || argv.includes('-h')

/** Runs the CLI; resolves with the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv
  const help = command === undefined ? undefined : commandHelp[command]
  if (help !== undefined && wantsHelp(rest)) {
    console.log(help)
    return 0
  }
  switch (command) {
    case 'serve':
      return serve(rest)
    case 'config':
      return configCommand(rest)
    case 'jobs':
      return jobs(rest)
    case 'watch':
      return watch(rest)
    case 'demo-worker':
      return demoWorker(rest)
    case 'keys':
      return keys(rest)
    case 'token':
      return token(rest)
    case '--version':
    case '-v':
      console.log(version)
      return 0
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      console.log(usage)
      return 0
    default:
      console.error(`Unknown command "${command}".\n\n${usage}`)
      return 64
  }
}

const booleanKeys = new Set(['memory', 'demo'])

function serveUsage(): string {
  // The descriptions are Markdown (they also make docs/configuration.md): code spans and links become plain text.
  const plain = (text: string): string => text.replace(/\[([^\]]*)\]\([^)]*\)/g, '$1').replace(/`/g, '')
  const lines = describeConfig().map(
    (option) => `  ${option.flag.padEnd(26)} ${option.env}\n      ${plain(option.description)} (default: ${plain(option.defaultText)})`,
  )
  return `jobwire serve [options]\n\nEvery option is a flag, an environment variable or a key of the JSON file given by\n--config (${configFileEnv}); flags win over variables, variables over the file:\n  ${'--config'.padEnd(26)} ${configFileEnv}\n${lines.join('\n')}\n\nThe same in docs/configuration.md.`
}

/** Parses the server's options (flags, env, --config file); an exit code when it printed why not. */
function parseServerConfig(argv: string[]): Config | number {
  const options: Record<string, { type: 'string' | 'boolean' }> = { help: { type: 'boolean' }, config: { type: 'string' } }
  for (const key of configKeys) options[flagName(key).slice(2)] = { type: booleanKeys.has(key) ? 'boolean' : 'string' }
  let parsed
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: false, strict: true })
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${serveUsage()}`)
    return 64
  }
  if (parsed.values.help === true) {
    console.log(serveUsage())
    return 0
  }
  const flags: Record<string, unknown> = {}
  for (const [name, value] of Object.entries(parsed.values)) {
    if (name !== 'help') flags[name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())] = value
  }
  try {
    return loadConfig(flags, process.env)
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(error.message)
      return 78
    }
    throw error
  }
}

async function configCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv
  if (sub !== 'print' && wantsHelp(argv)) {
    console.log(`Usage:\n  jobwire config print [options]   the effective configuration, secrets masked\n\nIt takes the options of \`jobwire serve\` (see \`jobwire serve --help\`).`)
    return 0
  }
  if (sub !== 'print') {
    console.error(`Unknown config command "${sub ?? ''}".\n\n${usage}`)
    return 64
  }
  const config = parseServerConfig(rest)
  if (typeof config === 'number') return config
  console.log(JSON.stringify(maskedConfig(config), null, 2))
  return 0
}

/** What a file-system error at start means for the data directory, said in the user's terms. */
const dataDirProblems: Record<string, string> = {
  EEXIST: 'it is a file, not a folder',
  ENOTDIR: 'a part of its path is a file, not a folder',
  EACCES: 'this user may not write there (pass another --data-dir, or run as a user who may)',
  EPERM: 'this user may not write there (pass another --data-dir, or run as a user who may)',
  EROFS: 'it is on a read-only file system',
  ENOSPC: 'its disk is full',
}

async function serve(argv: string[]): Promise<number> {
  const config = parseServerConfig(argv)
  if (typeof config === 'number') return config
  const logger = createLogger(config.logLevel, process.stdout.isTTY === true)
  const server = await startServer({ config, logger }).catch((error: Error & { code?: string; path?: string }) => {
    if (error.code === 'EADDRINUSE') throw new Error(`Port ${config.port} is in use: pass --port or set JOBWIRE_PORT`)
    const why = dataDirProblems[error.code ?? '']
    if (why !== undefined && config.redis === undefined && !config.memory && typeof error.path === 'string' && !relative(resolve(config.dataDir), resolve(error.path)).startsWith('..')) {
      throw new Error(`Cannot use --data-dir ${config.dataDir}: ${why} (${error.message})`, { cause: error })
    }
    throw error
  })
  const store =
    config.redis !== undefined
      ? `redis ${config.redis.replace(/\/\/[^@/]*@/, '//***@')} (prefix ${config.redisPrefix})`
      : server.databasePath === null
        ? 'memory (nothing survives a restart)'
        : `sqlite ${relative(process.cwd(), server.databasePath) || server.databasePath}`
  const lines = [``, `  Jobwire ${version} listening on ${server.url}`, `  store: ${store}`]
  if (server.adminKey.source === 'generated') {
    lines.push(`  admin API key (new${server.adminKey.path === null ? ', this run only' : `, saved to ${relative(process.cwd(), server.adminKey.path)}`}): ${server.adminKey.key}`)
  } else if (server.adminKey.source === 'file') {
    lines.push(`  admin API key: in ${relative(process.cwd(), server.adminKey.path ?? '')}`)
  }
  if (config.demo) lines.push(`  demo: open ${server.url}/ in a browser`)
  console.log(`${lines.join('\n')}\n`)

  let signals = 0
  const stop = (signal: string): void => {
    signals++
    if (signals > 1) {
      console.error(`\n${signal} again: exiting now`)
      process.exit(130)
    }
    console.error(`\n${signal}: shutting down (again to force)`)
    setTimeout(() => {
      console.error('shutdown took over 15 s: exiting now')
      process.exit(1)
    }, 15_000).unref()
    server.close().then(
      () => process.exit(0),
      (error: unknown) => {
        console.error(error)
        process.exit(1)
      },
    )
  }
  process.on('SIGINT', () => stop('SIGINT'))
  process.on('SIGTERM', () => stop('SIGTERM'))
  return new Promise<number>(() => {})
}

const clientOptions = {
  url: { type: 'string' },
  key: { type: 'string' },
  'data-dir': { type: 'string' },
} as const

async function jobs(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      ...clientOptions,
      input: { type: 'string' },
      owner: { type: 'string' },
      'idempotency-key': { type: 'string' },
      status: { type: 'string' },
      type: { type: 'string' },
      limit: { type: 'string' },
      cursor: { type: 'string' },
      reason: { type: 'string' },
    },
  })
  const backend = backendFor(resolveTarget(values))
  const print = (value: unknown): void => console.log(JSON.stringify(value, null, 2))
  const id = (): string => {
    const value = positionals[0]
    if (value === undefined) throw new Error(`jobwire jobs ${sub} needs a job id`)
    return value
  }
  switch (sub) {
    case 'create': {
      const type = positionals[0]
      if (type === undefined) throw new Error('jobwire jobs create needs a job type')
      const body: CreateJob = { type }
      if (values.input !== undefined) {
        try {
          body.input = JSON.parse(values.input)
        } catch {
          throw new Error('--input must be JSON, e.g. --input \'{"file":"a.mp3"}\'')
        }
      }
      if (values.owner !== undefined) {
        const [tenant = '', user = ''] = values.owner.split(':')
        body.owner = { tenant, user }
      }
      if (values['idempotency-key'] !== undefined) body.idempotencyKey = values['idempotency-key']
      print(await backend.createJob(body))
      return 0
    }
    case 'get':
      print(await backend.getJob(id()))
      return 0
    case 'list': {
      // `tenant` or `tenant:user`, split at the first colon as the server's `owner` filter does.
      const colon = values.owner?.indexOf(':') ?? -1
      const tenant = colon === -1 ? values.owner : values.owner?.slice(0, colon)
      const user = colon === -1 ? undefined : values.owner?.slice(colon + 1)
      const page = await backend.listJobs({
        status: values.status as JobStatus | undefined,
        type: values.type,
        tenant: tenant === '' ? undefined : tenant,
        user,
        limit: values.limit === undefined ? undefined : Number(values.limit),
        cursor: values.cursor,
      })
      for (const job of page.jobs) {
        const percent = job.progress.percent === null ? '' : `${Math.round(job.progress.percent)}%`
        console.log([job.id, job.type.padEnd(16), job.status.padEnd(10), percent.padStart(4), job.progress.stage ?? '', job.createdAt].join('  '))
      }
      if (page.nextCursor !== null) console.log(`more: jobwire jobs list --cursor ${page.nextCursor}`)
      return 0
    }
    case 'cancel':
      print(await backend.cancelJob(id(), values.reason))
      return 0
    default:
      console.error(`Unknown jobs command "${sub ?? ''}".\n\n${usage}`)
      return 64
  }
}

async function watch(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { ...clientOptions, json: { type: 'boolean' } } })
  const jobId = positionals[0]
  if (jobId === undefined) throw new Error('jobwire watch needs a job id')
  const target = resolveTarget(values)
  // A server that is not there, a wrong key or an unknown job is said at once, as `jobs get` says
  // it: the watch's retries (up to 30, backing off to 20 s) are for a connection that drops.
  await backendFor(target).getJob(jobId)
  const job = await watchJob(target, jobId, {
    plain: process.stdout.isTTY !== true,
    json: values.json === true,
    write: (text) => process.stdout.write(text),
    notice: (text) => process.stderr.write(text),
  })
  if (values.json !== true && job.status === 'completed' && job.result !== null) console.log(`result: ${JSON.stringify(job.result)}`)
  return watchExitCodes[job.status as keyof typeof watchExitCodes] ?? 1
}

async function demoWorker(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { ...clientOptions, concurrency: { type: 'string' }, name: { type: 'string' } },
  })
  const target = resolveTarget(values)
  const concurrency = Number(values.concurrency ?? 4)
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 100) throw new Error('--concurrency must be a whole number from 1 to 100')
  const name = values.name ?? `demo-worker pid ${process.pid}`
  // The demo and the worker SDK it runs on load only for this command (see docs/architecture.md).
  const [{ createWorker }, { demoTypes, registerDemoHandlers }] = await Promise.all([import('@jobwire/worker'), import('../demo/handlers.js')])
  const worker = createWorker({
    url: target.url,
    apiKey: target.key,
    name,
    concurrency,
    onError: (error: unknown) => console.error(`${name}: ${error instanceof Error ? error.message : String(error)}`),
  })
  registerDemoHandlers(worker)
  await worker.start()
  console.log(`${name} working on ${demoTypes.join(', ')} jobs from ${target.url} (Ctrl-C stops and hands its jobs back)`)
  const stopped = new Promise<void>((resolve) => {
    const stop = (): void => {
      console.log(`${name}: stopping, releasing running jobs`)
      void worker.stop({ timeoutMs: 0 }).then(resolve)
    }
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
  })
  try {
    await Promise.race([stopped, worker.done])
  } catch {
    // The server refused its claims for good (a wrong key, say): onError has printed why.
    console.error(`${name}: the worker has stopped`)
    return 1
  }
  return 0
}

async function keys(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: { ...clientOptions, name: { type: 'string' }, role: { type: 'string' }, tenant: { type: 'string' }, types: { type: 'string' } },
  })
  const backend = backendFor(resolveTarget(values))
  switch (sub) {
    case 'create': {
      if (values.name === undefined || values.role === undefined) throw new Error('jobwire keys create needs --name and --role (admin, backend or worker)')
      const body: NewApiKey = { name: values.name, role: values.role as NewApiKey['role'] }
      if (values.tenant !== undefined) body.tenant = values.tenant
      if (values.types !== undefined) body.types = values.types.split(',').map((t) => t.trim()).filter((t) => t !== '')
      const created = await backend.createKey(body)
      console.log(JSON.stringify(created, null, 2))
      console.error('The key is shown once; store it now.')
      return 0
    }
    case 'list': {
      const { keys: list } = await backend.listKeys()
      for (const key of list) {
        console.log([key.id, key.name.padEnd(20), key.role.padEnd(8), key.tenant ?? '*', key.types?.join(',') ?? '*', key.revokedAt === null ? 'active' : `revoked ${key.revokedAt}`].join('  '))
      }
      return 0
    }
    case 'revoke': {
      const id = positionals[0]
      if (id === undefined) throw new Error('jobwire keys revoke needs a key id')
      console.log(JSON.stringify(await backend.revokeKey(id)))
      return 0
    }
    default:
      console.error(`Unknown keys command "${sub ?? ''}".\n\n${usage}`)
      return 64
  }
}

async function token(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...clientOptions,
      job: { type: 'string', multiple: true },
      tenant: { type: 'string' },
      user: { type: 'string' },
      rights: { type: 'string' },
      ttl: { type: 'string' },
    },
  })
  const body: Parameters<JobwireBackend['mintToken']>[0] = {}
  if (values.job !== undefined) body.jobIds = values.job
  if (values.tenant !== undefined) body.tenant = values.tenant
  if (values.user !== undefined) body.user = values.user
  if (values.rights !== undefined) body.rights = values.rights.split(',').map((r) => r.trim()) as ('read' | 'cancel')[]
  if (values.ttl !== undefined) body.ttl = Number(values.ttl)
  console.log(JSON.stringify(await backendFor(resolveTarget(values)).mintToken(body), null, 2))
  return 0
}
