// A transactional handler's run commits with its SQL (commit_job_run, 0020); the job's row is
// completed afterwards. The functions that end a run against its worker's will respect a run that
// committed, and one that is being committed (they are serialized by the job_runs row lock).
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import pg from "pg"
import * as Jobs from "../../src/Jobs.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { auditEvents, ORG } from "../support/jobs.js"

const sqlError = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  effect.pipe(
    Effect.flip,
    Effect.map((error) => String((error as { cause?: { message?: string } }).cause?.message ?? error))
  )

describe("committed runs", () => {
  it.layer(TestDatabase.layer())((it) => {
    // A job claimed by worker "w" (attempt 1 of maxAttempts), its lease running for 30 seconds.
    const claimedJob = (maxAttempts = 3) =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        const [inserted] = yield* sql<{ id: string }>`
          INSERT INTO job_queue (organization_id, job_type, payload, status, max_attempts)
          VALUES (${ORG}, 'report_generation', '{}'::jsonb, 'pending', ${maxAttempts}) RETURNING id`
        const [claimed] = yield* sql<{ id: string; attempts: number }>`SELECT id, attempts FROM claim_next_job('w', ARRAY['report_generation'], 1)`
        expect(claimed).toEqual({ id: inserted!.id, attempts: 1 })
        return inserted!.id
      })
    const commit = (id: string, worker = "w", attempt = 1) =>
      Effect.flatMap(SqlClient.SqlClient, (sql) =>
        Effect.map(sql<{ ok: boolean }>`SELECT commit_job_run(${id}, ${worker}, ${attempt}) AS ok`, (rows) => rows[0]!.ok))
    const rescueLater = Effect.flatMap(SqlClient.SqlClient, (sql) =>
      sql<{ id: string; status: string }>`SELECT id, status FROM rescue_expired_jobs('rescuer', now() + interval '1 hour')`)
    const state = (id: string) =>
      Effect.flatMap(SqlClient.SqlClient, (sql) =>
        Effect.map(
          sql<{ status: string; runStatus: string; idempotency: string; error: string | null }>`
            SELECT q.status, r.status AS "runStatus", r.idempotency_status AS idempotency, q.error
            FROM job_queue q JOIN job_runs r ON r.job_id = q.id WHERE q.id = ${id}`,
          (rows) => rows[0]!
        ))

    it.effect("only the worker holding the attempt commits its run; the job stays processing, and a later claim skips it", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const id = yield* claimedJob()
        expect(yield* commit(id, "other-worker")).toBe(false)
        expect(yield* commit(id, "w", 2)).toBe(false)
        expect(yield* commit(id)).toBe(true)
        expect(yield* commit(id)).toBe(false) // once
        expect(yield* state(id)).toMatchObject({ status: "processing", runStatus: "running", idempotency: "completed" })
        // Back to pending by an operator's hand (as a rescue of a version before this one would): the next claim says so.
        yield* sql`UPDATE job_queue SET status = 'pending', locked_by = NULL, locked_at = NULL, lease_expires_at = NULL WHERE id = ${id}`
        const [again] = yield* sql<{ runIdempotencyStatus: string }>`
          SELECT run_idempotency_status AS "runIdempotencyStatus" FROM claim_next_job('w2', ARRAY['report_generation'], 1)`
        expect(again).toEqual({ runIdempotencyStatus: "completed" })
      }))

    it.effect("the rescuer completes a job whose run committed, also when its attempts are used up, and logs job_completed", () =>
      Effect.gen(function* () {
        for (const maxAttempts of [3, 1]) {
          const id = yield* claimedJob(maxAttempts)
          expect(yield* commit(id)).toBe(true)
          expect(yield* rescueLater).toEqual([{ id, status: "completed" }])
          expect(yield* state(id)).toEqual({ status: "completed", runStatus: "completed", idempotency: "completed", error: null })
          expect((yield* auditEvents(id)).slice().sort()).toEqual(["job_completed", "job_rescued", "job_started"])
        }
        // Without a committed run, as before: back to pending, or failed once the attempts are used up.
        const pending = yield* claimedJob(3)
        expect(yield* rescueLater).toEqual([{ id: pending, status: "pending" }])
        expect(yield* commit(pending)).toBe(false) // the run was rescued: the handler's transaction rolls back
        const failed = yield* claimedJob(1)
        expect(yield* rescueLater).toEqual([{ id: failed, status: "failed" }])
        expect(yield* state(failed)).toMatchObject({ status: "failed", runStatus: "failed", idempotency: "failed" })
        // Its last attempt ran out with its lease: a job_failed entry, as the runbook's operators look for (0021).
        expect(yield* auditEvents(failed)).toEqual(["job_started", "job_rescued", "job_failed"])
        const sql = yield* SqlClient.SqlClient
        const [entry] = yield* sql<{ details: unknown }>`SELECT details FROM audit_logs WHERE job_id = ${failed} AND event = 'job_failed'`
        expect(entry!.details).toEqual({
          jobType: "report_generation",
          attempt: 1,
          maxAttempts: 1,
          error: "lease expired: worker w stopped renewing it",
          retryable: true
        })
      }))

    it.effect("a failed attempt of a job whose run committed completes it, on the last attempt and before (0021)", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const failAttempt = (id: string, retryable: boolean) =>
          sql<{ status: string }>`SELECT status FROM fail_job_attempt(${id}, 'w', 1, 'HandlerTimeout: too slow', ${retryable})`
        for (const [maxAttempts, retryable] of [[1, true], [3, true], [3, false]] as const) {
          const id = yield* claimedJob(maxAttempts)
          expect(yield* commit(id)).toBe(true)
          expect(yield* failAttempt(id, retryable)).toEqual([{ status: "completed" }])
          expect(yield* state(id)).toEqual({ status: "completed", runStatus: "completed", idempotency: "completed", error: null })
          expect(yield* auditEvents(id)).toEqual(["job_started", "job_completed"])
        }
        // The run's record keeps no error from after its COMMIT (0035); a second attempt keeps its first's.
        const lastError = (id: string) => Effect.map(sql<{ lastError: string | null }>`SELECT last_error AS "lastError" FROM job_runs WHERE job_id = ${id}`, (rows) => rows[0]!.lastError)
        const committedFirst = yield* claimedJob(3)
        expect(yield* commit(committedFirst)).toBe(true)
        expect(yield* failAttempt(committedFirst, true)).toEqual([{ status: "completed" }])
        expect(yield* lastError(committedFirst)).toBeNull()
        const second = yield* claimedJob(3)
        yield* sql`SELECT fail_job_attempt(${second}, 'w', 1, 'ConnectionRefused: the bank said no', true)`
        expect(yield* sql`SELECT id FROM claim_next_job('w', ARRAY['report_generation'], 1, now() + interval '1 hour')`).toEqual([{ id: second }])
        expect(yield* commit(second, "w", 2)).toBe(true)
        expect(yield* sql`SELECT status FROM fail_job_attempt(${second}, 'w', 2, 'HandlerTimeout: too slow', true)`).toEqual([{ status: "completed" }])
        expect(yield* lastError(second)).toBe("ConnectionRefused: the bank said no")
        // Without a committed run, as before: a retry, or failed on the last attempt.
        const retried = yield* claimedJob(3)
        expect(yield* failAttempt(retried, true)).toEqual([{ status: "pending" }])
        expect(yield* lastError(retried)).toBe("HandlerTimeout: too slow")
        expect(yield* state(retried)).toMatchObject({ status: "pending", runStatus: "retry_scheduled", idempotency: "in_progress" })
        const failed = yield* claimedJob(1)
        expect(yield* failAttempt(failed, true)).toEqual([{ status: "failed" }])
        expect(yield* state(failed)).toMatchObject({ status: "failed", runStatus: "failed", idempotency: "failed" })
        expect(yield* auditEvents(failed)).toEqual(["job_started", "job_failed"])
      }))

    it.effect("a run being committed is skipped by the rescuer, which completes it once committed", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const id = yield* claimedJob()
        const handlerTx = new pg.Client({ connectionString: url })
        yield* Effect.acquireRelease(Effect.promise(() => handlerTx.connect()), () => Effect.promise(() => handlerTx.end()))
        yield* Effect.promise(() => handlerTx.query("BEGIN"))
        const { rows } = yield* Effect.promise(() => handlerTx.query("SELECT commit_job_run($1, 'w', 1) AS ok", [id]))
        expect(rows).toEqual([{ ok: true }])
        expect(yield* rescueLater).toEqual([]) // neither waits nor takes the job from the committing worker
        yield* Effect.promise(() => handlerTx.query("COMMIT"))
        expect(yield* rescueLater).toEqual([{ id, status: "completed" }])
      }).pipe(Effect.scoped))

    it.effect("an operator cannot fail a job whose run committed; one that failed it first makes the commit refuse", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const committed = yield* claimedJob()
        expect(yield* commit(committed)).toBe(true)
        const refused = yield* sqlError(sql`SELECT * FROM fail_job_manually(${committed}, 'stuck', 'cli:test')`)
        expect(refused).toBe(`cannot fail job ${committed} manually: its handler's transaction has committed`)
        expect(yield* state(committed)).toMatchObject({ status: "processing", idempotency: "completed" })
        // What `skiplock jobs fail` says.
        const viaCli = yield* Effect.flip(Jobs.fail(committed, { actor: "cli:test", reason: "stuck" }))
        expect(viaCli.message).toBe(`cannot fail job ${committed}: it is processing, but its handler's transaction has committed: it completes shortly`)
        // Cancelling it is refused for its state alone: a processing job is never cancelled.
        expect((yield* Effect.flip(Jobs.cancel(committed, { actor: "cli:test" }))).message).toBe(`cannot cancel job ${committed}: it is processing (allowed: pending)`)

        const running = yield* claimedJob()
        yield* sql`SELECT * FROM fail_job_manually(${running}, 'stuck', 'cli:test')`
        expect(yield* commit(running)).toBe(false)
        expect(yield* state(running)).toMatchObject({ status: "failed", runStatus: "failed", idempotency: "failed" })
      }))

    it.effect("a pending job whose run committed (released while its COMMIT was on its way) is not cancelled or failed by hand: its next claim completes it", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const id = yield* claimedJob()
        expect(yield* commit(id)).toBe(true)
        yield* sql`SELECT release_job(${id}, 'w', 1)`
        expect(yield* state(id)).toMatchObject({ status: "pending", idempotency: "completed" })
        expect(yield* sqlError(sql`SELECT * FROM cancel_pending_job(${id}, 'cli:test')`)).toBe(`cannot cancel job ${id}: its handler's transaction has committed`)
        expect(yield* sqlError(sql`SELECT * FROM fail_job_manually(${id}, 'stuck', 'cli:test')`)).toBe(`cannot fail job ${id} manually: its handler's transaction has committed`)
        const because = `it is pending, but its handler's transaction has committed: it completes when a worker next claims it, without running again`
        expect((yield* Effect.flip(Jobs.cancel(id, { actor: "cli:test" }))).message).toBe(`cannot cancel job ${id}: ${because}`)
        expect((yield* Effect.flip(Jobs.fail(id, { actor: "cli:test", reason: "stuck" }))).message).toBe(`cannot fail job ${id}: ${because}`)
        expect(yield* state(id)).toMatchObject({ status: "pending", idempotency: "completed" })
        expect(yield* auditEvents(id)).toEqual(["job_started", "job_released"])
      }))
  })
})
