// The benchmark's statistics over several rounds (the smoke run has one): medians of even counts,
// the spread, quantiles, and ratios paired round by round, skipping rounds a system did not finish.
import { describe, expect, it } from "vitest"
import { median, pairedRatios, percentiles, quantile, summarize } from "../../bench/stats.js"
import { summarizeMetrics } from "../../bench/report.js"

describe("bench statistics", () => {
  it("medians and quantiles interpolate between ranks; the spread is half the range over the median", () => {
    expect(median([4, 1, 3, 2])).toBe(2.5)
    expect(median([3, 1, 2])).toBe(2)
    expect(quantile([10, 20, 30, 40, 50], 0.95)).toBe(48)
    const tail = percentiles([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    expect(tail).toMatchObject({ n: 10, p50: 5.5, max: 10 })
    expect(tail.p95).toBeCloseTo(9.55, 10)
    expect(tail.p99).toBeCloseTo(9.91, 10)
    expect(summarize([100, 80, 120, Number.NaN])).toEqual({ n: 3, median: 100, min: 80, max: 120, q1: 90, q3: 110, spreadPct: 20 })
    expect(summarize([])).toBeNull()
  })

  it("pairs ratios by round and skips a round either side is missing", () => {
    expect(pairedRatios([2, null, 6, 8], [1, 2, 3, 0])).toEqual([2, 2])
    expect(pairedRatios([1, 2, 3], [2, 4])).toEqual([0.5, 0.5])
  })

  it("a metric's ratio to a peer is the median of the per-round ratios, not the ratio of the medians", () => {
    const systems = [
      { id: "skiplock", label: "skiplock", packageName: "skiplock", version: "x", configuration: "" },
      { id: "graphile-worker", label: "Graphile Worker", packageName: "graphile-worker", version: "y", configuration: "" }
    ]
    // Rounds where both ran fast, then slow: per round skiplock is 1.5×, 1.0× and 2.0× as fast.
    const metric = { key: "drain.c5", scenario: "drain", label: "Drain", unit: "jobs/s", better: "higher", values: { skiplock: [300, 100, 400], "graphile-worker": [200, 100, 200] }, notes: {} }
    const [summary] = summarizeMetrics([metric] as never, systems)
    expect(summary!.perSystem["skiplock"]).toMatchObject({ n: 3, median: 300, min: 100, max: 400 })
    expect(summary!.ratioToPeer["graphile-worker"]).toMatchObject({ n: 3, median: 1.5, min: 1, max: 2 })
  })
})
