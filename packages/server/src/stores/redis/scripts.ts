import { readFileSync } from 'node:fs'

/**
 * The Redis store's Lua scripts, one file each in `lua/` (shared functions in `lua/lib/`, pulled
 * in by a `--! include lib/<file>.lua` line). Each runs atomically on the server. They never parse
 * JSON: the job's state is computed in JavaScript (the same reducer as everywhere) and stored as a
 * string, and a commit only lands if the job's version is still the one that state was computed from.
 *
 * Key layout: see keys.ts. The scripts address some keys declared and build others from the
 * prefix (the commit script a job's keys, from its id and type: lua/lib/commit.lua), so they run on
 * a single Redis primary; on Redis Cluster they would be cross-slot (see docs/scaling-redis.md).
 *
 * The files are read once, when this module loads (`npm run build` copies them next to the
 * compiled module), and registered on each command connection with ioredis `defineCommand`
 * (connection.ts), which sends a script's text the first time a connection runs it and its SHA
 * after that, and sends the text again should Redis answer NOSCRIPT.
 */
const files = {
  // the job store (commits.ts, epochs.ts)
  load: 'load.lua',
  readLog: 'read-log.lua',
  create: 'create.lua',
  commit: 'commit.lua',
  pick: 'pick.lua',
  position: 'position.lua',
  sweep: 'sweep.lua',
  due: 'due.lua',
  refreshGeneration: 'refresh-generation.lua',
  // credentials and limits (credentials.ts)
  hit: 'hit.lua',
  revoke: 'revoke.lua',
  acquire: 'acquire.lua',
  setCount: 'set-count.lua',
  renew: 'renew.lua',
  count: 'count.lua',
} as const

export type ScriptName = keyof typeof files

const directory = new URL('./lua/', import.meta.url)
const include = /^--! include (\S+)[ \t]*$/gm

/** A script's text with its includes inlined (each library once, where it is first named). */
function source(file: string, included = new Set<string>()): string {
  return readFileSync(new URL(file, directory), 'utf8').replace(include, (_line, library: string) => {
    if (included.has(library)) return ''
    included.add(library)
    return source(library, included).trimEnd()
  })
}

/** Every script's Lua, as sent to Redis. */
export const luaScripts = Object.fromEntries(Object.entries(files).map(([name, file]) => [name, source(file)])) as Record<ScriptName, string>
