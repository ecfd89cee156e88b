import { setImmediate as turn } from 'node:timers/promises'
import { describe, expect, it } from 'vitest'
import { TickFlusher } from '../src/transports/tick-flush.js'

/** A connection that records each flush, with the turn it happened in. */
class Recorder {
  flushes: number[] = []
  onFlush: () => void = () => {}
  constructor(private readonly clock: { turn: number }) {}
  flush(): void {
    this.flushes.push(this.clock.turn)
    this.onFlush()
  }
}

async function nextTurns(clock: { turn: number }, count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    await turn()
    clock.turn++
  }
}

describe('TickFlusher: what a turn left pending goes out at its end, once per connection', () => {
  it('flushes every connection scheduled in a turn once, however often it was scheduled, and not one forgotten', async () => {
    const clock = { turn: 0 }
    const flusher = new TickFlusher<Recorder>()
    const connections = Array.from({ length: 50 }, () => new Recorder(clock))
    for (const connection of connections) {
      flusher.schedule(connection)
      flusher.schedule(connection)
    }
    const forgotten = connections[7] as Recorder
    flusher.forget(forgotten)
    await nextTurns(clock, 3)
    expect(forgotten.flushes).toEqual([])
    for (const connection of connections) if (connection !== forgotten) expect(connection.flushes).toEqual([0])

    // The next turn's writes go out at that turn's end: the set walked before is empty again.
    const again = connections[3] as Recorder
    flusher.schedule(again)
    await nextTurns(clock, 2)
    expect(again.flushes).toEqual([0, 3])
    expect((connections[4] as Recorder).flushes).toEqual([0])
  })

  it('flushes a connection scheduled while a flush runs (by another connection) once more, not never', async () => {
    const clock = { turn: 0 }
    const flusher = new TickFlusher<Recorder>()
    const first = new Recorder(clock)
    const late = new Recorder(clock)
    let once = true
    first.onFlush = () => {
      if (!once) return
      once = false
      flusher.schedule(late)
      flusher.schedule(first)
    }
    flusher.schedule(first)
    await nextTurns(clock, 4)
    expect(late.flushes).toHaveLength(1)
    // `first` asked again during its own flush: it gets a second flush, not a lost one.
    expect(first.flushes).toHaveLength(2)
  })
})
