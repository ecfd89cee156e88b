import { JobwireError } from '@jobwire/protocol'

/** How deep and how wide a JSON text may be (request bodies, WebSocket messages: everything stored comes through one). */
export interface JsonShapeLimits {
  /** Most nested objects/arrays, the outermost counting as 1. */
  maxDepth: number
  /** Most entries in one object or array. */
  maxWidth: number
}

let commasByDepth = new Int32Array(66)

const quote = 0x22
const backslash = 0x5c
const comma = 0x2c
const openObject = 0x7b
const closeObject = 0x7d
const openArray = 0x5b
const closeArray = 0x5d

/**
 * Checks the nesting and width of a JSON text before it is parsed, in one pass over its
 * characters with no recursion (a value nested thousands deep would overflow the stack of every
 * recursive walk after it: encoding, cloning, storing). It does not validate the JSON: JSON.parse
 * does that next. Throws `invalid_request` naming the path (`field`) and the limit.
 */
export function checkJsonShape(text: string, limits: JsonShapeLimits): void {
  const { maxDepth, maxWidth } = limits
  // Too short to hold that many brackets or commas: nothing to scan.
  if (text.length <= maxDepth && text.length <= 2 * maxWidth) return
  // Entries seen so far (commas) in each open container, by depth; one buffer for every call.
  if (commasByDepth.length < maxDepth + 2) commasByDepth = new Int32Array(maxDepth + 2)
  const commas = commasByDepth
  let depth = 0
  const length = text.length
  for (let i = 0; i < length; i++) {
    const c = text.charCodeAt(i)
    if (c === quote) {
      i = endOfString(text, i)
    } else if (c === openObject || c === openArray) {
      depth++
      if (depth > maxDepth) throw shapeError('deep', text, i, maxDepth)
      commas[depth] = 0
    } else if (c === closeObject || c === closeArray) {
      if (depth > 0) depth--
    } else if (c === comma && depth > 0) {
      const count = (commas[depth] as number) + 1
      commas[depth] = count
      // `count` commas separate count + 1 entries.
      if (count >= maxWidth) throw shapeError('wide', text, i, maxWidth)
    }
  }
}

/** The index of the quote that ends the string opened at `start` (or the text's end). */
function endOfString(text: string, start: number): number {
  let at = start
  for (;;) {
    at = text.indexOf('"', at + 1)
    if (at === -1) return text.length
    let slashes = 0
    while (text.charCodeAt(at - 1 - slashes) === backslash) slashes++
    if (slashes % 2 === 0) return at
  }
}

/** The error for a problem found at `index`, naming the container's path (found by a second, slower pass). */
function shapeError(problem: 'deep' | 'wide', text: string, index: number, limit: number): JobwireError {
  const open = pathAt(text, index)
  // Too deep: the container opening at `index` is at the end of the open ones' path; too wide: the innermost open one is.
  const path = problem === 'deep' ? open : open.slice(0, -1)
  const shown = path.length > 12 ? [...path.slice(0, 6), '…', ...path.slice(-4)] : path
  const joined = shown.join('.')
  const field = joined.length > 300 ? `${joined.slice(0, 300)}…` : joined
  const where = path.length === 0 ? 'the body' : field
  const reason =
    problem === 'deep'
      ? `${where}: JSON nested deeper than ${limit} levels (the limit)`
      : `${where}: a JSON object or array with more than ${limit} entries (the limit)`
  return new JobwireError('invalid_request', { ...(path.length === 0 ? {} : { field }), reason, limit })
}

type Segment = { kind: 'object'; key: string | null; awaitingKey: boolean } | { kind: 'array'; index: number }

/** The keys and indexes leading to the container open at `index` (the one opening there excluded). */
function pathAt(text: string, index: number): string[] {
  const stack: Segment[] = []
  for (let i = 0; i < index; i++) {
    const c = text.charCodeAt(i)
    const top = stack[stack.length - 1]
    if (c === quote) {
      const end = endOfString(text, i)
      if (top?.kind === 'object' && top.awaitingKey) {
        top.key = keyOf(text.slice(i, end + 1))
        top.awaitingKey = false
      }
      i = end
    } else if (c === openObject) {
      stack.push({ kind: 'object', key: null, awaitingKey: true })
    } else if (c === openArray) {
      stack.push({ kind: 'array', index: 0 })
    } else if (c === closeObject || c === closeArray) {
      stack.pop()
    } else if (c === comma && top !== undefined) {
      if (top.kind === 'array') top.index++
      else top.awaitingKey = true
    }
  }
  return stack.map((segment) => (segment.kind === 'array' ? String(segment.index) : (segment.key ?? '')))
}

function keyOf(literal: string): string {
  try {
    const key = JSON.parse(literal) as string
    return key.length > 40 ? `${key.slice(0, 40)}…` : key
  } catch {
    return '?'
  }
}
