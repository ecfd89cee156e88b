// BullMQ, the peer of bench/workers.mjs and bench/shape, used by the benchmarks only. It is not a
// devDependency: one of its optional native dependencies has platform packages this project's
// registry does not serve, which would break `npm ci`. It is installed here on first use, without
// touching package.json or the lockfile.
import { execSync, spawnSync } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '../..')

/** The bullmq module; installs it first if missing, then re-runs the bench script `scriptUrl` (its import.meta.url) in a fresh process. */
export async function loadBullmq(scriptUrl) {
  try {
    return await import('bullmq')
  } catch {
    console.error('bench: installing the BullMQ peer (npm install --no-save bullmq@6) …')
    execSync('npm install --no-save --ignore-scripts bullmq@6', { cwd: root, stdio: 'inherit' })
    // This process already failed to resolve 'bullmq' once, and Node's resolver remembers that:
    // run the bench again in a fresh process, which finds it.
    const again = spawnSync(process.execPath, [fileURLToPath(scriptUrl), ...process.argv.slice(2)], { stdio: 'inherit' })
    process.exit(again.status ?? 1)
  }
}
