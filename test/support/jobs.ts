// Small helpers for reading the queue's tables in tests.
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

export const ORG = "0b7c7f4e-3c1a-4d7e-9a53-5c2d7f1e8a01"
export const USER = "5f0a3b2c-8d4e-4f6a-9b1c-2d3e4f5a6b7c"

export interface JobRow {
  readonly id: string
  readonly status: string
  readonly attempts: number
  readonly error: string | null
  readonly runAt: Date
  readonly lockedBy: string | null
}

export const jobRow = (id: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<JobRow>`SELECT id, status, attempts, error, run_at AS "runAt", locked_by AS "lockedBy" FROM job_queue WHERE id = ${id}`
  ).pipe(Effect.map((rows) => rows[0]!))

export const jobStatus = (id: string) => Effect.map(jobRow(id), (row) => row.status)

export const auditEvents = (jobId: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ event: string }>`SELECT event FROM audit_logs WHERE job_id = ${jobId} ORDER BY id`
  ).pipe(Effect.map((rows) => rows.map((row) => row.event)))

export const statusCounts = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  sql<{ status: string; n: number }>`SELECT status, count(*)::int AS n FROM job_queue GROUP BY status`
).pipe(Effect.map((rows) => Object.fromEntries(rows.map((row) => [row.status, row.n])) as Record<string, number>))
