/** Small, dependency-free statistics for benchmark samples. */

/** The p-quantile (0 ≤ p ≤ 1) by linear interpolation between closest ranks (R type 7). */
export const quantile = (values: ReadonlyArray<number>, p: number): number => {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  if (sorted.length === 1) return sorted[0]!
  const rank = Math.min(Math.max(p, 0), 1) * (sorted.length - 1)
  const low = Math.floor(rank)
  const high = Math.ceil(rank)
  return sorted[low]! + (sorted[high]! - sorted[low]!) * (rank - low)
}

export const median = (values: ReadonlyArray<number>): number => quantile(values, 0.5)

export const mean = (values: ReadonlyArray<number>): number =>
  values.length === 0 ? Number.NaN : values.reduce((sum, v) => sum + v, 0) / values.length

export interface Summary {
  readonly n: number
  readonly median: number
  readonly min: number
  readonly max: number
  readonly q1: number
  readonly q3: number
  /** Half the min–max range relative to the median, in percent: the "±" shown in tables. */
  readonly spreadPct: number
}

export const summarize = (values: ReadonlyArray<number>): Summary | null => {
  const finite = values.filter((v) => Number.isFinite(v))
  if (finite.length === 0) return null
  const med = median(finite)
  const min = Math.min(...finite)
  const max = Math.max(...finite)
  return {
    n: finite.length,
    median: med,
    min,
    max,
    q1: quantile(finite, 0.25),
    q3: quantile(finite, 0.75),
    spreadPct: med === 0 ? 0 : ((max - min) / 2 / Math.abs(med)) * 100
  }
}

export interface Percentiles {
  readonly n: number
  readonly p50: number
  readonly p95: number
  readonly p99: number
  readonly max: number
}

export const percentiles = (values: ReadonlyArray<number>): Percentiles => ({
  n: values.length,
  p50: quantile(values, 0.5),
  p95: quantile(values, 0.95),
  p99: quantile(values, 0.99),
  max: values.length === 0 ? Number.NaN : Math.max(...values)
})

/** Ratios a[i] / b[i] of the rounds where both are present. */
export const pairedRatios = (a: ReadonlyArray<number | null>, b: ReadonlyArray<number | null>): Array<number> => {
  const ratios: Array<number> = []
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const x = a[i]
    const y = b[i]
    if (x === null || x === undefined || y === null || y === undefined || !Number.isFinite(x) || !Number.isFinite(y) || y === 0) continue
    ratios.push(x / y)
  }
  return ratios
}
