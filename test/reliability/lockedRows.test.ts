// A job row locked by another transaction (an operator's UPDATE left open) holds up only that job's
// completion (0018): the worker's statements skip it, and its other slots go on. Real clock.
import { SqlClient } from "@effect/sql"
import { describe, expect, layer } from "@effect/vitest"
import { Deferred, Effect, Schema } from "effect"
import pg from "pg"
import { Handler, JobDefinition, JobQueue, Worker } from "../../src/index.js"
import { sqlErrorText } from "../../src/internal/sqlErrorText.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { auditEvents, jobRow, ORG } from "../support/jobs.js"
import { eventually, pauseLive } from "../support/live.js"

const Report = JobDefinition.make("report_generation", Schema.Struct({ n: Schema.Number }))

describe("job rows locked by another transaction", () => {
  layer(TestDatabase.layer(), { excludeTestServices: true })((it) => {
    it.effect("two running jobs whose rows are locked: their completions wait, the third slot goes on; they complete once the lock ends", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const gates = [yield* Deferred.make<void>(), yield* Deferred.make<void>()]
        const done = new Set<number>()
        const handler = Handler.make(Report, {
          run: (payload) =>
            Effect.zipRight(
              payload.n < 2 ? Deferred.await(gates[payload.n]!) : Effect.void,
              Effect.sync(() => done.add(payload.n))
            )
        })
        // The two gated jobs go first (priority), so that the first claim holds both.
        const gated = yield* JobQueue.enqueueMany([0, 1].map((n) => ({ organizationId: ORG, jobType: "report_generation", payload: { n }, priority: -1 })))
        yield* Worker.make({ handlers: [handler], concurrency: 3, pollInterval: "200 millis" })
        yield* eventually(
          Effect.map(Effect.forEach(gated, (job) => jobRow(job.id)), (rows) => rows.every((row) => row.status === "processing")),
          "both gated jobs run"
        )

        const operator = new pg.Client({ connectionString: url })
        yield* Effect.acquireRelease(Effect.promise(() => operator.connect()), () => Effect.promise(() => operator.end()))
        yield* Effect.promise(() => operator.query("BEGIN"))
        yield* Effect.promise(() => operator.query("UPDATE job_queue SET priority = priority WHERE id = ANY ($1::uuid[])", [gated.map((job) => job.id)]))

        // Each gated job finishes on its own, so that their completions travel in separate statements:
        // had each statement waited for the lock, both statements the worker may have in flight would wait.
        yield* Deferred.succeed(gates[0]!, undefined)
        yield* pauseLive("100 millis")
        yield* Deferred.succeed(gates[1]!, undefined)
        yield* pauseLive("100 millis")

        const more = yield* JobQueue.enqueueMany(Array.from({ length: 20 }, (_, i) => ({ organizationId: ORG, jobType: "report_generation", payload: { n: 10 + i } })))
        yield* eventually(
          Effect.map(Effect.forEach(more, (job) => jobRow(job.id)), (rows) => rows.every((row) => row.status === "completed")),
          "the other jobs complete while the lock is held",
          "5 seconds"
        )
        for (const job of gated) expect(yield* jobRow(job.id)).toMatchObject({ status: "processing" })

        yield* Effect.promise(() => operator.query("ROLLBACK"))
        yield* eventually(
          Effect.map(Effect.forEach(gated, (job) => jobRow(job.id)), (rows) => rows.every((row) => row.status === "completed")),
          "the gated jobs complete after the lock ended"
        )
        for (const job of gated) expect(yield* auditEvents(job.id)).toEqual(["job_started", "job_completed"])
        const sql = yield* SqlClient.SqlClient
        const runs = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM job_runs WHERE job_id IN ${sql.in(gated.map((job) => job.id))} AND status = 'completed'`
        expect(runs[0]!.n).toBe(2)
      }).pipe(Effect.provide(JobQueue.layer([Report])), Effect.scoped), { timeout: 30_000 })

    it.effect("only this version's workers ask to skip locked rows; a worker of the version before (rolling deploy) still waits for the lock", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        yield* JobQueue.enqueue({ organizationId: ORG, jobType: "report_generation", payload: { n: 1 } })
        const [job] = yield* sql<{ id: string; attempts: number }>`SELECT id, attempts FROM claim_next_job('w', ARRAY['report_generation'], 1)`
        const operator = new pg.Client({ connectionString: url })
        yield* Effect.acquireRelease(Effect.promise(() => operator.connect()), () => Effect.promise(() => operator.end()))
        yield* Effect.promise(() => operator.query("BEGIN"))
        yield* Effect.promise(() => operator.query("UPDATE job_queue SET priority = priority WHERE id = $1", [job!.id]))

        const [now] = yield* sql<{ completedIds: Array<string>; busyIds: Array<string> }>`
          SELECT completed_ids AS "completedIds", busy_ids AS "busyIds"
          FROM complete_and_claim('w', ARRAY[${job!.id}]::uuid[], ARRAY[${job!.attempts}]::int[], ARRAY['report_generation'], 0, now(), interval '30 seconds', true)`
        expect(now).toEqual({ completedIds: [], busyIds: [job!.id] })

        // The call as the version before makes it: it waits (cut off here by a statement timeout) instead of skipping.
        const before = sql`SELECT completed_ids AS "completedIds" FROM complete_and_claim('w', ARRAY[${job!.id}]::uuid[], ARRAY[${job!.attempts}]::int[], ARRAY['report_generation'], 0)`
        const waited = yield* Effect.flip(sql.withTransaction(Effect.zipRight(sql`SET LOCAL statement_timeout = '300ms'`, before)))
        expect(sqlErrorText(waited)).toContain("statement timeout")
        yield* Effect.promise(() => operator.query("ROLLBACK"))
        expect(yield* before).toEqual([{ completedIds: [job!.id] }])
      }).pipe(Effect.provide(JobQueue.layer([Report])), Effect.scoped))
  })
})
