import pino from 'pino'
import { describe, expect, it } from 'vitest'
import { startServer } from '../src/server.js'
import { FailureLog } from '../src/failure-log.js'
import { sleep, testApiKey } from './fixtures.js'
import { deletePrefix, redisReachable, redisUrl, testPrefix } from './redis-fixtures/redis.js'
import { startTcpProxy } from '../../../test/support/tcp-proxy.js'
import { until } from '../../../test/support/wait.js'

/** What an operator reads while the store is down: each problem once, a reminder now and then, and its end. */
interface Line {
  level: number
  msg: string
  failures?: number
  [field: string]: unknown
}

function capture(): { logger: pino.Logger; lines: Line[]; count: (msg: string) => number } {
  const lines: Line[] = []
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as Line) })
  return { logger, lines, count: (msg) => lines.filter((line) => line.msg === msg).length }
}

describe('FailureLog: a periodic task failing again and again', () => {
  it('warns at the first failure and at each new one, reminds with the count once per interval, and says when it works again', () => {
    const { logger, lines } = capture()
    let now = 0
    const log = new FailureLog(logger, 60_000, () => now)
    const down = new Error('Redis is unreachable')
    for (; now < 60_000; now += 1_000) log.failed('lease sweep', down)
    expect(lines.map((line) => line.msg)).toEqual(['lease sweep failed'])
    log.failed('lease sweep', down)
    expect(lines.at(-1)).toMatchObject({ msg: 'lease sweep still failing', failures: 61, failingForMs: 60_000 })
    now += 1_000
    log.failed('lease sweep', new Error('Redis answered READONLY'))
    expect(lines.at(-1)).toMatchObject({ msg: 'lease sweep failed', err: { message: 'Redis answered READONLY' } })
    log.failed('deadline sweep', down)
    now += 1_000
    log.succeeded('lease sweep')
    log.succeeded('lease sweep')
    expect(lines.slice(-2)).toMatchObject([{ msg: 'deadline sweep failed' }, { msg: 'lease sweep works again', failures: 62, failedForMs: 62_000 }])
    log.succeeded('marking watched jobs')
    expect(lines).toHaveLength(5)
  })
})

if (redisReachable('outage logs: Redis away and back')) {
  describe('a node whose Redis goes away', () => {
    it('logs each sweep failing once and each connection error once however long it lasts, then each sweep working again', async () => {
      const proxy = await startTcpProxy(redisUrl)
      const prefix = testPrefix('outage-log')
      const { logger, lines, count } = capture()
      const node = await startServer({
        logger,
        config: { apiKey: testApiKey, port: 0, host: '127.0.0.1', redis: proxy.url, redisPrefix: prefix, leaseSweepInterval: 50, deadlineSweepInterval: 20 },
      })
      try {
        await proxy.down()
        await until(() => count('lease sweep failed') > 0 && count('deadline sweep failed') > 0, 'the sweeps to fail')
        // Forty more lease sweeps and a hundred deadline sweeps, and the reconnect attempts meanwhile.
        await sleep(2_000)
        // One line each, or two where the first failure was a command cut off as Redis went (then "unreachable").
        expect(count('lease sweep failed')).toBeLessThanOrEqual(2)
        expect(count('deadline sweep failed')).toBeLessThanOrEqual(2)
        const connectionErrors = lines.filter((line) => / connection error/.test(line.msg))
        const kinds = new Set(connectionErrors.map((line) => line.msg))
        expect(kinds.size).toBeGreaterThan(0)
        expect(connectionErrors.length).toBeLessThanOrEqual(2 * kinds.size)
        await proxy.up()
        await until(() => count('lease sweep works again') === 1 && count('deadline sweep works again') === 1, 'the sweeps to work again')
      } finally {
        await node.close()
        await proxy.close()
        await deletePrefix(prefix)
      }
    })
  })
}
