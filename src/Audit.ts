/**
 * The audit trail: append-only entries in `audit_logs`. `record` joins the
 * caller's transaction, so an entry commits together with the change it
 * describes. The job state functions in SQL write their own entries.
 */
import { SqlClient } from "@effect/sql"
import type { SqlError } from "@effect/sql/SqlError"
import { Clock, Context, Effect, Layer } from "effect"

export interface AuditEntry {
  readonly event: string
  /** Who did it: a user's UUID, a worker id, or a name such as `cli`. */
  readonly actor: string
  readonly organizationId?: string | null
  readonly jobId?: string | null
  readonly traceId?: string | null
  readonly details?: Record<string, unknown>
}

export interface AuditRecord {
  readonly id: string
  readonly organizationId: string | null
  readonly actor: string
  readonly event: string
  readonly jobId: string | null
  readonly traceId: string | null
  readonly details: Record<string, unknown>
  readonly createdAt: Date
}

export class Audit extends Context.Tag("skiplock/Audit")<Audit, {
  /** Appends one entry, inside the caller's transaction if there is one. */
  readonly record: (entry: AuditEntry) => Effect.Effect<void, SqlError>
  /** Every entry about one job, oldest first. */
  readonly trail: (jobId: string) => Effect.Effect<ReadonlyArray<AuditRecord>, SqlError>
}>() {}

export const make = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  return Audit.of({
    record: (entry) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        sql`INSERT INTO audit_logs (organization_id, actor, event, job_id, trace_id, details, created_at)
            VALUES (${entry.organizationId ?? null}, ${entry.actor}, ${entry.event}, ${entry.jobId ?? null},
                    ${entry.traceId ?? null}, ${JSON.stringify(entry.details ?? {})}::jsonb, ${new Date(now)})`
      ).pipe(Effect.asVoid, Effect.withSpan("Audit.record", { attributes: { event: entry.event } })),
    // Ordered by the column: the output alias "id" is text, and "10" sorts before "9".
    trail: (jobId) =>
      sql<AuditRecord>`
        SELECT id::text AS id, organization_id AS "organizationId", actor, event, job_id AS "jobId",
               trace_id AS "traceId", details, created_at AS "createdAt"
        FROM audit_logs WHERE job_id = ${jobId}
        ORDER BY audit_logs.id`.pipe(Effect.withSpan("Audit.trail"))
  })
})

export const layer = Layer.effect(Audit, make)
