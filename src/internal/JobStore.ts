/**
 * The named queries of a job's life cycle. Each calls one SQL function from
 * migrations/core (0005_job_transitions.sql, replaced in part by later
 * migrations), which changes job_queue, job_runs and audit_logs in one
 * statement. Times come from the caller's Clock.
 */
import { SqlClient } from "@effect/sql"
import { Duration, Effect } from "effect"
import * as DirectStatements from "./directStatements.js"
import { PREPARED, WATCHED } from "./preparedStatements.js"

/** The reason of a release after a lost database connection, in its audit entry (job_released). */
export const LOST_CONNECTION_REASON = "database connection lost"

export interface ClaimedJob {
  readonly id: string
  readonly organizationId: string
  readonly jobType: string
  readonly payload: unknown
  readonly priority: number
  readonly attempts: number
  readonly maxAttempts: number
  readonly runAt: Date
  readonly idempotencyKey: string | null
  readonly traceId: string
  readonly parentSpanId: string | null
  readonly createdBy: string | null
  readonly createdAt: Date
  /** `completed` when an earlier attempt already committed: the job must not run again. */
  readonly runIdempotencyStatus: string
}

const interval = (duration: Duration.Duration) => `${Duration.toMillis(duration)} milliseconds`

// How long a hand-off's insert may wait for a lock: its claim's leases count from before the wait.
const HAND_OFF_LOCK_TIMEOUT = Duration.seconds(1)

/** A claim made for a worker by someone else's statement (enqueue_and_claim). */
export interface ClaimFor {
  readonly workerId: string
  readonly jobTypes: ReadonlyArray<string>
  readonly limit: number
  readonly lease: Duration.Duration
}

/** What an insert returns of a new job. */
export interface InsertedJob {
  readonly id: string
  readonly status: string
  readonly traceId: string
}

export const make = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  // Outside a transaction, straight to a connection of the pool (directStatements.ts).
  const run = yield* DirectStatements.make
  // Every statement here is sent as a named prepared statement (preparedStatements.ts). The worker's own
  // bookkeeping is also watched: answered within the pool's answer timeout, or given up (answerWatch.ts).
  // Not the ones that run in a handler's or an enqueuer's transaction, nor the prune (a large delete may take long).
  const preparedMark = sql.literal(PREPARED)
  const watchedMark = sql.literal(WATCHED)
  // The columns of claim_next_job's rows, named as ClaimedJob's fields.
  const claimedColumns = sql.literal(`id, organization_id AS "organizationId", job_type AS "jobType", payload, priority, attempts,
    max_attempts AS "maxAttempts", run_at AS "runAt", idempotency_key AS "idempotencyKey",
    trace_id AS "traceId", parent_span_id AS "parentSpanId", created_by AS "createdBy",
    created_at AS "createdAt", run_idempotency_status AS "runIdempotencyStatus"`)
  return {
    claim: (workerId: string, jobTypes: ReadonlyArray<string>, limit: number, now: Date, lease: Duration.Duration) =>
      run(sql<ClaimedJob>`${watchedMark}
        SELECT ${claimedColumns}
        FROM claim_next_job(${workerId}, ${jobTypes}::text[], ${limit}, ${now}, ${interval(lease)}::interval)`),

    complete: (jobId: string, workerId: string, attempt: number, now: Date, details: Record<string, unknown> = {}) =>
      run(sql<{ ok: boolean }>`${watchedMark} SELECT complete_job(${jobId}, ${workerId}, ${attempt}, ${now}, ${JSON.stringify(details)}::jsonb) AS ok`).pipe(
        Effect.map((rows) => rows[0]?.ok === true)
      ),

    /**
     * Records, inside a transactional handler's transaction, that its run committed (commit_job_run,
     * 0020): the job is never run again, and its row is completed afterwards like any other job's.
     * False when the worker no longer holds the job (the transaction must roll back).
     */
    commitRun: (jobId: string, workerId: string, attempt: number, now: Date) =>
      run(sql<{ ok: boolean }>`${preparedMark} SELECT commit_job_run(${jobId}, ${workerId}, ${attempt}, ${now}) AS ok`).pipe(
        Effect.map((rows) => rows[0]?.ok === true)
      ),

    /**
     * Completes jobs held by one worker and claims up to `limit` more, in one transaction
     * (complete_and_claim). Returns the ids it completed, the ids it could not complete yet
     * because another transaction holds their rows (busy: still the worker's, try again),
     * and the jobs it claimed. A job in neither set was no longer held by this worker.
     * (Every row repeats the two id arrays; only the first row's are sent, to be parsed once.)
     */
    completeAndClaim: (
      workerId: string,
      jobs: ReadonlyArray<{ readonly id: string; readonly attempt: number }>,
      jobTypes: ReadonlyArray<string>,
      limit: number,
      now: Date,
      lease: Duration.Duration
    ) =>
      run(sql<ClaimedJob & { completedIds: ReadonlyArray<string> | null; busyIds: ReadonlyArray<string> | null }>`${watchedMark}
        SELECT CASE WHEN ordinality = 1 THEN completed_ids END AS "completedIds", CASE WHEN ordinality = 1 THEN busy_ids END AS "busyIds",
               ${claimedColumns}
        FROM complete_and_claim(${workerId}, ${jobs.map((job) => job.id)}::uuid[], ${jobs.map((job) => job.attempt)}::int[],
                                ${jobTypes}::text[], ${limit}, ${now}, ${interval(lease)}::interval, true) WITH ORDINALITY`).pipe(
        Effect.map((rows) => {
          const first = rows.find((row) => row.completedIds !== null)
          return {
            completed: new Set(first?.completedIds ?? []),
            busy: new Set(first?.busyIds ?? []),
            claimed: rows.flatMap(({ completedIds: _, busyIds: __, ...job }) => (job.id === null ? [] : [job as ClaimedJob]))
          }
        })
      ),

    /**
     * Inserts jobs (a JSON array of job_queue rows) and claims for a worker in the same transaction
     * (enqueue_and_claim). Returns the jobs inserted (a job whose idempotency key was taken is not)
     * and the jobs claimed, which the worker must start. Fails with lock_not_available (55P03) when
     * the insert waited longer than HAND_OFF_LOCK_TIMEOUT for a lock (0023).
     */
    enqueueAndClaim: (jobs: string, trace: { readonly traceId: string | null; readonly spanId: string | null }, now: Date, claim: ClaimFor) =>
      run(sql<ClaimedJob & { enqueued: ReadonlyArray<InsertedJob> }>`${preparedMark}
        SELECT enqueued, ${claimedColumns}
        FROM enqueue_and_claim(${jobs}::jsonb, ${trace.traceId}::text, ${trace.spanId}::text, ${now},
                               ${claim.workerId}, ${claim.jobTypes}::text[], ${claim.limit}, ${interval(claim.lease)}::interval,
                               ${interval(HAND_OFF_LOCK_TIMEOUT)}::interval)`).pipe(
        Effect.map((rows) => ({
          inserted: rows[0]?.enqueued ?? [],
          claimed: rows.flatMap(({ enqueued: _, ...job }) => (job.id === null ? [] : [job as ClaimedJob]))
        }))
      ),

    /**
     * Records a failed attempt: back to pending after the backoff, or failed. A job whose run had
     * committed (the failure came after the handler's transaction did) is completed instead (0021).
     */
    failAttempt: (jobId: string, workerId: string, attempt: number, error: string, retryable: boolean, now: Date, backoff: Duration.Duration) =>
      run(sql<{ status: "pending" | "failed" | "completed"; runAt: Date }>`${watchedMark}
        SELECT status, run_at AS "runAt"
        FROM fail_job_attempt(${jobId}, ${workerId}, ${attempt}, ${error}, ${retryable}, ${now}, ${interval(backoff)}::interval)`).pipe(
        Effect.map((rows) => rows[0])
      ),

    /** Back to pending without counting the attempt; with `retry`, not before its time and with its error recorded. */
    release: (jobId: string, workerId: string, attempt: number, now: Date, reason: string, retry?: { readonly runAt: Date; readonly error: string }) =>
      run(sql<{ ok: boolean }>`${watchedMark} SELECT release_job(${jobId}, ${workerId}, ${attempt}, ${now}, ${reason}, ${retry?.runAt ?? null}::timestamptz, ${retry?.error ?? null}::text) AS ok`).pipe(
        Effect.map((rows) => rows[0]?.ok === true)
      ),

    /**
     * How often the job was released for a lost database connection since it was last requeued by
     * hand, and when the first of those releases was (its audit trail; read only after such a loss,
     * so no column is kept for it).
     */
    releasesForLostConnection: (jobId: string) =>
      run(sql<{ n: number; first_at: Date | null }>`SELECT count(*)::int AS n, min(created_at) AS first_at FROM audit_logs
        WHERE job_id = ${jobId} AND event = 'job_released' AND details->>'reason' = ${LOST_CONNECTION_REASON}
          AND id > coalesce((SELECT max(id) FROM audit_logs WHERE job_id = ${jobId} AND event = 'job_requeued'), 0)`).pipe(
        Effect.map((rows) => ({ count: rows[0]?.n ?? 0, firstAt: rows[0]?.first_at ?? undefined }))
      ),

    register: (worker: { workerId: string; host: string; pid: number; jobTypes: ReadonlyArray<string>; concurrency: number }, now: Date) =>
      run(sql`${watchedMark} SELECT register_worker(${worker.workerId}, ${worker.host}, ${worker.pid}, ${worker.jobTypes}::text[], ${worker.concurrency}, ${now})`).pipe(
        Effect.asVoid
      ),

    /**
     * Renews the worker's registration and the leases of its jobs; returns the jobs it still holds, and
     * whether the worker's row is there to renew (forget_dead_workers deletes it after a long outage).
     */
    heartbeat: (workerId: string, jobIds: ReadonlyArray<string>, now: Date, lease: Duration.Duration) =>
      run(sql<{ held: ReadonlyArray<string>; registered: boolean }>`${watchedMark}
        SELECT ARRAY(SELECT worker_heartbeat FROM worker_heartbeat(${workerId}, ${jobIds}::uuid[], ${now}, ${interval(lease)}::interval)) AS held,
               EXISTS (SELECT 1 FROM job_workers WHERE worker_id = ${workerId}) AS registered`).pipe(
        Effect.map(([row]) => ({ held: new Set(row?.held ?? []), registered: row?.registered === true }))
      ),

    unregister: (workerId: string) => run(sql`${watchedMark} SELECT unregister_worker(${workerId})`).pipe(Effect.asVoid),

    forgetDeadWorkers: (olderThan: Date) =>
      run(sql<{ n: number }>`${watchedMark} SELECT forget_dead_workers(${olderThan}) AS n`).pipe(Effect.map((rows) => rows[0]?.n ?? 0)),

    pruneFinished: (olderThan: Date, limit: number) =>
      run(sql<{ n: number }>`${preparedMark} SELECT prune_finished_jobs(${olderThan}, ${limit}) AS n`).pipe(Effect.map((rows) => rows[0]?.n ?? 0)),

    rescueExpired: (workerId: string, now: Date, limit: number) =>
      run(sql<{ id: string; status: string; deadWorker: string }>`${watchedMark}
        SELECT id, status, dead_worker AS "deadWorker" FROM rescue_expired_jobs(${workerId}, ${now}, ${limit})`),

    /** The job types of the given jobs, for the metrics of the ones a rescue ended (rare). */
    jobTypesOf: (ids: ReadonlyArray<string>) =>
      Effect.map(
        run(sql<{ id: string; jobType: string }>`SELECT id, job_type AS "jobType" FROM job_queue WHERE id = ANY (${ids}::uuid[])`),
        (rows) => new Map(rows.map((row) => [row.id, row.jobType]))
      )
  }
})

export type JobStore = Effect.Effect.Success<typeof make>
