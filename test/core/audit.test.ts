// The audit trail of a job: entries come back in the order they were written.
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { Audit } from "../../src/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { ORG } from "../support/jobs.js"

describe("Audit.trail", () => {
  it.layer(TestDatabase.layer())((it) => {
    it.effect("lists a job's entries oldest first, also across ids of different lengths (9 before 10)", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        // Start the identity just below a power of ten, so the ids cross from n digits to n + 1.
        const [{ top }] = yield* sql<{ top: string }>`SELECT coalesce(max(id), 0)::text AS top FROM audit_logs`
        const boundary = 10 ** (top.length + 1)
        yield* sql`SELECT setval(pg_get_serial_sequence('audit_logs', 'id'), ${boundary - 6}, false)`
        const jobId = "0190a0b0-0000-7000-8000-000000000001"
        const events = Array.from({ length: 12 }, (_, index) => `step_${index + 1}`)
        const audit = yield* Audit.Audit
        for (const event of events) yield* audit.record({ organizationId: ORG, actor: "test", event, jobId })
        const trail = yield* audit.trail(jobId)
        expect(trail.map((entry) => entry.event)).toEqual(events)
      }).pipe(Effect.provide(Audit.layer)))

    it.effect("an entry must name who acted, and a reason given must say something: the operator functions called from psql change nothing otherwise", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const [job] = yield* sql<{ id: string }>`INSERT INTO job_queue (organization_id, job_type, payload) VALUES (${ORG}, 'report_generation', '{}') RETURNING id`
        const id = job!.id
        const refusal = (statement: Effect.Effect<unknown, unknown>) =>
          Effect.map(Effect.flip(statement), (error) => String((error as { cause?: { message?: string } }).cause?.message))
        expect(yield* refusal(sql`SELECT * FROM cancel_pending_job(p_job_id => ${id}, p_actor => '  ')`)).toBe(
          `new row for relation "audit_logs" violates check constraint "audit_logs_actor_not_blank"`
        )
        expect(yield* refusal(sql`SELECT * FROM cancel_pending_job(p_job_id => ${id}, p_actor => 'ops', p_reason => '')`)).toBe(
          `new row for relation "audit_logs" violates check constraint "audit_logs_reason_not_blank"`
        )
        expect(yield* refusal(sql`SELECT * FROM fail_job_manually(p_job_id => ${id}, p_reason => 'stuck', p_actor => '')`)).toBe(
          `new row for relation "audit_logs" violates check constraint "audit_logs_actor_not_blank"`
        )
        // Tabs and line breaks are blank too (0033), as the CLI's trim counts them.
        expect(yield* refusal(sql`SELECT * FROM cancel_pending_job(p_job_id => ${id}, p_actor => ${"\t\n"})`)).toBe(
          `new row for relation "audit_logs" violates check constraint "audit_logs_actor_not_blank"`
        )
        expect(yield* refusal(sql`SELECT * FROM fail_job_manually(p_job_id => ${id}, p_reason => ${" \r\n\t\f\v"}, p_actor => 'ops')`)).toBe(
          `new row for relation "audit_logs" violates check constraint "audit_logs_reason_not_blank"`
        )
        const [row] = yield* sql<{ status: string }>`SELECT status FROM job_queue WHERE id = ${id}`
        expect(row!.status).toBe("pending")
        expect(yield* sql`SELECT 1 FROM audit_logs WHERE job_id = ${id}`).toEqual([])
        // Without a reason, or with one, it goes through (letters are no whitespace, v included).
        yield* sql`SELECT * FROM cancel_pending_job(p_job_id => ${id}, p_actor => 'v')`
        yield* sql`SELECT * FROM requeue_failed_job(p_job_id => ${id}, p_actor => 'ops', p_reason => 'vv')`
        const entries = yield* sql<{ event: string }>`SELECT event FROM audit_logs WHERE job_id = ${id} ORDER BY id`
        expect(entries.map((entry) => entry.event)).toEqual(["job_cancelled", "job_requeued"])
      }))
  })
})
