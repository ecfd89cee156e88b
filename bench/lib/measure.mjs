// What the benches share besides their child processes: a JSON POST over a keep-alive
// undici Pool, percentiles of the subscribers' latency histograms, and the time of one call.

/** POSTs `body` as JSON with the bench's API key; throws on a non-2xx answer. */
export async function postJson(pool, apiKey, path, body) {
  const response = await pool.request({
    path,
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${apiKey}` },
    body: JSON.stringify(body),
  })
  const text = await response.body.text()
  if (response.statusCode >= 300) throw new Error(`${path}: HTTP ${response.statusCode} ${text.slice(0, 200)}`)
  return JSON.parse(text)
}

/** The p-th percentile, in ms, of a sorted sparse histogram [[bucket, count], …] of `bucketUs` buckets (upper edge). */
export function percentile(histogram, bucketUs, p) {
  let total = 0
  for (const [, n] of histogram) total += n
  let seen = 0
  for (const [bucket, n] of histogram) {
    seen += n
    if (seen >= (p / 100) * total) return ((bucket + 1) * bucketUs) / 1000
  }
  return NaN
}

/** Nanoseconds per call of `fn`: doubles the repetitions until one batch takes over 20 ms. */
export function timePerCall(fn) {
  let reps = 1
  for (;;) {
    const start = process.hrtime.bigint()
    for (let i = 0; i < reps; i++) fn()
    const ns = Number(process.hrtime.bigint() - start)
    if (ns > 20e6) return ns / reps
    reps *= 2
  }
}

export function median(values) {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]
}

/** The subscribers' latency histograms: 20 µs buckets up to 10 s; the last one counts everything above. */
export const BUCKET_US = 20
export const BUCKETS = 500_000

/**
 * The send time stamped at `data[start…]` (decimal µs since the epoch), or -1 with fewer than
 * `minDigits` digits there. On the subscribers' hot path: no allocation.
 */
export function readStamp(data, start, minDigits = 0) {
  let value = 0
  let digits = 0
  for (let j = start; ; j++, digits++) {
    const c = data[j]
    if (c === undefined || c < 48 || c > 57) break
    value = value * 10 + (c - 48)
  }
  return digits < minDigits ? -1 : value
}

/** Counts one delivery sent at `sentUs` and received at `nowUs` (µs) in `histogram` (BUCKETS + 1 counts). */
export function recordLatency(histogram, nowUs, sentUs) {
  const bucket = Math.floor((nowUs - sentUs) / BUCKET_US)
  histogram[bucket < 0 ? 0 : bucket > BUCKETS ? BUCKETS : bucket]++
}
