// Child processes of a benchmark (servers, clients), driven over IPC: start, wait for a message,
// ask and wait for the answer, stop. Every child started here is killed when the bench exits.
import { fork } from 'node:child_process'

const children = new Set()
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL')
})

/** Forks `script` (an absolute path) with an IPC channel; its stdout and stderr are the bench's. */
export function start(script, args, execArgv = []) {
  const child = fork(script, args, { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  children.add(child)
  child.on('exit', () => children.delete(child))
  return child
}

/** The child's next message of `type`; rejects if it exits first or stays silent for `timeoutMs`. */
export function next(child, type, timeoutMs = 120_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => done(new Error(`no '${type}' from ${child.spawnargs.at(-5) ?? 'a child'} in ${timeoutMs} ms`)), timeoutMs)
    const onMessage = (message) => message.type === type && done(null, message)
    const onExit = (code) => done(new Error(`child exited (${code}) before '${type}'`))
    function done(error, message) {
      clearTimeout(timer)
      child.off('message', onMessage)
      child.off('exit', onExit)
      if (error) reject(error)
      else resolve(message)
    }
    child.on('message', onMessage)
    child.on('exit', onExit)
  })
}

/** Sends `message` and waits for the answer of type `reply`. */
export function ask(child, message, reply) {
  const answer = next(child, reply)
  child.send(message)
  return answer
}

/** Asks the child to stop ({type: 'stop'}) and waits for it to exit; kills it after 10 s. */
export async function stop(child) {
  if (child.exitCode !== null) return
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.send({ type: 'stop' })
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
  await exited
  clearTimeout(timer)
}

/**
 * In a server child: answers {type:'stats'} with its CPU time and how long its event loop stalled
 * since the last stats (a GC pause, a long task), and {type:'stop'} by running `close` and exiting.
 */
export async function serveStats(close) {
  const { monitorEventLoopDelay } = await import('node:perf_hooks')
  // BENCH_LOOP_MONITOR=0: no loop-delay timer (every 5 ms), for a child whose instructions are counted.
  const loopDelay = process.env.BENCH_LOOP_MONITOR === '0' ? null : monitorEventLoopDelay({ resolution: 5 })
  loopDelay?.enable()
  process.on('message', (message) => {
    if (message.type === 'stats') {
      process.send({ type: 'stats', cpu: process.cpuUsage(), loopP99Ms: (loopDelay?.percentile(99) ?? 0) / 1e6, loopMaxMs: (loopDelay?.max ?? 0) / 1e6 })
      loopDelay?.reset()
    }
    if (message.type === 'stop') close().then(() => process.exit(0), () => process.exit(1))
  })
}
