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
  })
})
