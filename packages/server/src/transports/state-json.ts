import type { JobState, SnapshotReason } from '@jobwire/protocol'

/** How many states' JSON are kept, and how many characters of it at most (a state's own can be ~10 MB). */
const kept = 16
const keptChars = 32 * 1024 ** 2
const states: (JobState | null)[] = new Array<JobState | null>(kept).fill(null)
const jsons: string[] = new Array<string>(kept).fill('')
let held = 0
let nextSlot = 0

/**
 * A job state's JSON, made once per state object while it is among the last few encoded: the
 * streams that start from the same state (late joiners of a popular job, on a store that hands out
 * its cached state) share it, instead of encoding the whole state — a long text, many items — once
 * per watcher; and so do reads of an unchanged job (`GET /v1/jobs/:id`). States are never changed
 * in place, so an object's JSON never goes stale. Only the last `kept`, within `keptChars`, are
 * held (not one per state, as a WeakMap would: that would hold a second copy of every cached state
 * that was read).
 */
export function stateJson(job: JobState): string {
  for (let i = 0; i < kept; i++) if (states[i] === job) return jsons[i] as string
  const json = JSON.stringify(job)
  if (json.length > keptChars) return json
  // Take the next slot, and the ones after it while what is held would pass the cap.
  for (let freed = 0; freed < kept && (freed === 0 || held + json.length > keptChars); freed++) {
    const slot = (nextSlot + freed) % kept
    held -= (jsons[slot] as string).length
    states[slot] = null
    jsons[slot] = ''
  }
  states[nextSlot] = job
  jsons[nextSlot] = json
  held += json.length
  nextSlot = (nextSlot + 1) % kept
  return json
}

/**
 * A snapshot's body, `{"job":…,"reset":…,"reason":…}` (what `JSON.stringify({job, reset, reason})`
 * writes), around the state's shared JSON: what SSE sends as its data, a long-poll as its
 * `snapshot` and a WebSocket after its `type` and `jobId`.
 */
export function snapshotJson(job: JobState, reset: boolean, reason: SnapshotReason): string {
  return `{"job":${stateJson(job)},"reset":${reset},"reason":${JSON.stringify(reason)}}`
}
