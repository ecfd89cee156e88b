/**
 * Whether a string is well-formed Unicode: no lone surrogate (one half of a UTF-16 pair without the
 * other, which JSON can carry as `"\ud800"`). SQLite and Redis keep text as UTF-8, where a lone
 * surrogate cannot be written: it came back as U+FFFD, so a job's text read back differed from the
 * chunks its watchers were sent, and two different names (`x\ud800`, `x\ud801`) became one
 * idempotency key, one owner index, one person. Names and text fields refuse it at the door (and
 * credentials carrying one are refused); JSON values (input, result, checkpoint, metadata) are
 * stored as JSON, escaped, and are kept as sent.
 */
export function isWellFormed(text: string): boolean {
  // String.prototype.isWellFormed (Node 20+; ES2024, past this project's `lib`): native, and fast
  // on one-byte strings, which hold no surrogate at all.
  return (text as unknown as { isWellFormed(): boolean }).isWellFormed()
}

/**
 * Free text (a message, a label, streamed text, a reason) with each lone surrogate replaced by
 * U+FFFD, as a browser converts a string to a USVString and TextEncoder encodes it: a producer that
 * splits a pair between two chunks, or slices a string in the middle of one, keeps its job, and
 * what is stored is what watchers are sent. The same string when it is well-formed (most are).
 */
export function wellFormed(text: string): string {
  return isWellFormed(text) ? text : (text as unknown as { toWellFormed(): string }).toWellFormed()
}

/** The reason a name with a lone surrogate is refused. */
export const notWellFormed = 'a lone surrogate (half of a UTF-16 pair): text must be well-formed Unicode'
