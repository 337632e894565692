/**
 * What the queue holds right now, from the database: jobs by type and status,
 * the oldest runnable job, and job types with waiting jobs that no handler
 * takes. `skiplock stats` prints it; /metrics exports the counts (not the
 * oldest job's row) as gauges. The
 * caller says which types are handled (this process's worker, or the
 * application's handlers for the CLI), and every live worker in job_workers
 * adds the types it handles.
 */
import { SqlClient } from "@effect/sql"
import { Clock, Effect } from "effect"
import type { JobStatus } from "../Jobs.js"

export interface TypeCounts {
  readonly jobType: string
  /** Every status, 0 when there is none. */
  readonly counts: Readonly<Record<JobStatus, number>>
  /** Pending jobs whose run_at has come. */
  readonly runnable: number
  /** Seconds since the oldest runnable job of this type became runnable; 0 when none is. */
  readonly oldestRunnableAgeSeconds: number
  readonly handled: boolean
}

export interface OldestRunnable {
  readonly jobId: string
  readonly jobType: string
  readonly organizationId: string
  readonly runAt: Date
  readonly ageSeconds: number
}

/** What /metrics exports: counts only, without the oldest runnable job's row. */
export interface QueueCounts {
  readonly at: Date
  /** One entry per registered job type, plus any type that has jobs but is no longer registered. */
  readonly types: ReadonlyArray<TypeCounts>
  /** Types with pending jobs and no handler: those jobs wait until a worker for them starts. */
  readonly waitingWithoutHandler: ReadonlyArray<{ readonly jobType: string; readonly waiting: number }>
  /** The registered workers (job_workers), live ones first. */
  readonly workers: ReadonlyArray<WorkerInfo>
}

/** What `skiplock stats` prints: the counts and the oldest runnable job itself. */
export interface QueueStats extends QueueCounts {
  readonly oldestRunnable: OldestRunnable | null
}

export interface WorkerInfo {
  readonly workerId: string
  readonly host: string
  readonly pid: number
  readonly jobTypes: ReadonlyArray<string>
  readonly concurrency: number
  readonly jobsInHand: number
  readonly startedAt: Date
  readonly lastHeartbeatAt: Date
  readonly heartbeatAgeSeconds: number
  /**
   * Its last heartbeat is recent: within its lease (which outlasts its heartbeat interval), and at least
   * WORKER_ALIVE_SECONDS; a dead worker's jobs are rescued when their leases expire.
   */
  readonly alive: boolean
}

/**
 * A worker whose last heartbeat is older than this (one default lease, 30 s) and than its own lease is
 * counted as gone. Its lease counts too: a worker with a 5-minute lease may beat once a minute.
 */
export const WORKER_ALIVE_SECONDS = 30

const zeroCounts = (): Record<JobStatus, number> => ({ pending: 0, processing: 0, completed: 0, failed: 0 })

/**
 * Counts the queue at the Clock's current time. It reads every row of job_queue (by type and
 * status), so its cost grows with the history kept; /metrics runs it on each scrape.
 */
export const collectCounts = (handledTypes: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const at = new Date(yield* Clock.currentTimeMillis)
    const [registered, counts, runnable, workerRows] = yield* Effect.all([
      sql<{ name: string }>`SELECT name FROM job_types ORDER BY name`,
      sql<{ jobType: string; status: JobStatus; count: number }>`
        SELECT job_type AS "jobType", status, count(*)::int AS count FROM job_queue GROUP BY job_type, status`,
      // Pending jobs only; with many pending rows the planner may still read the table (a scrape's cost grows with the backlog).
      sql<{ jobType: string; runnable: number; oldestRunAt: Date }>`
        SELECT job_type AS "jobType", count(*)::int AS runnable, min(run_at) AS "oldestRunAt"
        FROM job_queue WHERE status = 'pending' AND run_at <= ${at} GROUP BY job_type`,
      // jobs_in_hand_until: its last heartbeat plus its lease (none before its first heartbeat).
      sql<Omit<WorkerInfo, "heartbeatAgeSeconds" | "alive"> & { readonly heldUntil: Date | null }>`
        SELECT worker_id AS "workerId", host, pid, job_types AS "jobTypes", concurrency,
               cardinality(jobs_in_hand) AS "jobsInHand", started_at AS "startedAt", last_heartbeat_at AS "lastHeartbeatAt",
               jobs_in_hand_until AS "heldUntil"
        FROM job_workers ORDER BY last_heartbeat_at DESC, worker_id`
    ])
    const workers = workerRows.map(({ heldUntil, ...worker }): WorkerInfo => {
      const heartbeatAgeSeconds = Math.max(0, (at.getTime() - worker.lastHeartbeatAt.getTime()) / 1000)
      const alive = heartbeatAgeSeconds <= WORKER_ALIVE_SECONDS || (heldUntil !== null && at.getTime() <= heldUntil.getTime())
      return { ...worker, heartbeatAgeSeconds, alive }
    })
    // A type is handled when the caller handles it or any live worker does.
    const handled = new Set([...handledTypes, ...workers.filter((worker) => worker.alive).flatMap((worker) => worker.jobTypes)])
    const byType = new Map<string, { counts: Record<JobStatus, number>; runnable: number; oldestRunnableAgeSeconds: number }>()
    const entry = (jobType: string) => {
      let found = byType.get(jobType)
      if (found === undefined) byType.set(jobType, (found = { counts: zeroCounts(), runnable: 0, oldestRunnableAgeSeconds: 0 }))
      return found
    }
    for (const { name } of registered) entry(name)
    for (const row of counts) entry(row.jobType).counts[row.status] = row.count
    for (const row of runnable) {
      const found = entry(row.jobType)
      found.runnable = row.runnable
      found.oldestRunnableAgeSeconds = ageAt(at, row.oldestRunAt)
    }
    const types = [...byType.entries()]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([jobType, found]): TypeCounts => ({ jobType, ...found, handled: handled.has(jobType) }))
    return {
      at,
      types,
      waitingWithoutHandler: types
        .filter((type) => !type.handled && type.counts.pending > 0)
        .map((type) => ({ jobType: type.jobType, waiting: type.counts.pending })),
      workers
    } satisfies QueueCounts
  }).pipe(Effect.withSpan("QueueStats.collectCounts"))

const ageAt = (at: Date, runAt: Date) => Math.max(0, (at.getTime() - runAt.getTime()) / 1000)

/**
 * The counts and the oldest runnable job. Finding that job sorts every runnable row (the runnable
 * index leads with the job type, then priority), so only `skiplock stats` asks for it, not each scrape.
 */
export const collect = (handledTypes: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const counts = yield* collectCounts(handledTypes)
    const oldest = yield* sql<{ jobId: string; jobType: string; organizationId: string; runAt: Date }>`
      SELECT id AS "jobId", job_type AS "jobType", organization_id AS "organizationId", run_at AS "runAt"
      FROM job_queue WHERE status = 'pending' AND run_at <= ${counts.at}
      ORDER BY run_at, created_at LIMIT 1`
    const first = oldest[0]
    return {
      ...counts,
      oldestRunnable: first === undefined ? null : { ...first, ageSeconds: ageAt(counts.at, first.runAt) }
    } satisfies QueueStats
  }).pipe(Effect.withSpan("QueueStats.collect"))
