/**
 * What /metrics exports: a list of collectors, each turning one source into
 * Prometheus families. Effect's metrics (claimed, completed, failed, retried,
 * released, rescued, leases lost and outcomes unrecorded counters and the
 * handler duration histogram, counted by this process) come first; the database gauges describe the whole queue. Adding a
 * source means adding one collector to the list.
 */
import { SqlClient } from "@effect/sql"
import { Cause, Duration, Effect } from "effect"
import * as QueueStats from "../app/QueueStats.js"
import type { RunningService } from "../app/ServiceState.js"
import { JOB_STATUSES } from "../Jobs.js"
import { makeOutageLog } from "../internal/outageLog.js"
import { withinGate } from "./databaseGate.js"
import { effectMetrics, fromEffectMetrics, type MetricFamily } from "./prometheus.js"

/** Produces families from one source; `service` is undefined while the service starts. Must not fail. */
export type Collector = (service: RunningService | undefined) => Effect.Effect<ReadonlyArray<MetricFamily>>

const gauge = (name: string, help: string, samples: MetricFamily["samples"]): MetricFamily => ({ name, help, type: "gauge", samples })

/** Counters and histograms the runtime records (src/Metrics.ts), for this process. */
export const runtimeMetrics: Collector = () => Effect.map(effectMetrics, fromEffectMetrics)

// Every scrape during an outage fails: said as an outage (a warning, then every 10th), not once per scrape.
const queueMetricsOutage = makeOutageLog("collecting queue metrics")

/** The queue as the database sees it: all workers' jobs, not only this process's. */
export const queueGauges: Collector = (service) =>
  service === undefined
    ? Effect.succeed([gauge("skiplock_database_up", "1 when the last query for these metrics succeeded", [{ value: 0 }])])
    : Effect.flatMap(service.worker.status, (status) => QueueStats.collectCounts(status.jobTypes)).pipe(
        Effect.provideService(SqlClient.SqlClient, service.sql),
        // Within the endpoints' connections, and cancelled in the background (see checkDatabase in server.ts):
        // a scrape gets its answer in time, and a burst of scrapes leaves the worker its connections.
        withinGate(service, "metrics"),
        Effect.disconnect,
        Effect.timeout(Duration.seconds(5)),
        Effect.tap(() => queueMetricsOutage.succeeded),
        Effect.map((stats) => [
          gauge("skiplock_database_up", "1 when the last query for these metrics succeeded", [{ value: 1 }]),
          gauge(
            "skiplock_jobs",
            "Jobs in job_queue by type and status",
            stats.types.flatMap((type) =>
              JOB_STATUSES.map((status) => ({ labels: { job_type: type.jobType, status }, value: type.counts[status] }))
            )
          ),
          gauge(
            "skiplock_jobs_runnable",
            "Pending jobs whose run_at has come, by type",
            stats.types.map((type) => ({ labels: { job_type: type.jobType }, value: type.runnable }))
          ),
          gauge(
            "skiplock_oldest_runnable_job_age_seconds",
            "Seconds since the oldest runnable job of a type became runnable (0 when none waits)",
            stats.types.map((type) => ({ labels: { job_type: type.jobType }, value: type.oldestRunnableAgeSeconds }))
          ),
          gauge(
            "skiplock_workers",
            "Registered workers (job_workers) by state: alive when their heartbeat is recent",
            (["alive", "gone"] as const).map((state) => ({
              labels: { state },
              value: stats.workers.filter((worker) => worker.alive === (state === "alive")).length
            }))
          ),
          gauge(
            "skiplock_worker_jobs_in_hand",
            "Jobs each live registered worker had in hand (running, or claimed ahead) at its last heartbeat",
            stats.workers.filter((worker) => worker.alive).map((worker) => ({ labels: { worker_id: worker.workerId, host: worker.host }, value: worker.jobsInHand }))
          ),
          gauge(
            "skiplock_worker_heartbeat_age_seconds",
            "Seconds since each registered worker's last heartbeat",
            stats.workers.map((worker) => ({ labels: { worker_id: worker.workerId, host: worker.host }, value: worker.heartbeatAgeSeconds }))
          ),
          gauge(
            "skiplock_jobs_waiting_without_handler",
            "Pending jobs of a type that neither this service nor any live worker handles: they wait until a worker for it runs",
            stats.types.filter((type) => !type.handled).map((type) => ({ labels: { job_type: type.jobType }, value: type.counts.pending }))
          )
        ]),
        Effect.catchAllCause((cause) =>
          Effect.as(
            queueMetricsOutage.failed(Cause.squash(cause)),
            [gauge("skiplock_database_up", "1 when the last query for these metrics succeeded", [{ value: 0 }])]
          )
        )
      )

/** This process's worker. */
export const workerGauges: Collector = (service) =>
  service === undefined
    ? Effect.succeed([])
    : Effect.map(service.worker.status, (status) => {
        const labels = { worker_id: status.workerId }
        return [
          gauge("skiplock_worker_running_jobs", "Jobs this worker is running now", [{ labels, value: status.running }]),
          gauge("skiplock_worker_prefetched_jobs", "Jobs this worker claimed ahead and has not started yet", [{ labels, value: status.prefetched }]),
          gauge("skiplock_worker_concurrency", "At most this many jobs run at once in this worker", [{ labels, value: service.concurrency }]),
          gauge("skiplock_worker_claiming", "1 while this worker's claim loop runs", [{ labels, value: status.claiming ? 1 : 0 }])
        ]
      })

/** The collectors of /metrics, in output order. */
export const collectors: ReadonlyArray<Collector> = [runtimeMetrics, workerGauges, queueGauges]

export const collectAll = (service: RunningService | undefined) =>
  Effect.map(Effect.all(collectors.map((collect) => collect(service)), { concurrency: "unbounded" }), (families) => families.flat())
