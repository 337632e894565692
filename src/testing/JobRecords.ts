/**
 * The testing kit's reads of `job_queue`: whole rows, as a test wants to see
 * them. The kit changes jobs only through the runtime's own functions.
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

export type JobStatus = "pending" | "processing" | "completed" | "failed"

/** One row of `job_queue`. The payload is as stored (the Schema's encoded form). */
export interface JobRecord {
  readonly id: string
  readonly jobType: string
  readonly organizationId: string
  readonly payload: unknown
  readonly status: JobStatus
  readonly priority: number
  readonly attempts: number
  readonly maxAttempts: number
  readonly runAt: Date
  readonly error: string | null
  readonly idempotencyKey: string | null
  readonly createdBy: string | null
  readonly lockedBy: string | null
  readonly createdAt: Date
}

const columns = (sql: SqlClient.SqlClient) =>
  sql`id, job_type AS "jobType", organization_id AS "organizationId", payload, status, priority, attempts,
      max_attempts AS "maxAttempts", run_at AS "runAt", error, idempotency_key AS "idempotencyKey",
      created_by AS "createdBy", locked_by AS "lockedBy", created_at AS "createdAt"`

export const make = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  return {
    /** Every job, oldest first. */
    all: sql<JobRecord>`SELECT ${columns(sql)} FROM job_queue ORDER BY created_at, id`,

    /** The given jobs plus every job not finished yet. */
    ranOrUnfinished: (ids: ReadonlyArray<string>) =>
      sql<JobRecord>`
        SELECT ${columns(sql)} FROM job_queue
        WHERE id = ANY (${ids}::uuid[]) OR status IN ('pending', 'processing')
        ORDER BY run_at, created_at, id`,

    /** The earliest run_at after `now` of a pending job of these types: where the clock must go next. */
    nextRunAt: (jobTypes: ReadonlyArray<string>, now: Date) =>
      // Rounded up to the millisecond (a Date has no microseconds, a run_at from the database's now() has):
      // moved to the time cut short, the clock would stay short of the job, and the drain never end.
      sql<{ next: Date | null }>`
        SELECT next + ((1000 - extract(microseconds FROM next)::bigint % 1000) % 1000) * interval '1 microsecond' AS next
        FROM (SELECT min(run_at) AS next FROM job_queue
              WHERE status = 'pending' AND job_type = ANY (${jobTypes}::text[]) AND run_at > ${now}) AS earliest`.pipe(
        Effect.map((rows) => rows[0]?.next ?? undefined)
      ),

    /** Whether a pending job of these types is due by `at`. */
    anyDueBy: (jobTypes: ReadonlyArray<string>, at: Date) =>
      sql<{ due: boolean }>`
        SELECT EXISTS (SELECT 1 FROM job_queue
                       WHERE status = 'pending' AND job_type = ANY (${jobTypes}::text[]) AND run_at <= ${at}) AS due`.pipe(
        Effect.map((rows) => rows[0]?.due === true)
      ),

    /** Whether another pending job of this type is due: claiming one job then needs the others held. */
    othersDue: (jobId: string, jobType: string, now: Date) =>
      sql<{ due: boolean }>`
        SELECT EXISTS (SELECT 1 FROM job_queue
                       WHERE status = 'pending' AND job_type = ${jobType} AND run_at <= ${now} AND id <> ${jobId}) AS due`.pipe(
        Effect.map((rows) => rows[0]?.due === true)
      ),

    /** Job types without a row in `job_types`. */
    unregisteredTypes: (jobTypes: ReadonlyArray<string>) =>
      sql<{ name: string }>`
        SELECT t.name FROM unnest(${jobTypes}::text[]) AS t(name)
        WHERE NOT EXISTS (SELECT 1 FROM job_types jt WHERE jt.name = t.name) ORDER BY t.name`.pipe(
        Effect.map((rows) => rows.map((row) => row.name))
      ),

    /** Empties the queue and its runs (audit_logs is append-only and keeps its rows). */
    clear: Effect.zipRight(sql`DELETE FROM job_queue`, sql`DELETE FROM job_runs`).pipe(Effect.asVoid),

    registerTypes: (jobTypes: ReadonlyArray<string>) =>
      sql`INSERT INTO job_types (name, description)
          SELECT name, 'registered by the testing kit' FROM unnest(${jobTypes}::text[]) AS t(name)
          ON CONFLICT (name) DO NOTHING`.pipe(Effect.asVoid)
  }
})

export type JobRecords = Effect.Effect.Success<typeof make>
