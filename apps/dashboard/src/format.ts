import { useEffect, useState } from 'react'

/** "1.2 s", "3 min 04 s", "2 h 05 min". */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) return '—'
  // A few ms below zero: the browser's clock is a little behind the server's.
  ms = Math.max(0, ms)
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)} s`
  const seconds = Math.floor(ms / 1000)
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${String(seconds % 60).padStart(2, '0')} s`
  return `${Math.floor(seconds / 3600)} h ${String(Math.floor((seconds % 3600) / 60)).padStart(2, '0')} min`
}

/** How long a job has run (or ran): from its start to its end, or to now while it runs. */
export function jobDuration(job: { startedAt: string | null; finishedAt: string | null }, now: number): string {
  if (job.startedAt === null) return '—'
  const end = job.finishedAt === null ? now : Date.parse(job.finishedAt)
  return formatDuration(end - Date.parse(job.startedAt))
}

export function formatTime(iso: string): string {
  return new Date(iso).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' })
}

/** The current time, re-rendering every `everyMs` while `active`. */
export function useNow(active: boolean, everyMs = 1000): number {
  const [now, setNow] = useState(() => Date.now())
  useEffect(() => {
    if (!active) return
    // Starting (again): the time kept since the last tick may be long past.
    setNow(Date.now())
    const timer = setInterval(() => setNow(Date.now()), everyMs)
    return () => clearInterval(timer)
  }, [active, everyMs])
  return now
}
