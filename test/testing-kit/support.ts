// Job types and handlers shared by the kit's own tests.
import { SqlClient } from "@effect/sql"
import { Effect, Schema } from "effect"
import { Handler, JobDefinition } from "../../src/index.js"

export const ORG = "0b7c7f4e-3c1a-4d7e-9a53-5c2d7f1e8a01"
export const OTHER_ORG = "0b7c7f4e-3c1a-4d7e-9a53-5c2d7f1e8a02"

/** A report for one month; its handler enqueues the SEPA export that follows. */
export const Report = JobDefinition.make("report_generation", Schema.Struct({ month: Schema.String }))
export const SepaExport = JobDefinition.make("sepa_export", Schema.Struct({ month: Schema.String, batch: Schema.Int }))

export const auditEvents = (jobId: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => sql<{ event: string }>`SELECT event FROM audit_logs WHERE job_id = ${jobId} ORDER BY id`).pipe(
    Effect.map((rows) => rows.map((row) => row.event))
  )

export const jobRun = (jobId: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ status: string; attempts: number; lastError: string | null; workerId: string }>`
      SELECT status, attempts, last_error AS "lastError", worker_id AS "workerId" FROM job_runs WHERE job_id = ${jobId}`
  ).pipe(Effect.map((rows) => rows[0]))

/** A handler that does nothing and counts its runs. */
export const counting = <A>(definition: JobDefinition.JobDefinition<string, A, any>) => {
  const seen: Array<A> = []
  return { seen, handler: Handler.make(definition, { run: (payload: A) => Effect.sync(() => seen.push(payload)) }) }
}
