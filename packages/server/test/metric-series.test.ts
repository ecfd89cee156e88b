import { Counter, Histogram, Registry } from 'prom-client'
import { describe, expect, it } from 'vitest'
import { SeriesCounter, SeriesHistogram } from '../src/metric-series.js'
import { isoMillis } from '../src/metrics.js'

/**
 * The counters and histograms the hot path uses (src/metric-series.ts) scrape exactly as
 * prom-client's own do after the same calls: same text, same JSON.
 */
const bounds = [0.001, 0.01, 0.1, 1]
const values = [0, 0.0005, 0.001, 0.002, 0.01, 0.05, 0.1, 0.5, 1, 2, 1e9, 0.001]

function both(): { ours: Registry; theirs: Registry; ourHistogram: SeriesHistogram; ourCounter: SeriesCounter; histogram: Histogram<'type' | 'status'>; counter: Counter<'type' | 'status'> } {
  const ours = new Registry()
  const theirs = new Registry()
  return {
    ours,
    theirs,
    ourHistogram: new SeriesHistogram(ours, 'test_seconds', 'Test "histogram" with \\ and\nnewline', ['type', 'status'], bounds),
    ourCounter: new SeriesCounter(ours, 'test_total', 'Test counter', ['type', 'status']),
    histogram: new Histogram({ name: 'test_seconds', help: 'Test "histogram" with \\ and\nnewline', labelNames: ['type', 'status'], buckets: bounds, registers: [theirs] }),
    counter: new Counter({ name: 'test_total', help: 'Test counter', labelNames: ['type', 'status'], registers: [theirs] }),
  }
}

describe('metric series', () => {
  it('scrape as prom-client does for the same observations, labels with quotes, backslashes and newlines included', async () => {
    const r = both()
    const labelSets = [
      ['render', 'completed'],
      ['render', 'failed'],
      ['enc"ode\\x\ny', 'completed'],
    ] as const
    labelSets.forEach(([type, status], n) => {
      for (const value of values.slice(n)) {
        r.ourHistogram.labels(type, status).observe(value)
        r.histogram.observe({ type, status }, value)
      }
      for (let i = 0; i <= n; i++) {
        r.ourCounter.labels(type, status).inc()
        r.counter.inc({ type, status })
      }
      r.ourCounter.labels(type, status).inc(2.5)
      r.counter.inc({ type, status }, 2.5)
    })
    const text = await r.ours.metrics()
    expect(text).toBe(await r.theirs.metrics())
    expect(text).toContain('test_seconds_bucket{le="0.001",type="render",status="completed"} 4')
    expect(text).toContain('test_total{type="render",status="failed"} 4.5')
    // prom-client's histogram samples also carry `exemplar: null` (exemplars are off).
    const withoutExemplars = (metrics: Awaited<ReturnType<Registry['getMetricsAsJSON']>>) =>
      metrics.map((metric) => ({ ...metric, values: metric.values.map((value) => ({ ...value, exemplar: undefined })) }))
    expect(withoutExemplars(await r.ours.getMetricsAsJSON())).toEqual(withoutExemplars(await r.theirs.getMetricsAsJSON()))
  })

  it('show a series once bound, with zeros, and forget every series on reset', async () => {
    const r = both()
    r.ourHistogram.labels('idle', 'completed')
    r.histogram.zero({ type: 'idle', status: 'completed' })
    expect(await r.ours.metrics()).toBe(await r.theirs.metrics())
    r.ours.resetMetrics()
    r.theirs.resetMetrics()
    expect(await r.ours.metrics()).toBe(await r.theirs.metrics())
    r.ourHistogram.labels('again', 'failed').observe(0.5)
    expect(await r.ours.metrics()).toContain('test_seconds_count{type="again",status="failed"} 1')
  })

  it('leave values that are not finite out, and refuse the wrong number of label values', () => {
    const r = both()
    const series = r.ourHistogram.labels('a', 'b')
    series.observe(Number.NaN)
    series.observe(Number.POSITIVE_INFINITY)
    expect(series.count).toBe(0)
    expect(() => r.ourHistogram.labels('only-one')).toThrow(/2 label values expected, got 1/)
  })
})

describe('isoMillis', () => {
  it('reads what Date.toISOString writes as Date.parse does', () => {
    for (const at of [0, 1, 999, 86_400_000 - 1, Date.UTC(2026, 1, 28, 23, 59, 59, 999), Date.UTC(2024, 1, 29, 12), Date.UTC(9999, 11, 31, 23, 59, 59, 999), Date.UTC(2000, 1, 29), Date.UTC(2100, 2, 1), Date.UTC(1900, 1, 28, 1), Date.UTC(1600, 0, 1), Date.UTC(1, 0, 1), 1_796_669_902_584]) {
      const text = new Date(at).toISOString()
      expect(isoMillis(text), text).toBe(at)
    }
    // Every day of four centuries (leap years, and the century years that are not), at noon.
    const wrong: string[] = []
    for (let at = Date.UTC(1900, 0, 1, 12); at < Date.UTC(2301, 0, 1); at += 86_400_000) if (isoMillis(new Date(at).toISOString()) !== at) wrong.push(new Date(at).toISOString())
    expect(wrong).toEqual([])
  })

  it('leaves any other form to Date.parse', () => {
    for (const text of ['2026-12-07T18:59:56Z', '2026-12-07T18:59:56.014+01:00', '2026-13-07T18:59:56.014Z', '2026-12-07T24:59:56.014Z', '2026-12-07 18:59:56.014Z', 'x026-12-07T18:59:56.014Z', '2026-12-07T1x:59:56.014Z', '2026-12-07T18:5 :56.014Z', '2026-12-07T18:59:-6.014Z', '2026-12-07T18:59:56.0x4Z', '2026-00-07T18:59:56.014Z', 'not a date at all, no...', '']) {
      expect(Object.is(isoMillis(text), Date.parse(text)), text).toBe(true)
    }
  })
})
