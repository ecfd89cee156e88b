/**
 * A clock the test moves by hand, for the SDKs that take injectable timers (`@jobwire/worker`'s
 * `Timers`, `@jobwire/client`'s `timers` and `now`): timers fire only inside `advance`, in the
 * order they fall due, with promise chains settling in between, so what a timer starts (a
 * reconnect, a retry, a poll) runs before the next one fires. No test outcome waits on a real clock.
 */
export class ManualTimers {
  private time: number
  private nextId = 1
  private readonly pending = new Map<number, { at: number; callback: () => void }>()

  /** `start`: what `now()` says at first (epoch ms for code that compares it with real times, such as token expiries). */
  constructor(start = 0) {
    this.time = start
  }

  now(): number {
    return this.time
  }

  setTimeout(callback: () => void, ms: number): unknown {
    const id = this.nextId++
    this.pending.set(id, { at: this.time + Math.max(0, ms), callback })
    return id
  }

  clearTimeout(handle: unknown): void {
    this.pending.delete(handle as number)
  }

  /** Timers waiting to fire. */
  get scheduled(): number {
    return this.pending.size
  }

  /** When each waiting timer falls due, soonest first. */
  get dueTimes(): number[] {
    return [...this.pending.values()].map((timer) => timer.at).sort((a, b) => a - b)
  }

  /** Moves time forward by `ms`, firing due timers and letting promises settle in between. */
  async advance(ms: number): Promise<void> {
    const until = this.time + ms
    for (;;) {
      await settle()
      const due = [...this.pending.entries()].filter(([, timer]) => timer.at <= until).sort((a, b) => a[1].at - b[1].at)[0]
      if (due === undefined) break
      this.pending.delete(due[0])
      this.time = due[1].at
      due[1].callback()
    }
    this.time = until
    await settle()
  }
}

/** Lets every promise chain that can move, move. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve))
}
