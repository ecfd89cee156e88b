// Summarizes a .cpuprofile (node --cpu-prof): self time by function, and total (inclusive) time of
// the functions that matter for fan-out; or a .heapprofile (BENCH_PROFILE_HEAP=1): bytes allocated
// by function. Usage: node bench/profile-summary.mjs file.cpuprofile|file.heapprofile [top]
import { readFileSync } from 'node:fs'

const [file, topArg] = process.argv.slice(2)
if (file === undefined) {
  console.error('usage: node bench/profile-summary.mjs <file.cpuprofile> [top=30]')
  process.exit(1)
}
const top = Number(topArg ?? 30)
const profile = JSON.parse(readFileSync(file, 'utf8'))
const label = (n) => {
  const f = n.callFrame
  const where = f.url ? `${f.url.replace(/^.*\/(node_modules|packages)\//, '$1/').replace(/^node:/, 'node:')}:${f.lineNumber + 1}` : ''
  return `${f.functionName || '(anonymous)'} ${where}`.trim()
}
if (file.endsWith('.heapprofile')) {
  summarizeAllocations(profile)
  process.exit(0)
}
const nodes = new Map(profile.nodes.map((n) => [n.id, n]))
const parent = new Map()
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)

const selfUs = new Map()
const dt = profile.timeDeltas
for (let i = 0; i < profile.samples.length; i++) {
  const id = profile.samples[i]
  selfUs.set(id, (selfUs.get(id) ?? 0) + (dt[i] ?? 0))
}
let total = 0
let idle = 0
const bySelf = new Map()
const inclusive = new Map()
for (const [id, us] of selfUs) {
  const n = nodes.get(id)
  total += us
  if (n.callFrame.functionName === '(idle)') idle += us
  const key = label(n)
  bySelf.set(key, (bySelf.get(key) ?? 0) + us)
  // Inclusive: count once per distinct label on the stack.
  const seen = new Set()
  for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
    const k = label(nodes.get(cur))
    if (seen.has(k)) continue
    seen.add(k)
    inclusive.set(k, (inclusive.get(k) ?? 0) + us)
  }
}
const busy = total - idle
const pct = (us) => `${((100 * us) / busy).toFixed(1).padStart(5)} %`
console.log(`profile ${file}: ${(total / 1e6).toFixed(2)} s sampled, ${(busy / 1e6).toFixed(2)} s busy (percentages of busy)\n`)
console.log('self time:')
for (const [k, us] of [...bySelf].filter(([k]) => !k.startsWith('(idle)')).sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`  ${pct(us)}  ${k}`)
console.log('\ninclusive time:')
for (const [k, us] of [...inclusive].filter(([k]) => !k.startsWith('(idle)') && !k.startsWith('(root)')).sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`  ${pct(us)}  ${k}`)

/**
 * A sampling heap profile (bench/jobwire-server.mjs with BENCH_PROFILE_HEAP=1, a .heapprofile):
 * bytes allocated by function, self and inclusive, freed objects included.
 */
function summarizeAllocations(heap) {
  const self = new Map()
  const inclusive = new Map()
  let bytes = 0
  const walk = (node, stack) => {
    const key = label(node)
    bytes += node.selfSize
    self.set(key, (self.get(key) ?? 0) + node.selfSize)
    const below = new Set(stack).add(key)
    if (node.selfSize > 0) for (const k of below) inclusive.set(k, (inclusive.get(k) ?? 0) + node.selfSize)
    for (const child of node.children) walk(child, below)
  }
  walk(heap.head, new Set())
  const share = (n) => `${((100 * n) / bytes).toFixed(1).padStart(5)} %`
  console.log(`allocations ${file}: ${(bytes / 1e6).toFixed(1)} MB sampled (percentages of that)\n`)
  console.log('self:')
  for (const [k, n] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`  ${share(n)}  ${k}`)
  console.log('\ninclusive:')
  for (const [k, n] of [...inclusive].filter(([k]) => !k.startsWith('(root)')).sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`  ${share(n)}  ${k}`)
}
