import { Writable } from 'node:stream'
import { pino } from 'pino'
import { describe, expect, it } from 'vitest'
import { LazyLogger } from '../src/http/lazy-logger.js'

/** A real pino logger writing its lines into an array, and how many children were made of it. */
function recordingLogger(): { logger: pino.Logger; lines: Record<string, unknown>[]; children: () => number } {
  const lines: Record<string, unknown>[] = []
  const stream = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>)
      done()
    },
  })
  const logger = pino({ level: 'debug' }, stream)
  let made = 0
  // Counted on the root only (its children inherit pino's own child()).
  const child = logger.child as unknown as (this: pino.Logger, bindings: pino.Bindings, options?: pino.ChildLoggerOptions) => pino.Logger
  logger.child = function (this: pino.Logger, bindings: pino.Bindings, options?: pino.ChildLoggerOptions) {
    if (this === logger) made++
    return child.call(this, bindings, options)
  } as unknown as typeof logger.child
  return { logger, lines, children: () => made }
}

const flushed = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

describe('LazyLogger: a request logger made only when something logs', () => {
  it('makes no child while nothing logs, then one with every binding added before the first line', async () => {
    const { logger, lines, children } = recordingLogger()
    const lazy = new LazyLogger(logger, { reqId: 'r1' }, {})
    expect(lazy.bind({ jobId: 'job_a' })).toBe(true)
    expect(children()).toBe(0)
    lazy.info({ seq: 3 }, 'hello')
    lazy.error(new Error('boom'), 'failed')
    await flushed()
    expect(children()).toBe(1)
    expect(lines).toHaveLength(2)
    expect(lines[0]).toMatchObject({ reqId: 'r1', jobId: 'job_a', seq: 3, msg: 'hello', level: 30 })
    expect(lines[1]).toMatchObject({ reqId: 'r1', jobId: 'job_a', msg: 'failed', level: 50, err: { message: 'boom' } })
    // Once made, bindings go into a child of it instead.
    expect(lazy.bind({ tenant: 'acme' })).toBe(false)
    lazy.child({ tenant: 'acme' }).warn('later')
    await flushed()
    expect(lines[2]).toMatchObject({ reqId: 'r1', jobId: 'job_a', tenant: 'acme', msg: 'later', level: 40 })
  })

  it('keeps the level of its parent and honours a level of its own', async () => {
    const { logger, lines } = recordingLogger()
    const lazy = new LazyLogger(logger, { reqId: 'r2' }, { level: 'warn' })
    lazy.info('dropped')
    lazy.warn('kept')
    await flushed()
    expect(lazy.level).toBe('warn')
    expect(lines.map((line) => line.msg)).toEqual(['kept'])
  })
})
