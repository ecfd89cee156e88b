#!/usr/bin/env node
// tsc compiles packages/server/src but copies nothing else: the Redis store's Lua scripts
// (src/stores/redis/lua/**/*.lua, read by src/stores/redis/scripts.ts next to itself) are copied
// into dist here, after tsc, by `npm run build` and `npm run docs`. Stale copies are removed first.
import { cpSync, rmSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const from = fileURLToPath(new URL('../packages/server/src/stores/redis/lua', import.meta.url))
const to = fileURLToPath(new URL('../packages/server/dist/stores/redis/lua', import.meta.url))
rmSync(to, { recursive: true, force: true })
cpSync(from, to, { recursive: true })
