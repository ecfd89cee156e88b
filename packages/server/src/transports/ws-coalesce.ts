import { mergeLatestWins, type JobEvent, type JobEventOf, type LatestWinsType, type WsServerMessage } from '@jobwire/protocol'

/**
 * A run of one job's latest-wins events (`progress`, `item`) waiting for a slow reader, kept as
 * the latest of each: one merged event per item id, one per stretch of progress between stage
 * changes, and every stage change on its own (its time is the stage's timeline entry). Whatever is
 * poured in, a run holds at most one entry per item id and per stage change, and applying it
 * (`applyCoalesced`) gives exactly the state the events would have given one by one.
 */
export class CoalescedRun {
  readonly jobId: string
  readonly from: number
  #last: number
  /** Insertion order is application order: items keep their order of first appearance. */
  readonly #entries = new Map<string, JobEvent>()
  /** Approximate size of each entry's encoding, for the reader's lag accounting. */
  readonly #chars = new Map<string, number>()
  #totalChars = 0
  /** The stage in effect after the run (undefined: unknown, so any stage counts as a change). */
  #stage: string | null | undefined
  #segment = 0

  constructor(first: JobEventOf<LatestWinsType>, firstChars: number, stageBefore: string | null | undefined) {
    this.jobId = first.jobId
    this.from = first.seq
    this.#last = first.seq - 1
    this.#stage = stageBefore
    this.add(first, firstChars)
  }

  /** About how many characters the run's message takes. */
  get chars(): number {
    return this.#totalChars
  }

  get lastSeq(): number {
    return this.#last
  }

  get size(): number {
    return this.#entries.size
  }

  /** Takes the next event of the job if it extends the run; false otherwise (the run is closed to it). */
  add(event: JobEvent, chars: number): boolean {
    if (event.jobId !== this.jobId || event.seq !== this.#last + 1) return false
    let key: string
    if (event.type === 'item') {
      key = `item:${event.data.id}`
      const earlier = this.#entries.get(key)
      this.#entries.set(key, earlier === undefined ? event : (mergeLatestWins(earlier, event, undefined) ?? event))
    } else if (event.type === 'progress') {
      const stage = event.data.stage
      if (stage !== undefined && (this.#stage === undefined || stage !== this.#stage)) {
        // A stage change stands alone; progress after it merges into the next stretch.
        key = `stage:${++this.#segment}`
        this.#entries.set(key, event)
        this.#segment++
        this.#stage = stage
      } else {
        key = `progress:${this.#segment}`
        const earlier = this.#entries.get(key)
        const merged = earlier === undefined ? event : mergeLatestWins(earlier, event, this.#stage)
        if (merged === null) return false
        this.#entries.set(key, merged)
      }
    } else {
      return false
    }
    this.#totalChars += chars - (this.#chars.get(key) ?? 0)
    this.#chars.set(key, chars)
    this.#last = event.seq
    return true
  }

  /** The run as one message: a plain event while it is a single unmerged one. */
  toMessage(): WsServerMessage {
    const events = [...this.#entries.values()]
    const only = events[0]
    if (events.length === 1 && only !== undefined && only.seq === this.from) return { type: 'event', event: only }
    return { type: 'coalesced', jobId: this.jobId, from: this.from, events }
  }
}
