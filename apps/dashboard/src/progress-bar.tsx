import type { ReactNode } from 'react'

/** A labelled progress bar; `percent` null means "not known yet" (indeterminate). */
export function ProgressBar({ percent, label, tone }: { percent: number | null; label: string; tone?: string }): ReactNode {
  const value = percent === null ? undefined : Math.max(0, Math.min(100, Math.round(percent)))
  return (
    <div
      className={`bar ${tone ?? ''}`}
      role="progressbar"
      aria-label={label}
      aria-valuemin={0}
      aria-valuemax={100}
      aria-valuenow={value}
      aria-valuetext={value === undefined ? 'not known yet' : `${value}%`}
    >
      <i style={{ width: `${value ?? 0}%` }} />
    </div>
  )
}
