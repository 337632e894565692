// LISTEN/NOTIFY wakes an idle worker at once; the poll remains the safety net
// when the LISTEN connection dies, and the listener reconnects.
import { SqlClient } from "@effect/sql"
import { describe, expect, layer } from "@effect/vitest"
import { type Clock, Deferred, Effect, Fiber, Schema } from "effect"
import { ClockTypeId } from "effect/Clock"
import { Handler, JobDefinition, JobQueue, Worker } from "../../src/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { ORG } from "../support/jobs.js"
import { eventually } from "../support/live.js"

const Report = JobDefinition.make("report_generation", Schema.Struct({ n: Schema.Number }))

describe("LISTEN", () => {
  layer(TestDatabase.layer(), { excludeTestServices: true })((it) => {
    it.effect("an enqueue wakes an idle worker long before its poll, also after the LISTEN connection was killed", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const started = new Map<number, number>()
        const handler = Handler.make(Report, { run: (payload) => Effect.sync(() => started.set(payload.n, Date.now())) })
        const ready = yield* Deferred.make<void>()
        yield* Worker.make({ handlers: [handler], pollInterval: "1 hour", onClaim: () => {} })
        // the worker is listening once its LISTEN backend shows up
        yield* eventually(
          Effect.map(sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE '%-listen' AND datname = current_database()`, (rows) => rows[0]!.n === 1),
          "the worker listens"
        )
        yield* Deferred.succeed(ready, undefined)

        const enqueueAt = Date.now()
        yield* JobQueue.enqueue({ organizationId: ORG, jobType: "report_generation", payload: { n: 1 } }).pipe(Effect.provide(JobQueue.layer([Report])))
        yield* eventually(Effect.sync(() => started.has(1)), "job 1 started", "5 seconds")
        expect(started.get(1)! - enqueueAt).toBeLessThan(1000)

        // Kill the LISTEN connection; the worker reconnects and is woken again.
        yield* sql`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE '%-listen' AND datname = current_database()`
        yield* eventually(
          Effect.map(sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE '%-listen' AND datname = current_database()`, (rows) => rows[0]!.n === 1),
          "the worker listens again"
        )
        const again = Date.now()
        yield* JobQueue.enqueue({ organizationId: ORG, jobType: "report_generation", payload: { n: 2 } }).pipe(Effect.provide(JobQueue.layer([Report])))
        yield* eventually(Effect.sync(() => started.has(2)), "job 2 started", "5 seconds")
        expect(started.get(2)! - again).toBeLessThan(1000)
      }).pipe(Effect.scoped), { timeout: 30_000 })

    it.effect("a worker stopped by interrupting its fiber (SIGTERM) closes its LISTEN connection", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const listening = sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE '%-listen' AND datname = current_database()`
        const handler = Handler.make(Report, { run: () => Effect.void })
        const main = yield* Effect.fork(Effect.scoped(Effect.zipRight(Worker.make({ handlers: [handler] }), Effect.never)))
        yield* eventually(Effect.map(listening, (rows) => rows[0]!.n === 1), "the worker listens")
        yield* Fiber.interrupt(main)
        yield* eventually(Effect.map(listening, (rows) => rows[0]!.n === 0), "the LISTEN connection is closed", "3 seconds")
      }))

    it.effect("jobs of types the worker does not handle stay pending and visible", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        const handler = Handler.make(Report, { run: () => Effect.void })
        yield* Worker.make({ handlers: [handler], pollInterval: "100 millis" })
        const other = yield* JobQueue.enqueue({ organizationId: ORG, jobType: "sepa_export", payload: { batchId: "x" } }).pipe(Effect.provide(JobQueue.layer([])))
        const mine = yield* JobQueue.enqueue({ organizationId: ORG, jobType: "report_generation", payload: { n: 3 } }).pipe(Effect.provide(JobQueue.layer([Report])))
        yield* eventually(Effect.map(sql<{ status: string }>`SELECT status FROM job_queue WHERE id = ${mine.id}`, (rows) => rows[0]!.status === "completed"), "own job completed")
        yield* Effect.sleep("300 millis")
        const [row] = yield* sql<{ status: string; attempts: number }>`SELECT status, attempts FROM job_queue WHERE id = ${other.id}`
        expect(row).toEqual({ status: "pending", attempts: 0 })
      }).pipe(Effect.scoped))

    it.effect("a job inserted by SQL is started soon also by a worker whose clock is a little behind the database's (not at the next poll)", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        const live = yield* Effect.clock
        // 300 ms behind: by its clock, a job inserted with run_at = the database's now() is not due yet.
        const behind: Clock.Clock = {
          [ClockTypeId]: ClockTypeId,
          unsafeCurrentTimeMillis: () => live.unsafeCurrentTimeMillis() - 300,
          currentTimeMillis: Effect.sync(() => live.unsafeCurrentTimeMillis() - 300),
          unsafeCurrentTimeNanos: () => live.unsafeCurrentTimeNanos() - 300_000_000n,
          currentTimeNanos: Effect.sync(() => live.unsafeCurrentTimeNanos() - 300_000_000n),
          sleep: (duration) => live.sleep(duration)
        }
        const started = yield* Deferred.make<number>()
        const handler = Handler.make(Report, { run: () => Deferred.succeed(started, Date.now()) })
        yield* Worker.make({ handlers: [handler], pollInterval: "1 hour" }).pipe(Effect.withClock(behind))
        yield* eventually(
          Effect.map(sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE '%-listen' AND datname = current_database()`, (rows) => rows[0]!.n === 1),
          "the worker listens"
        )
        const insertedAt = Date.now()
        yield* sql`INSERT INTO job_queue (organization_id, job_type, payload) VALUES (${ORG}, 'report_generation', '{"n": 4}')`
        const startedAt = yield* Deferred.await(started).pipe(Effect.timeout("10 seconds"))
        expect(startedAt - insertedAt).toBeLessThan(2_000) // the look a second after the notification, not the poll an hour away
      }).pipe(Effect.scoped))
  })
})
