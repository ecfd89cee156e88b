import type { Metric, Registry } from 'prom-client'

/**
 * Counters and histograms for the metrics a node updates on every job or store call. prom-client's
 * `inc` and `observe` check, copy and hash the labels on every call, a bound child's too: with a
 * job started, a store call or two and a job finished per claimed job, that was a tenth of a
 * memory node's CPU for trivial jobs (`bench/workers.mjs`). Here a series is looked up by its
 * label values in nested maps (no string built per call) and then counted with plain arithmetic.
 *
 * Each registers in a prom-client Registry beside prom-client's own metrics and is scraped in the
 * same text: it answers the Registry's calls (`get`, `getForPromString`, `reset`) with the values
 * prom-client's Counter and Histogram give for the same counts (test/metric-series.test.ts).
 */

interface SeriesValue {
  labels: Record<string, string | number>
  sharedLabels?: Record<string, string | number>
  value: number
  metricName?: string
}

interface Exported {
  name: string
  help: string
  type: 'counter' | 'histogram'
  aggregator: 'sum'
  values: SeriesValue[]
}

/** A series of a counter: `inc` adds. */
export class CounterSeries {
  value = 0
  constructor(readonly labels: Readonly<Record<string, string>>) {}

  inc(by = 1): void {
    this.value += by
  }
}

/** A series of a histogram: `observe` counts a value in its bucket and in the sum and count. */
export class HistogramSeries {
  sum = 0
  count = 0
  /** Observations per bucket (not cumulative), the last for values above every bound. */
  readonly buckets: Float64Array
  constructor(
    readonly labels: Readonly<Record<string, string>>,
    readonly bounds: readonly number[],
  ) {
    this.buckets = new Float64Array(bounds.length + 1)
  }

  observe(value: number): void {
    if (!Number.isFinite(value)) return
    const bounds = this.bounds
    let i = 0
    while (i < bounds.length && value > (bounds[i] as number)) i++
    ;(this.buckets[i] as number)++
    this.sum += value
    this.count++
  }
}

/** A metric's series by their label values, in the order of its label names. */
abstract class SeriesMetric<S extends CounterSeries | HistogramSeries> {
  abstract readonly type: 'counter' | 'histogram'
  readonly aggregator = 'sum'
  /** Label value → (next label's value → …) → series. */
  #series = new Map<string, unknown>()
  /** Every series, in the order they were first bound. */
  #all: S[] = []

  constructor(
    registry: Registry,
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
  ) {
    // The Registry only reads name and type, and calls get, getForPromString and reset.
    registry.registerMetric(this as unknown as Metric)
  }

  protected abstract create(labels: Record<string, string>): S

  /** The series of these label values (one per label name, in order), bound on first use. */
  labels(...values: string[]): S {
    if (values.length !== this.labelNames.length) throw new Error(`${this.name}: ${this.labelNames.length} label values expected, got ${values.length}`)
    let level = this.#series
    const last = values.length - 1
    for (let i = 0; i < last; i++) {
      const value = values[i] as string
      let next = level.get(value) as Map<string, unknown> | undefined
      if (next === undefined) level.set(value, (next = new Map()))
      level = next
    }
    let series = level.get(values[last] as string) as S | undefined
    if (series === undefined) {
      series = this.create(Object.fromEntries(this.labelNames.map((name, i) => [name, values[i] as string])))
      level.set(values[last] as string, series)
      this.#all.push(series)
    }
    return series
  }

  protected abstract export(series: S, values: SeriesValue[]): void

  /** What prom-client's Registry formats as text: histogram samples carry their series' labels apart from `le`. */
  getForPromString(): Promise<Exported> {
    const values: SeriesValue[] = []
    for (const series of this.#all) this.export(series, values)
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values })
  }

  /** The same with each sample's labels whole (`Registry.getMetricsAsJSON`). */
  async get(): Promise<Exported> {
    const exported = await this.getForPromString()
    exported.values = exported.values.map(({ sharedLabels, labels, ...rest }) => ({ ...rest, labels: { ...labels, ...sharedLabels } }))
    return exported
  }

  reset(): void {
    this.#series = new Map()
    this.#all = []
  }
}

export class SeriesCounter extends SeriesMetric<CounterSeries> {
  readonly type = 'counter'

  protected create(labels: Record<string, string>): CounterSeries {
    return new CounterSeries(labels)
  }

  protected export(series: CounterSeries, values: SeriesValue[]): void {
    values.push({ labels: series.labels, value: series.value })
  }
}

export class SeriesHistogram extends SeriesMetric<HistogramSeries> {
  readonly type = 'histogram'
  readonly #bounds: readonly number[]

  constructor(registry: Registry, name: string, help: string, labelNames: readonly string[], bounds: readonly number[]) {
    super(registry, name, help, labelNames)
    this.#bounds = [...bounds].sort((a, b) => a - b)
  }

  protected create(labels: Record<string, string>): HistogramSeries {
    return new HistogramSeries(labels, this.#bounds)
  }

  protected export(series: HistogramSeries, values: SeriesValue[]): void {
    const bucket = `${this.name}_bucket`
    const sharedLabels = series.labels
    let cumulative = 0
    this.#bounds.forEach((le, i) => {
      cumulative += series.buckets[i] as number
      values.push({ labels: { le }, sharedLabels, value: cumulative, metricName: bucket })
    })
    values.push(
      { labels: { le: '+Inf' }, sharedLabels, value: series.count, metricName: bucket },
      { labels: {}, sharedLabels, value: series.sum, metricName: `${this.name}_sum` },
      { labels: {}, sharedLabels, value: series.count, metricName: `${this.name}_count` },
    )
  }
}
