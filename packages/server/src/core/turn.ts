/**
 * The end of a turn of the event loop (Node's check phase, where setImmediate callbacks run) is
 * where writes are grouped: a store commits the writes of the turn together (SQLite's group
 * commit), and the transports write what the turn left pending on each connection (TickFlusher).
 * A flush scheduled from inside a commit must not wait for the next turn's check phase: the
 * commit marks itself with `runAtEndOfTurn`, and the flusher then follows it in the same turn.
 */
let depth = 0

/** Runs `work`, which itself runs at the end of a turn, so that end-of-turn work it schedules follows it at once. */
export function runAtEndOfTurn(work: () => void): void {
  depth++
  try {
    work()
  } finally {
    depth--
  }
}

/** Schedules `work` for the end of this turn: right after the running end-of-turn work, or by setImmediate. */
export function atEndOfTurn(work: () => void): void {
  if (depth > 0) process.nextTick(work)
  else setImmediate(work)
}
