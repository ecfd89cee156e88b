// Where the examples find Jobwire: JOBWIRE_URL (default http://127.0.0.1:7070) and JOBWIRE_API_KEY,
// else the admin key `jobwire serve` saved in ./.jobwire/admin.key (run from the folder you started it in).
import { existsSync, readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'

export function connection(env = process.env) {
  const url = (env.JOBWIRE_URL ?? 'http://127.0.0.1:7070').replace(/\/+$/, '')
  let apiKey = env.JOBWIRE_API_KEY
  const keyFile = resolve(env.JOBWIRE_DATA_DIR ?? '.jobwire', 'admin.key')
  if (apiKey === undefined && existsSync(keyFile)) apiKey = readFileSync(keyFile, 'utf8').trim()
  if (apiKey === undefined) throw new Error(`No API key: set JOBWIRE_API_KEY, or run from the folder where \`jobwire serve\` keeps .jobwire/admin.key`)
  return { url, apiKey }
}

/** Runs `main(connection())` when the file is the program (`node examples/<name>/index.mjs`), not when a test imports it. */
export function runIfMain(moduleUrl, main) {
  if (process.argv[1] === undefined || pathToFileURL(resolve(process.argv[1])).href !== moduleUrl) return
  Promise.resolve().then(() => main({ ...connection(), args: process.argv.slice(2), log: (line) => console.log(line), write: (text) => process.stdout.write(text) })).then(
    () => process.exit(0),
    (error) => {
      console.error(error instanceof Error ? error.message : error)
      process.exit(1)
    },
  )
}
