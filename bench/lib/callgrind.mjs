import { execFileSync, spawnSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

/** The first of `tools` (valgrind's, and any a bench adds) that is not on the PATH, or null. */
export function missingTool(tools = ['valgrind', 'callgrind_control']) {
  return tools.find((tool) => spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) ?? null
}

/** Zeroes the counts of the callgrind process `pid`. */
export function zeroCount(pid) {
  execFileSync('callgrind_control', ['-z', String(pid)], { stdio: 'ignore' })
}

/**
 * The instructions callgrind counted in process `pid` since its last zeroing: dumped as a part of
 * its own (`name`) into `dir` (its `--callgrind-out-file=dir/cg.%p`), read from the newest part's totals.
 */
export function dumpCount(pid, dir, name) {
  execFileSync('callgrind_control', [`--dump=${name}`, String(pid)], { stdio: 'ignore' })
  const parts = readdirSync(dir)
    .filter((file) => file.startsWith(`cg.${pid}.`))
    .sort((a, b) => Number(a.split('.')[2]) - Number(b.split('.')[2]))
  const text = readFileSync(join(dir, parts.at(-1)), 'utf8')
  return Number(/^totals: (\d+)/m.exec(text)?.[1] ?? /^summary: (\d+)/m.exec(text)?.[1])
}
