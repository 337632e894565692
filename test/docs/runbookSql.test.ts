// The SQL the runbooks give operators for psql runs as written: the operator functions with named
// arguments (their positional orders differ), and the query that finds a session holding a row lock.
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { readFileSync } from "node:fs"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { auditEvents, jobStatus, ORG } from "../support/jobs.js"

const RUNBOOKS = ["docs/RUNBOOK.md", "docs/RUNBOOK.de.md"].map((path) => ({ path, text: readFileSync(path, "utf8") }))

/** The first line of `text` holding `marker`, from `SELECT` to the semicolon. */
const statementWith = (text: string, marker: string): string => {
  const line = text.split("\n").find((candidate) => candidate.includes(marker))
  const statement = line?.match(/SELECT .*?;/)?.[0]
  if (statement === undefined) throw new Error(`no statement with ${marker}`)
  return statement
}

/** The ```sql block that holds `marker`, its statements split at the semicolons. */
const sqlBlockWith = (text: string, marker: string): ReadonlyArray<string> => {
  const block = [...text.matchAll(/```sql\n([\s\S]*?)```/g)].map((match) => match[1]!).find((body) => body.includes(marker))
  if (block === undefined) throw new Error(`no sql block with ${marker}`)
  return block.split(";").map((statement) => statement.trim()).filter((statement) => statement.length > 0)
}

describe("the runbooks' SQL", () => {
  it.layer(TestDatabase.layer())((it) => {
    const pendingJob = Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const [row] = yield* sql<{ id: string }>`
        INSERT INTO job_queue (organization_id, job_type, payload) VALUES (${ORG}, 'report_generation', '{}'::jsonb) RETURNING id`
      return row!.id
    })

    for (const { path, text } of RUNBOOKS) {
      it.effect(`${path}: fail_job_manually as written, then the other two with the same named arguments`, () =>
        Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const failed = yield* pendingJob
          const fail = statementWith(text, "fail_job_manually(p_job_id")
            .replace("<job-id>", failed)
            .replace(/'<[^>]+>'/g, "'runbook test'")
          yield* sql.unsafe(fail)
          expect(yield* jobStatus(failed)).toBe("failed")
          expect(text).toContain("requeue_failed_job(p_job_id => …, p_actor => …, p_reason => …)")
          yield* sql.unsafe(`SELECT * FROM requeue_failed_job(p_job_id => '${failed}', p_actor => 'cli:test', p_reason => 'fixed')`)
          expect(yield* jobStatus(failed)).toBe("pending")
          expect(text).toContain("cancel_pending_job(p_job_id => …, p_actor => …, p_reason => …)")
          yield* sql.unsafe(`SELECT * FROM cancel_pending_job(p_job_id => '${failed}', p_actor => 'cli:test', p_reason => 'not needed')`)
          expect(yield* jobStatus(failed)).toBe("failed")
          expect(yield* auditEvents(failed)).toEqual(["job_failed_manually", "job_requeued", "job_cancelled"])
        }))

      it.effect(`${path}: the verification queries run and show a job's status, idempotency status and audit trail`, () =>
        Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          yield* sql`DELETE FROM job_queue`
          const id = yield* pendingJob
          yield* sql`SELECT id FROM claim_next_job('w', ARRAY['report_generation'], 1)`
          yield* sql`SELECT * FROM fail_job_manually(${id}, 'verification', 'cli:test')`
          const [queue, runs, audit] = yield* Effect.forEach(sqlBlockWith(text, "FROM job_runs"), (statement) =>
            sql.unsafe<Record<string, unknown>>(statement.replace("<job-id>", id)))
          expect(queue!.find((row) => row.id === id)).toMatchObject({ status: "failed" })
          expect(runs!.find((row) => row.job_id === id)).toMatchObject({ status: "failed", idempotency_status: "failed" })
          expect(audit!.map((row) => row.event)).toEqual(["job_started", "job_failed_manually"])
        }))

      it.effect(`${path}: the query for a session holding rows locked finds one idle in a transaction in this database`, () =>
        Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const [find] = sqlBlockWith(text, "idle in transaction")
          // A transaction of our own, left open on a connection held for it.
          const open = yield* sql.reserve
          const [holder] = (yield* open.execute("SELECT pg_backend_pid() AS pid", [], undefined)) as ReadonlyArray<{ pid: number }>
          yield* open.executeRaw("BEGIN", [])
          yield* open.executeRaw("SELECT 1", [])
          const rows = yield* sql.unsafe<{ pid: number; xact_start: Date }>(find!)
          expect(rows.map((row) => row.pid)).toContain(holder!.pid)
          yield* open.executeRaw("ROLLBACK", [])
        }).pipe(Effect.scoped))
    }
  })
})
