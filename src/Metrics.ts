/** The runtime's metrics, as Effect metrics; the service renders them for Prometheus. */
import { Metric, MetricBoundaries } from "effect"

export const jobsClaimed = Metric.counter("skiplock_jobs_claimed_total", { description: "Jobs claimed by this process", incremental: true })
export const jobsCompleted = Metric.counter("skiplock_jobs_completed_total", { description: "Jobs completed by this process", incremental: true })
export const jobsFailed = Metric.counter("skiplock_jobs_failed_total", { description: "Jobs that failed for good in this process", incremental: true })
export const jobsRetried = Metric.counter("skiplock_jobs_retried_total", { description: "Failed attempts scheduled for a retry", incremental: true })
export const jobsReleased = Metric.counter("skiplock_jobs_released_total", {
  description: "Jobs released back to pending without counting the attempt: on shutdown, or after a lost database connection",
  incremental: true
})
export const jobsRescued = Metric.counter("skiplock_jobs_rescued_total", { description: "Jobs with an expired lease rescued by this process", incremental: true })
export const outcomesUnrecorded = Metric.counter("skiplock_outcomes_unrecorded_total", {
  description: "Attempts whose outcome could not be written (the database stayed unreachable); their jobs are rescued",
  incremental: true
})
export const leasesLost = Metric.counter("skiplock_leases_lost_total", { description: "Jobs this process stopped because it lost their lease", incremental: true })

export const handlerDuration = Metric.histogram(
  "skiplock_handler_duration_seconds",
  MetricBoundaries.fromIterable([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]),
  "Handler run time per attempt"
)

// Tagging makes a new metric object each time; jobs of one type share one (a hot path).
const tagged = new WeakMap<object, Map<string, unknown>>()

/** Tags a metric with the job type it counts. */
export const forJobType = <M extends Metric.Metric<any, any, any>>(metric: M, jobType: string): M => {
  let byType = tagged.get(metric)
  if (byType === undefined) tagged.set(metric, (byType = new Map()))
  let found = byType.get(jobType) as M | undefined
  if (found === undefined) byType.set(jobType, (found = Metric.tagged(metric, "job_type", jobType) as M))
  return found
}

/**
 * Registers the per-type counters of these job types at 0, so that /metrics shows them before their
 * first event (Prometheus' increase() sees the first failure after a restart only from a 0).
 */
export const startAtZero = (jobTypes: ReadonlyArray<string>): void => {
  for (const jobType of jobTypes) {
    for (const counter of [jobsClaimed, jobsCompleted, jobsFailed, jobsRetried, jobsReleased, leasesLost, outcomesUnrecorded]) {
      forJobType(counter, jobType).unsafeUpdate(0, [])
    }
  }
  jobsRescued.unsafeUpdate(0, [])
}
