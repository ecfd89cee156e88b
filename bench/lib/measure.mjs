// What the fan-out benches share besides their child processes: a JSON POST over a keep-alive
// undici Pool, and percentiles of the subscribers' latency histograms.

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
