// Jobs by hand from code (the public Jobs module, which `skiplock jobs …` also runs): each change is
// one transaction with its audit entry naming who and why; bad input is refused before anything is written.
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect, TestClock } from "effect"
import pg from "pg"
import { Jobs } from "../../src/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { auditEvents, jobRow, ORG } from "../support/jobs.js"

const OTHER_ORG = "9e1d2c3b-4a5f-4e6d-8c7b-6a5f4e3d2c1b"
const AT = new Date("2026-12-01T09:30:00.000Z")

const insertJob = (jobType: string, organizationId = ORG) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ id: string }>`INSERT INTO job_queue (organization_id, job_type, payload) VALUES (${organizationId}, ${jobType}, '{"batchId": "b-1"}') RETURNING id`
  ).pipe(Effect.map((rows) => rows[0]!.id))

const auditOf = (jobId: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ event: string; actor: string; reason: string | null; createdAt: Date }>`
      SELECT event, actor, details->>'reason' AS reason, created_at AS "createdAt" FROM audit_logs WHERE job_id = ${jobId} ORDER BY id`
  )

describe("Jobs", () => {
  it.layer(TestDatabase.layer())((it) => {
    it.effect("cancel, then retry: each writes its audit entry with the actor and reason, at the Clock's time", () =>
      Effect.gen(function* () {
        yield* TestClock.setTime(AT.getTime())
        const id = yield* insertJob("sepa_export")
        const cancelled = yield* Jobs.cancel(id, { actor: "admin-ui:alice", reason: "  wrong batch  " })
        expect(cancelled).toEqual({ id, status: "failed", previousStatus: "pending" })
        expect((yield* jobRow(id)).error).toBe("cancelled by admin-ui:alice: wrong batch")
        const retried = yield* Jobs.retry(id, { actor: "admin-ui:alice" })
        expect(retried).toEqual({ id, status: "pending", previousStatus: "failed" })
        expect(yield* auditOf(id)).toEqual([
          { event: "job_cancelled", actor: "admin-ui:alice", reason: "wrong batch", createdAt: AT },
          { event: "job_requeued", actor: "admin-ui:alice", reason: null, createdAt: AT }
        ])
        const details = yield* Jobs.get(id)
        expect(details.job?.status).toBe("pending")
        expect(details.run).toBeNull()
        expect(details.audit.map((entry) => entry.event)).toEqual(["job_cancelled", "job_requeued"])
      }))

    it.effect("fail needs a reason, and every change needs an actor: refused before anything is written", () =>
      Effect.gen(function* () {
        const id = yield* insertJob("report_generation")
        const refusal = (change: Effect.Effect<unknown, { readonly message: string; readonly _tag: string }, SqlClient.SqlClient>) =>
          Effect.map(Effect.flip(change), (error) => `${error._tag}: ${error.message}`)
        expect(yield* refusal(Jobs.fail(id, { actor: "ops" }))).toBe(
          "InvalidJobOptions: invalid job options: reason must not be missing or blank: it goes into the audit entry"
        )
        expect(yield* refusal(Jobs.fail(id, { actor: "ops", reason: " " }))).toBe(
          "InvalidJobOptions: invalid job options: reason must not be missing or blank: it goes into the audit entry"
        )
        expect(yield* refusal(Jobs.cancel(id, { actor: "ops", reason: "" }))).toBe(
          "InvalidJobOptions: invalid job options: reason must not be blank: it goes into the audit entry"
        )
        expect(yield* refusal(Jobs.cancel(id, { actor: "  " }))).toBe(
          "InvalidJobOptions: invalid job options: actor must not be blank: the audit entry names who did it"
        )
        // Text the database cannot store is named with its field (it came back as a bare SqlError).
        expect(yield* refusal(Jobs.fail(id, { actor: "ops", reason: "bank rejects\u0000 the file" }))).toBe(
          "InvalidJobOptions: invalid job options: reason contains a NUL character (\\u0000), which PostgreSQL cannot store"
        )
        expect(yield* refusal(Jobs.cancel(id, { actor: "admin\u0000ui" }))).toBe(
          "InvalidJobOptions: invalid job options: actor contains a NUL character (\\u0000), which PostgreSQL cannot store"
        )
        expect(yield* refusal(Jobs.cancel(id, { actor: "ops", reason: "half \ud800 a pair" }))).toBe(
          "InvalidJobOptions: invalid job options: reason contains an unpaired UTF-16 surrogate, which is not Unicode text"
        )
        expect((yield* jobRow(id)).status).toBe("pending")
        expect(yield* auditEvents(id)).toEqual([])
        yield* Jobs.fail(id, { actor: "ops", reason: "the bank rejected the file" })
        expect(yield* auditOf(id).pipe(Effect.map((rows) => rows.map(({ event, reason }) => ({ event, reason }))))).toEqual([
          { event: "job_failed_manually", reason: "the bank rejected the file" }
        ])
      }))

    it.effect("an id that is no job's, or not a UUID at all, is JobNotFound; a job in the wrong state is InvalidJobState", () =>
      Effect.gen(function* () {
        const tagOf = (effect: Effect.Effect<unknown, { readonly _tag: string }, SqlClient.SqlClient>) =>
          Effect.map(Effect.flip(effect), (error) => error._tag)
        expect(yield* tagOf(Jobs.get("not-a-uuid"))).toBe("JobNotFound")
        expect(yield* tagOf(Jobs.cancel("not-a-uuid", { actor: "ops" }))).toBe("JobNotFound")
        expect(yield* tagOf(Jobs.get("0190a0b0-0000-7000-8000-00000000dead"))).toBe("JobNotFound")
        expect(yield* tagOf(Jobs.retry("0190a0b0-0000-7000-8000-00000000dead", { actor: "ops" }))).toBe("JobNotFound")
        const id = yield* insertJob("dunning_run")
        const wrong = yield* Effect.flip(Jobs.retry(id, { actor: "ops" }))
        expect(wrong.message).toBe(`cannot retry job ${id}: it is pending (allowed: failed)`)
      }))

    it.effect("a change by hand to a job pruned by retention says it was deleted, not that it never was", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const id = yield* insertJob("report_generation")
        yield* Jobs.cancel(id, { actor: "ops" })
        yield* sql`DELETE FROM job_queue WHERE id = ${id}`
        const gone = yield* Effect.flip(Jobs.retry(id, { actor: "ops" }))
        expect(gone._tag).toBe("JobNotFound")
        expect(gone.message).toBe(
          `no job with id ${id} any more: its row was deleted (as retention deletes finished jobs, WORKER_JOB_RETENTION); ` +
            `its audit trail remains (skiplock jobs show ${id})`
        )
        expect((yield* Jobs.get(id)).audit.map((entry) => entry.event)).toEqual(["job_cancelled"])
        const never = "0190a0b0-0000-7000-8000-0000000000ff"
        expect((yield* Effect.flip(Jobs.retry(never, { actor: "ops" }))).message).toBe(`no job with id ${never}`)
      }))

    it.effect("list: newest first, filtered by status, type and organization; bad filters name the problem", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        const first = yield* insertJob("billing_run")
        const second = yield* insertJob("sepa_export", OTHER_ORG)
        const third = yield* insertJob("sepa_export")
        yield* sql`UPDATE job_queue SET created_at = created_at + (interval '1 second' * n)
                   FROM (VALUES (${first}::uuid, 1), (${second}::uuid, 2), (${third}::uuid, 3)) AS v(id, n) WHERE job_queue.id = v.id`
        yield* Jobs.cancel(first, { actor: "ops" })
        const ids = (rows: ReadonlyArray<{ readonly id: string }>) => rows.map((row) => row.id)
        expect(ids(yield* Jobs.list())).toEqual([third, second, first])
        expect(ids(yield* Jobs.list({ status: "pending" }))).toEqual([third, second])
        expect(ids(yield* Jobs.list({ jobType: "sepa_export", organizationId: ORG }))).toEqual([third])
        expect(ids(yield* Jobs.list({ limit: 1 }))).toEqual([third])
        // A batch shares its created_at: its jobs are listed newest (last enqueued, the larger time-ordered id) first too.
        const batch = ["01900000-0000-7000-8000-000000000001", "01900000-0000-7000-8000-000000000002", "01900000-0000-7000-8000-000000000003"]
        yield* sql`INSERT INTO job_queue (id, organization_id, job_type, payload, created_at)
                   SELECT id, ${ORG}, 'dunning_run', '{}', now() + interval '1 minute' FROM unnest(${batch}::uuid[]) AS id`
        expect(ids(yield* Jobs.list({ jobType: "dunning_run" }))).toEqual([...batch].reverse())
        const messageOf = (effect: Effect.Effect<unknown, { readonly message: string }, SqlClient.SqlClient>) =>
          Effect.map(Effect.flip(effect), (error) => error.message)
        expect(yield* messageOf(Jobs.list({ limit: 0 }))).toBe("invalid job options: limit must be a whole number from 1 to 1000, got 0")
        expect(yield* messageOf(Jobs.list({ organizationId: "acme" }))).toBe('invalid job options: organizationId must be a UUID, got "acme"')
        expect(yield* messageOf(Jobs.list({ status: "done" as never }))).toBe(
          'invalid job options: status must be one of pending, processing, completed, failed, got "done"'
        )
        expect(yield* messageOf(Jobs.list({ jobType: "sepa" }))).toMatch(/^unknown job type "sepa" \(registered: .*sepa_export/)
      }))

    it.effect("a change whose job row another session holds gives up after 5 s with JobRowLocked, and writes nothing", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const id = yield* insertJob("report_generation")
        const other = new pg.Client({ connectionString: url })
        yield* Effect.acquireRelease(Effect.promise(() => other.connect()), () => Effect.promise(() => other.end()))
        yield* Effect.promise(() => other.query("BEGIN"))
        yield* Effect.promise(() => other.query("SELECT 1 FROM job_queue WHERE id = $1 FOR UPDATE", [id]))
        const locked = yield* Effect.flip(Jobs.cancel(id, { actor: "ops", reason: "wrong batch" }))
        expect(locked).toMatchObject({ _tag: "JobRowLocked", jobId: id, operation: "cancel", waitedMillis: 5_000 })
        expect(locked.message).toContain(`cannot cancel job ${id}: another session's open transaction held its row for 5 s`)
        yield* Effect.promise(() => other.query("ROLLBACK"))
        expect((yield* jobRow(id)).status).toBe("pending")
        expect(yield* auditEvents(id)).toEqual([])
      }).pipe(Effect.scoped), 30_000)
  })
})
