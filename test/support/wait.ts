/**
 * Resolves when `predicate` holds, checking every 10 ms; rejects after `ms` naming `what`. For
 * what arrives over a socket or a process boundary: never to let time pass for a timer (the
 * timing tests move a `ManualTimers` clock for that).
 */
export async function until(predicate: () => boolean, what: string, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}
