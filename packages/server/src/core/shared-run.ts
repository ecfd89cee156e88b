/**
 * Work whose result every caller may share as long as it started after their call: an fsync that
 * makes commits durable (stores/sqlite-wal.ts), a read that must see every write acknowledged
 * before it was asked for (stores/redis/commits.ts). The first call starts a run; calls made while
 * it runs wait for it and share the one run that starts when it ends, so at most two are ever in
 * flight however many callers come. `onIdle` is called when a run ends with none queued after it.
 */
export class SharedRun<T> {
  #running: Promise<T> | null = null
  #next: Promise<T> | null = null

  constructor(
    private readonly start: () => Promise<T>,
    private readonly onIdle?: () => void,
  ) {}

  run(): Promise<T> {
    if (this.#running === null) {
      const running = this.start().finally(() => {
        if (this.#running !== running) return
        this.#running = null
        if (this.#next === null) this.onIdle?.()
      })
      this.#running = running
      return running
    }
    this.#next ??= this.#running.then(
      () => this.#startNext(),
      () => this.#startNext(),
    )
    return this.#next
  }

  /** Resolves once what is in flight now (the queued run, if any) has ended, whatever its outcome. */
  async settled(): Promise<void> {
    await (this.#next ?? this.#running)?.catch(() => undefined)
  }

  #startNext(): Promise<T> {
    this.#next = null
    return this.run()
  }
}
