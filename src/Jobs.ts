/**
 * Jobs by hand, from code: look at them, fail one that keeps failing, retry a
 * failed one, cancel a pending one. `skiplock jobs …` runs these; an admin
 * screen or a script can call them the same way. The state changes call the
 * SQL functions of migrations/core/0006_operator_functions.sql (one
 * transaction each, with its audit entry naming the actor); their refusals
 * come back as JobNotFound, InvalidJobState or JobRowLocked. Times come from
 * the Clock.
 */
import { SqlClient } from "@effect/sql"
import type { SqlError } from "@effect/sql/SqlError"
import { Clock, Effect } from "effect"
import { type AuditRecord } from "./Audit.js"
import * as Audit from "./Audit.js"
import { InvalidJobOptions, InvalidJobState, JobNotFound, JobRowLocked, UnknownJobType } from "./Errors.js"
import { setLocalLockTimeout } from "./internal/lockTimeout.js"
import { LOCK_NOT_AVAILABLE, sqlErrorCode } from "./internal/sqlErrorText.js"
import { isUuid, textProblem } from "./internal/validate.js"

export const JOB_STATUSES = ["pending", "processing", "completed", "failed"] as const
export type JobStatus = (typeof JOB_STATUSES)[number]

export interface JobRow {
  readonly id: string
  readonly organizationId: string
  readonly jobType: string
  readonly status: JobStatus
  readonly payload: unknown
  readonly priority: number
  readonly attempts: number
  readonly maxAttempts: number
  readonly runAt: Date
  readonly error: string | null
  readonly lockedBy: string | null
  readonly lockedAt: Date | null
  readonly leaseExpiresAt: Date | null
  readonly idempotencyKey: string | null
  readonly traceId: string
  readonly createdBy: string | null
  readonly createdAt: Date
  readonly updatedAt: Date
  readonly completedAt: Date | null
}

export interface JobRunRow {
  readonly jobId: string
  readonly idempotencyKey: string
  readonly idempotencyStatus: string
  readonly status: string
  readonly attempts: number
  readonly lastError: string | null
  readonly traceId: string
  readonly workerId: string | null
  readonly startedAt: Date | null
  readonly finishedAt: Date | null
  readonly createdAt: Date
  readonly updatedAt: Date
}

export interface JobDetails {
  readonly jobId: string
  /** Null once the job's row was pruned (finished longer ago than the retention); its run and trail stay. */
  readonly job: JobRow | null
  /** None until the job is first claimed. */
  readonly run: JobRunRow | null
  /** Oldest first. */
  readonly audit: ReadonlyArray<AuditRecord>
}

export interface ListFilter {
  readonly status?: JobStatus | undefined
  readonly jobType?: string | undefined
  readonly organizationId?: string | undefined
  /** At most this many, newest first: 1-1000 (default 20). */
  readonly limit?: number | undefined
}

/** Who changes a job by hand, and why: both go into its audit entry, which cannot be edited afterwards. */
export interface ByHand {
  /** A user's UUID, or a name such as `cli:alice` or `admin-ui`. */
  readonly actor: string
  readonly reason?: string | undefined
}

export interface StateChange {
  readonly id: string
  readonly status: JobStatus
  readonly previousStatus: JobStatus
}

const JOB_COLUMNS = (sql: SqlClient.SqlClient) => sql`
  id, organization_id AS "organizationId", job_type AS "jobType", status, payload, priority, attempts,
  max_attempts AS "maxAttempts", run_at AS "runAt", error, locked_by AS "lockedBy", locked_at AS "lockedAt",
  lease_expires_at AS "leaseExpiresAt", idempotency_key AS "idempotencyKey", trace_id AS "traceId",
  created_by AS "createdBy", created_at AS "createdAt", updated_at AS "updatedAt", completed_at AS "completedAt"`

const DEFAULT_LIST_LIMIT = 20
const MAX_LIST_LIMIT = 1000

const invalid = (reason: string) => new InvalidJobOptions({ reason })

/** Fails with UnknownJobType unless the type is registered in job_types. */
const requireJobType = (jobType: string) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const registered = (yield* sql<{ name: string }>`SELECT name FROM job_types ORDER BY name`).map((row) => row.name)
    if (!registered.includes(jobType)) return yield* new UnknownJobType({ jobType, registered })
  })

/** The newest jobs first, filtered. */
export const list = (filter: ListFilter = {}) =>
  Effect.gen(function* () {
    const limit = filter.limit ?? DEFAULT_LIST_LIMIT
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIST_LIMIT) {
      return yield* invalid(`limit must be a whole number from 1 to ${MAX_LIST_LIMIT}, got ${limit}`)
    }
    if (filter.status !== undefined && !JOB_STATUSES.includes(filter.status)) {
      return yield* invalid(`status must be one of ${JOB_STATUSES.join(", ")}, got "${filter.status}"`)
    }
    if (filter.organizationId !== undefined && !isUuid(filter.organizationId)) {
      return yield* invalid(`organizationId must be a UUID, got "${filter.organizationId}"`)
    }
    const sql = yield* SqlClient.SqlClient
    if (filter.jobType !== undefined) yield* requireJobType(filter.jobType)
    const conditions = [
      ...(filter.status === "processing"
        // Every processing job has a lease and no other has (0017): said this way, the listing reads
        // the lease index instead of the whole table.
        ? [sql`status = 'processing' AND lease_expires_at IS NOT NULL`]
        : filter.status !== undefined ? [sql`status = ${filter.status}`] : []),
      ...(filter.jobType !== undefined ? [sql`job_type = ${filter.jobType}`] : []),
      ...(filter.organizationId !== undefined ? [sql`organization_id = ${filter.organizationId}`] : [])
    ]
    return yield* sql<JobRow>`
      SELECT ${JOB_COLUMNS(sql)} FROM job_queue
      ${conditions.length > 0 ? sql`WHERE ${sql.and(conditions)}` : sql``}
      ORDER BY created_at DESC, id DESC LIMIT ${limit}`
  }).pipe(Effect.withSpan("Jobs.list"))

/** The job, its job_runs row and its audit trail. */
export const get = (jobId: string) =>
  Effect.gen(function* () {
    // No job has an id that is not a UUID (the column's type would refuse the comparison).
    if (!isUuid(jobId)) return yield* new JobNotFound({ jobId })
    const sql = yield* SqlClient.SqlClient
    const [job] = yield* sql<JobRow>`SELECT ${JOB_COLUMNS(sql)} FROM job_queue WHERE id = ${jobId}`
    const [run] = yield* sql<JobRunRow>`
      SELECT job_id AS "jobId", idempotency_key AS "idempotencyKey", idempotency_status AS "idempotencyStatus", status,
             attempts, last_error AS "lastError", trace_id AS "traceId", worker_id AS "workerId",
             started_at AS "startedAt", finished_at AS "finishedAt", created_at AS "createdAt", updated_at AS "updatedAt"
      FROM job_runs WHERE job_id = ${jobId}`
    const audit = yield* Effect.flatMap(Audit.make, (trail) => trail.trail(jobId))
    if (job === undefined && run === undefined && audit.length === 0) return yield* new JobNotFound({ jobId })
    return { jobId, job: job ?? null, run: run ?? null, audit } satisfies JobDetails
  }).pipe(Effect.withSpan("Jobs.get", { attributes: { jobId } }))

const ALLOWED = {
  fail: ["pending", "processing"],
  retry: ["failed"],
  cancel: ["pending"]
} as const

// A change by hand waits this long for a job's row that another session holds (an open psql
// transaction), then says so, instead of hanging without a word.
const ROW_LOCK_TIMEOUT_MS = 5_000

// The audit entry needs both (audit_logs refuses a blank actor or reason, 0027): said here, with the field's name.
// Text the database cannot store (a NUL pasted into an admin screen) is named here too, with its field.
const checkByHand = (byHand: ByHand, reasonRequired: boolean) => {
  if (typeof byHand.actor !== "string" || byHand.actor.trim() === "") return invalid("actor must not be blank: the audit entry names who did it")
  if (byHand.reason === undefined ? reasonRequired : typeof byHand.reason !== "string" || byHand.reason.trim() === "") {
    return invalid(`reason must not be ${reasonRequired ? "missing or " : ""}blank: it goes into the audit entry`)
  }
  const actorProblem = textProblem(byHand.actor)
  if (actorProblem !== undefined) return invalid(`actor ${actorProblem}`)
  const reasonProblem = byHand.reason === undefined ? undefined : textProblem(byHand.reason)
  if (reasonProblem !== undefined) return invalid(`reason ${reasonProblem}`)
  return undefined
}

// The SQL functions raise P0002 for an unknown id and 55000 for a job in the wrong state.
const stateChange = (
  operation: keyof typeof ALLOWED,
  jobId: string,
  byHand: ByHand,
  run: (sql: SqlClient.SqlClient, now: Date, actor: string, reason: string | null) => Effect.Effect<ReadonlyArray<StateChange>, SqlError>
): Effect.Effect<StateChange, InvalidJobOptions | JobNotFound | InvalidJobState | JobRowLocked | SqlError, SqlClient.SqlClient> =>
  Effect.gen(function* () {
    const refused = checkByHand(byHand, operation === "fail")
    if (refused !== undefined) return yield* refused
    if (!isUuid(jobId)) return yield* new JobNotFound({ jobId })
    const sql = yield* SqlClient.SqlClient
    const now = new Date(yield* Clock.currentTimeMillis)
    const change = run(sql, now, byHand.actor.trim(), byHand.reason?.trim() ?? null)
    const result = yield* Effect.either(sql.withTransaction(Effect.zipRight(setLocalLockTimeout(sql, ROW_LOCK_TIMEOUT_MS), change)))
    if (result._tag === "Right") return result.right[0]!
    const code = sqlErrorCode(result.left)
    if (code === "P0002") {
      // Its audit trail outlives a job pruned by retention: say why it is gone, rather than that it never was.
      const [trail] = yield* sql<{ found: number }>`SELECT 1 AS found FROM audit_logs WHERE job_id = ${jobId} LIMIT 1`
      return yield* new JobNotFound({ jobId, pruned: trail !== undefined })
    }
    if (code === LOCK_NOT_AVAILABLE) return yield* new JobRowLocked({ jobId, operation, waitedMillis: ROW_LOCK_TIMEOUT_MS })
    if (code === "55000") {
      const [row] = yield* sql<{ status: string; runCommitted: boolean; heldBy: string | null }>`
        SELECT q.status, coalesce(r.idempotency_status = 'completed', false) AS "runCommitted",
               job_handler_may_still_run(q.id, ${now}) AS "heldBy"
        FROM job_queue q LEFT JOIN job_runs r ON r.job_id = q.id WHERE q.id = ${jobId}`
      const status = row?.status ?? "gone"
      const because =
        // fail_job_manually and cancel_pending_job refuse a job whose transactional run committed (0020, 0030):
        // processing, it is completing; pending (released while its COMMIT was on its way), its next claim completes it.
        operation !== "retry" && row?.runCommitted === true && (ALLOWED[operation] as ReadonlyArray<string>).includes(status)
          ? `its handler's transaction has committed: ${status === "processing" ? "it completes shortly" : "it completes when a worker next claims it, without running again"}`
          // requeue_failed_job refuses a job failed by hand whose handler may still run (0022).
          : operation === "retry" && status === "failed" && row?.heldBy != null
          ? `its handler may still run on worker ${row.heldBy}, which stops it at its next heartbeat and reports it stopped at the one after: retry in about 20 seconds`
          : undefined
      return yield* new InvalidJobState({ jobId, status, operation, allowed: ALLOWED[operation], ...(because === undefined ? {} : { because }) })
    }
    return yield* result.left
  }).pipe(Effect.withSpan(`Jobs.${operation}`, { attributes: { jobId } }))

/** pending|processing -> failed, audit `job_failed_manually` with the reason (required). */
export const fail = (jobId: string, byHand: ByHand) =>
  stateChange("fail", jobId, byHand, (sql, now, actor, reason) =>
    sql<StateChange>`SELECT id, status, previous_status AS "previousStatus" FROM fail_job_manually(${jobId}, ${reason}, ${actor}, ${now})`)

/** failed -> pending with fresh attempts, audit `job_requeued`. */
export const retry = (jobId: string, byHand: ByHand) =>
  stateChange("retry", jobId, byHand, (sql, now, actor, reason) =>
    sql<StateChange>`SELECT id, status, previous_status AS "previousStatus" FROM requeue_failed_job(${jobId}, ${actor}, ${reason}, ${now})`)

/** pending -> failed (error "cancelled by …"), audit `job_cancelled`. */
export const cancel = (jobId: string, byHand: ByHand) =>
  stateChange("cancel", jobId, byHand, (sql, now, actor, reason) =>
    sql<StateChange>`SELECT id, status, previous_status AS "previousStatus" FROM cancel_pending_job(${jobId}, ${actor}, ${reason}, ${now})`)
