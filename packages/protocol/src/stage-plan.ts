/**
 * Stage plans: a job's ordered stages, each owning a slice of the overall percent. A producer
 * reports `progress({stage, fraction})` and the reducer turns it into the job's percent and each
 * stage's status, so every watcher computes the same numbers.
 */

/**
 * One stage as a job type or a create request declares it: a name alone (weight 1), a relative
 * `weight`, or a percent range `from`–`to`. A plan uses weights or ranges, not both.
 */
export type StageSpec = string | { name: string; weight?: number; from?: number; to?: number }

/** A stage with its percent range, as a `created` event carries it. */
export interface PlannedStage {
  name: string
  /** Overall percent when the stage starts… */
  from: number
  /** …and when it ends. */
  to: number
}

/** `failed` / `cancelled`: the stage the job was in when it failed or was cancelled. */
export type StageStatus = 'pending' | 'running' | 'done' | 'skipped' | 'failed' | 'cancelled'

/** A stage of a job's plan as the reduced state holds it. */
export interface StagePlanEntry extends PlannedStage {
  status: StageStatus
  /** How far the stage is, 0–1, while running or once done; null before it starts. */
  fraction: number | null
}

export const stagePlanLimits = { maxStages: 50, maxNameLength: 200 } as const

/**
 * Turns a declared plan into percent ranges: weights are spread over 0–100 in order; ranges are
 * kept as given (ordered, within 0–100, not overlapping). Throws a RangeError saying what is wrong.
 */
export function normalizeStagePlan(specs: readonly StageSpec[]): PlannedStage[] {
  if (!Array.isArray(specs) || specs.length === 0) throw new RangeError('a stage plan needs at least one stage')
  if (specs.length > stagePlanLimits.maxStages) throw new RangeError(`a stage plan holds at most ${stagePlanLimits.maxStages} stages`)
  const entries = specs.map((spec) => (typeof spec === 'string' ? { name: spec } : spec))
  const names = new Set<string>()
  for (const entry of entries) {
    if (typeof entry !== 'object' || entry === null || typeof entry.name !== 'string') throw new RangeError('each stage needs a name')
    if (entry.name.length === 0 || entry.name.length > stagePlanLimits.maxNameLength) {
      throw new RangeError(`stage names are 1–${stagePlanLimits.maxNameLength} characters`)
    }
    if (names.has(entry.name)) throw new RangeError(`stage "${entry.name}" appears twice`)
    names.add(entry.name)
  }
  const ranged = entries.filter((entry) => entry.from !== undefined || entry.to !== undefined)
  if (ranged.length === 0) {
    const weights = entries.map((entry) => entry.weight ?? 1)
    if (weights.some((w) => typeof w !== 'number' || !Number.isFinite(w) || w <= 0)) throw new RangeError('stage weights are positive numbers')
    // Each weight as a share of the largest, so every share is at most 1 and their total at most
    // maxStages: summed as given, two weights of 1e308 overflowed to Infinity and gave the first
    // stage 0–0 and the next a NaN start. Every partial sum is at most the total (the same positive
    // numbers added in the same order), so the ranges stay within 0–100 and in order.
    const largest = Math.max(...weights)
    const shares = weights.map((w) => w / largest)
    const total = shares.reduce((sum, share) => sum + share, 0)
    let sum = 0
    return entries.map((entry, index) => {
      const from = round((sum / total) * 100)
      sum += shares[index] as number
      return { name: entry.name, from, to: index === entries.length - 1 ? 100 : round((sum / total) * 100) }
    })
  }
  if (ranged.length !== entries.length || entries.some((entry) => entry.weight !== undefined)) {
    throw new RangeError('a stage plan uses weights or from/to ranges, not both')
  }
  let previous = 0
  return entries.map((entry) => {
    const from = entry.from ?? previous
    const to = entry.to
    if (typeof from !== 'number' || typeof to !== 'number' || !Number.isFinite(from) || !Number.isFinite(to)) {
      throw new RangeError(`stage "${entry.name}": from and to are numbers`)
    }
    if (from < previous || to < from || to > 100) {
      throw new RangeError(`stage "${entry.name}": ranges are ordered, within 0–100 and do not overlap`)
    }
    previous = to
    return { name: entry.name, from, to }
  })
}

/** The plan as a new job's state holds it: every stage pending. */
export function startPlan(stages: readonly PlannedStage[]): StagePlanEntry[] {
  return stages.map((stage) => ({ ...stage, status: 'pending', fraction: null }))
}

/**
 * The plan after the job reports `stage` at `fraction`: earlier stages that ran are done and the
 * ones never started are skipped; later ones are pending again (a retry that went back). Null
 * when `stage` is not in the plan.
 */
export function advancePlan(plan: readonly StagePlanEntry[], stage: string, fraction: number): StagePlanEntry[] | null {
  const index = plan.findIndex((entry) => entry.name === stage)
  if (index === -1) return null
  return plan.map((entry, i): StagePlanEntry => {
    if (i < index) {
      if (entry.status === 'running' || entry.status === 'failed' || entry.status === 'cancelled') return { ...entry, status: 'done', fraction: 1 }
      if (entry.status === 'pending') return { ...entry, status: 'skipped' }
      return entry
    }
    if (i === index) return { ...entry, status: 'running', fraction }
    return entry.status === 'pending' ? entry : { ...entry, status: 'pending', fraction: null }
  })
}

/** The plan of a completed job: what ran is done, what never started was skipped. */
export function finishPlan(plan: readonly StagePlanEntry[]): StagePlanEntry[] {
  return plan.map((entry) => {
    if (entry.status === 'running') return { ...entry, status: 'done', fraction: 1 }
    if (entry.status === 'pending') return { ...entry, status: 'skipped' }
    return entry
  })
}

/**
 * The plan of a job that failed or was cancelled: the stage it was in says so, at the fraction it
 * reached; the others stay as they were (a resume may still run them).
 */
export function stopPlan(plan: readonly StagePlanEntry[], status: 'failed' | 'cancelled'): StagePlanEntry[] {
  return plan.map((entry) => (entry.status === 'running' ? { ...entry, status } : entry))
}

/** Overall percent of a job in `stage` of its plan at `fraction`. */
export function planPercent(stage: PlannedStage, fraction: number): number {
  return round(stage.from + (stage.to - stage.from) * fraction)
}

function round(value: number): number {
  return Math.round(value * 1000) / 1000
}
