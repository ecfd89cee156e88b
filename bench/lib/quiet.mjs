import { cpus } from 'node:os'

const busyMs = () => cpus().reduce((sum, { times }) => sum + times.user + times.nice + times.sys + times.irq, 0)
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Waits until the whole machine uses at most `maxCores` over a `windowMs` window (what a run before
 * left behind — exiting processes, a store deleting its data, the kernel closing thousands of
 * sockets — has settled), or `timeoutMs` passed. Says how long it waited and the last window's use.
 */
export async function waitForQuiet({ maxCores = 0.3, windowMs = 1000, timeoutMs = 20_000 } = {}) {
  const start = Date.now()
  for (;;) {
    const before = busyMs()
    await sleep(windowMs)
    const cores = (busyMs() - before) / windowMs
    if (cores <= maxCores || Date.now() - start >= timeoutMs) return { waitedMs: Date.now() - start, cores }
  }
}
