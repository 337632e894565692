// The Prometheus text format of /metrics, from Effect's metrics: names, types,
// labels, cumulative histogram buckets ending in +Inf.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Metric, MetricBoundaries } from "effect"
import { fromEffectMetrics, render } from "../../src/http/prometheus.js"

describe("Prometheus rendering", () => {
  it.effect("renders counters, gauges and histograms of Effect's registry with HELP, TYPE and escaped labels", () =>
    Effect.gen(function* () {
      const counter = Metric.counter("test_render_jobs_total", { description: "Jobs", incremental: true })
      const gauge = Metric.gauge("test_render_depth", { description: "Depth" })
      const upAndDown = Metric.counter("test_render_active", { description: "Active" })
      const histogram = Metric.histogram("test_render_seconds", MetricBoundaries.fromIterable([0.1, 1]), "Durations")
      yield* Metric.incrementBy(Metric.tagged(counter, "job_type", "sepa_export"), 2)
      yield* Metric.set(gauge, 7)
      yield* Metric.incrementBy(upAndDown, 3)
      yield* Metric.incrementBy(upAndDown, -1)
      for (const value of [0.05, 0.5, 5]) yield* Metric.update(Metric.tagged(histogram, "job_type", 'a"b'), value)

      const text = render(fromEffectMetrics(yield* Metric.snapshot).filter((family) => family.name.startsWith("test_render_")))
      expect(text).toContain('# HELP test_render_jobs_total Jobs\n# TYPE test_render_jobs_total counter\ntest_render_jobs_total{job_type="sepa_export"} 2\n')
      expect(text).toContain("# TYPE test_render_depth gauge\ntest_render_depth 7\n")
      // A counter that is not `incremental` may go down: a gauge to Prometheus.
      expect(text).toContain("# TYPE test_render_active gauge\ntest_render_active 2\n")
      expect(text).toContain(
        [
          "# HELP test_render_seconds Durations",
          "# TYPE test_render_seconds histogram",
          'test_render_seconds_bucket{job_type="a\\"b",le="0.1"} 1',
          'test_render_seconds_bucket{job_type="a\\"b",le="1"} 2',
          'test_render_seconds_bucket{job_type="a\\"b",le="+Inf"} 3',
          'test_render_seconds_sum{job_type="a\\"b"} 5.55',
          'test_render_seconds_count{job_type="a\\"b"} 3'
        ].join("\n")
      )
    }))

  it("merges families of one name under the first HELP and TYPE", () => {
    const text = render([
      { name: "x", help: "first", type: "gauge", samples: [{ labels: { a: "1" }, value: 1 }] },
      { name: "x", help: "second", type: "gauge", samples: [{ labels: { a: "2" }, value: 2 }] }
    ])
    expect(text).toBe('# HELP x first\n# TYPE x gauge\nx{a="1"} 1\nx{a="2"} 2\n')
  })
})
