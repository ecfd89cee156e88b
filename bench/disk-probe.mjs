// Disk-stall probe, a child of bench/run.mjs (IPC): while the create phase measures SQLite, it
// appends 4 KiB to a file in argv[2] (the directory the server's database is in, so the same
// filesystem) and fdatasyncs it every BENCH_DISK_PROBE_MS (50), and reports the longest fdatasync
// since the last {type:'mark'} on {type:'read'} → {type:'disk', maxMs, count}. A commit cannot be
// faster than the disk: a slice during which the disk itself stalled says nothing about Jobwire.
import { closeSync, fdatasyncSync, openSync, rmSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'

const dir = process.argv[2]
const every = Number(process.env.BENCH_DISK_PROBE_MS ?? 50)
const path = join(dir, `disk-probe-${process.pid}`)
const fd = openSync(path, 'w')
const block = Buffer.alloc(4096, 7)
let maxMs = 0
let count = 0
let written = 0
const timer = setInterval(() => {
  // Keep the file small: start over every 4 MiB.
  writeSync(fd, block, 0, block.length, (written = (written + block.length) % (4 * 1024 * 1024)))
  const t0 = performance.now()
  fdatasyncSync(fd)
  maxMs = Math.max(maxMs, performance.now() - t0)
  count++
}, every)

process.on('message', (message) => {
  if (message.type === 'mark') {
    maxMs = 0
    count = 0
    process.send({ type: 'marked' })
  } else if (message.type === 'read') {
    process.send({ type: 'disk', maxMs, count })
  } else if (message.type === 'stop') {
    clearInterval(timer)
    closeSync(fd)
    rmSync(path, { force: true })
    process.exit(0)
  }
})
process.send({ type: 'ready' })
