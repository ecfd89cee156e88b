/** A JSON value, as app metadata may hold. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue }

/**
 * App data a `progress` or `item` event carries beside its percent and message (counts such as
 * `{chunksProcessed: 12, totalChunks: 40}`). Merged latest-wins per key into the job's progress
 * (or the item); a key set to `null` is removed.
 */
export type Metadata = Record<string, JsonValue>

/**
 * Limits of metadata, checked on every event and again on the merged result (a job's progress,
 * one item): at most `maxKeys` keys of at most `maxKeyLength` characters, and at most `maxBytes`
 * bytes of JSON.
 */
export const metadataLimits = { maxKeys: 32, maxKeyLength: 100, maxBytes: 4096 } as const

/** `update` merged into `current`: its keys win, and a key it sets to `null` is removed. */
export function mergeMetadata(current: Metadata | undefined, update: Metadata): Metadata {
  const merged: Metadata = { ...current }
  for (const [key, value] of Object.entries(update)) {
    if (value === null) delete merged[key]
    else merged[key] = value
  }
  return merged
}

/** Why `metadata` breaks the limits, or null when it keeps them. */
export function metadataProblem(metadata: Metadata): string | null {
  const keys = Object.keys(metadata)
  if (keys.length > metadataLimits.maxKeys) return `holds ${keys.length} keys; at most ${metadataLimits.maxKeys}`
  const long = keys.find((key) => key.length === 0 || key.length > metadataLimits.maxKeyLength)
  if (long !== undefined) return `key "${long.slice(0, 40)}" must be 1–${metadataLimits.maxKeyLength} characters`
  const bytes = new TextEncoder().encode(JSON.stringify(metadata)).length
  if (bytes > metadataLimits.maxBytes) return `is ${bytes} bytes of JSON; at most ${metadataLimits.maxBytes}`
  return null
}
