// Closing a worker's scope: running jobs may finish within the shutdown
// timeout; the rest are interrupted and released without counting the attempt.
import { SqlClient } from "@effect/sql"
import { describe, expect, layer } from "@effect/vitest"
import { Deferred, Duration, Effect, Exit, Fiber, Logger, Option, Scope, Schema } from "effect"
import pg from "pg"
import { Handler, JobDefinition, JobQueue, Worker } from "../../src/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { auditEvents, jobRow, ORG } from "../support/jobs.js"
import { eventually } from "../support/live.js"

const Report = JobDefinition.make("report_generation", Schema.Struct({ seconds: Schema.Number }))

const enqueue = (seconds: number) =>
  JobQueue.enqueueJob(Report, { seconds }, { organizationId: ORG }).pipe(Effect.provide(JobQueue.layer([Report])))

/** Starts a worker in a scope of its own, keeping the warnings it logs. */
const startWorker = (handler: Handler.Handler<"report_generation", { readonly seconds: number }>, shutdownTimeout: Duration.DurationInput) =>
  Effect.gen(function* () {
    const warnings: Array<string> = []
    const infos: Array<string> = []
    const capture = Logger.make(({ logLevel, message }) => {
      if (logLevel._tag === "Warning") warnings.push(String(message))
      if (logLevel._tag === "Info") infos.push(String(message))
    })
    const scope = yield* Scope.make()
    yield* Worker.make({ handlers: [handler], shutdownTimeout, pollInterval: "100 millis" }).pipe(
      Scope.extend(scope),
      Effect.provide(Logger.replace(Logger.defaultLogger, capture))
    )
    return { scope, warnings, infos }
  })

describe("graceful shutdown", () => {
  layer(TestDatabase.layer(), { excludeTestServices: true })((it) => {
    it.effect("lets a job finish within the shutdown timeout, releases one that runs longer", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        const handler = Handler.make(Report, { run: (payload) => Effect.sleep(`${payload.seconds} seconds`) })
        const quick = yield* enqueue(0.3)
        const slow = yield* enqueue(60)
        const scope = yield* Scope.make()
        yield* Worker.make({ handlers: [handler], shutdownTimeout: "1 second", pollInterval: "100 millis" }).pipe(Scope.extend(scope))
        yield* eventually(Effect.map(sql<{ n: number }>`SELECT count(*)::int AS n FROM job_queue WHERE status = 'processing'`, (rows) => rows[0]!.n === 2), "both jobs run")

        const started = Date.now()
        yield* Scope.close(scope, Exit.void)
        const took = Date.now() - started
        expect(took).toBeGreaterThanOrEqual(900)
        expect(took).toBeLessThan(5000)

        expect(yield* jobRow(quick.id)).toMatchObject({ status: "completed" })
        expect(yield* jobRow(slow.id)).toMatchObject({ status: "pending", attempts: 0, lockedBy: null })
        expect(yield* auditEvents(slow.id)).toEqual(["job_started", "job_released"])
        const [run] = yield* sql<{ status: string }>`SELECT status FROM job_runs WHERE job_id = ${slow.id}`
        expect(run!.status).toBe("released")
      }))

    it.effect("a stop by interrupting the fiber that runs the worker (SIGTERM) also waits, then releases", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        const handler = Handler.make(Report, { run: (payload) => Effect.sleep(`${payload.seconds} seconds`) })
        const quick = yield* enqueue(0.3)
        const slow = yield* enqueue(60)
        // As NodeRuntime.runMain does on SIGTERM: the fiber that holds the worker's scope is interrupted.
        const main = yield* Effect.fork(
          Effect.scoped(Effect.zipRight(Worker.make({ handlers: [handler], shutdownTimeout: "1 second", pollInterval: "100 millis" }), Effect.never))
        )
        yield* eventually(Effect.map(sql<{ n: number }>`SELECT count(*)::int AS n FROM job_queue WHERE status = 'processing'`, (rows) => rows[0]!.n === 2), "both jobs run")
        const started = Date.now()
        yield* Fiber.interrupt(main)
        expect(Date.now() - started).toBeGreaterThanOrEqual(900)
        expect(yield* jobRow(quick.id)).toMatchObject({ status: "completed" })
        expect(yield* jobRow(slow.id)).toMatchObject({ status: "pending", attempts: 0 })
        expect(yield* auditEvents(slow.id)).toEqual(["job_started", "job_released"])
      }))

    it.effect("a job stopped at shutdown is released even when a finalizer of its handler fails; the failure is logged", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        const handler = Handler.make(Report, {
          run: (payload) => Effect.sleep(`${payload.seconds} seconds`).pipe(Effect.ensuring(Effect.die(new Error("cleanup broke"))))
        })
        const slow = yield* enqueue(60)
        const { scope, warnings, infos } = yield* startWorker(handler, "200 millis")
        yield* eventually(Effect.map(jobRow(slow.id), (row) => row.status === "processing"), "the job runs")
        yield* Scope.close(scope, Exit.void)
        expect(yield* jobRow(slow.id)).toMatchObject({ status: "pending", attempts: 0, lockedBy: null })
        expect(yield* auditEvents(slow.id)).toEqual(["job_started", "job_released"])
        expect(warnings).toContainEqual(expect.stringContaining("cleanup broke"))
        // A clean stop says so last, for whoever reads the log.
        expect(infos.at(-1)).toBe("worker stopped")
      }))

    it.effect("a stop ends even when a running job's row is locked elsewhere: its release finishes once the lock is gone", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const { url } = yield* TestDatabase
        yield* sql`DELETE FROM job_queue`
        const handler = Handler.make(Report, { run: (payload) => Effect.sleep(`${payload.seconds} seconds`) })
        const slow = yield* enqueue(60)
        const { scope, warnings } = yield* startWorker(handler, "500 millis")
        yield* eventually(Effect.map(sql<{ n: number }>`SELECT count(*)::int AS n FROM job_queue WHERE status = 'processing'`, (rows) => rows[0]!.n === 1), "the job runs")
        // An operator's transaction, left open, holds the job's row: the worker's release waits on it.
        const locker = yield* Effect.acquireRelease(
          Effect.promise(async () => {
            const client = new pg.Client({ connectionString: url })
            await client.connect()
            await client.query("BEGIN")
            await client.query("SELECT 1 FROM job_queue WHERE id = $1 FOR UPDATE", [slow.id])
            return client
          }),
          (client) => Effect.promise(() => client.end())
        )

        const started = Date.now()
        // Closing runs in its own fiber: a hang must fail the test, not stall it.
        const closing = yield* Effect.forkDaemon(Scope.close(scope, Exit.void))
        const closed = yield* Fiber.await(closing).pipe(Effect.timeout("20 seconds"), Effect.option)
        expect(Option.isSome(closed), "the stop did not end").toBe(true)
        expect(Date.now() - started).toBeLessThan(10_000)
        expect(yield* jobRow(slow.id)).toMatchObject({ status: "processing" })
        expect(warnings).toContainEqual(expect.stringContaining("1 job(s) not released within 5s"))

        // The release was left running; it lands once the operator's transaction ends.
        yield* Effect.promise(() => locker.query("ROLLBACK"))
        yield* eventually(Effect.map(jobRow(slow.id), (row) => row.status === "pending"), "the job is released")
        expect(yield* jobRow(slow.id)).toMatchObject({ attempts: 0, lockedBy: null })
        expect(yield* auditEvents(slow.id)).toEqual(["job_started", "job_released"])
      }).pipe(Effect.scoped))

    it.effect("a stop whose running handler cannot be interrupted ends anyway, and says that the handler, not a lock, kept the job", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        const gate = yield* Deferred.make<void>()
        yield* Effect.addFinalizer(() => Deferred.succeed(gate, undefined))
        const handler = Handler.make(Report, { run: () => Effect.uninterruptible(Deferred.await(gate)) })
        const stubborn = yield* enqueue(60)
        const { scope, warnings } = yield* startWorker(handler, "500 millis")
        yield* eventually(Effect.map(jobRow(stubborn.id), (row) => row.status === "processing"), "the job runs")
        const closing = yield* Effect.forkDaemon(Scope.close(scope, Exit.void))
        const closed = yield* Fiber.await(closing).pipe(Effect.timeout("20 seconds"), Effect.option)
        expect(Option.isSome(closed), "the stop did not end").toBe(true)
        expect(yield* jobRow(stubborn.id)).toMatchObject({ status: "processing" })
        expect(warnings).toContainEqual(expect.stringContaining("1 job(s) whose handler did not stop within 5s of its interruption"))
        expect(warnings.filter((warning) => warning.includes("not released"))).toEqual([])
      }).pipe(Effect.scoped))

    it.effect("a claim that answers only after the stop stopped waiting for it has its jobs released unstarted, not started in a stopped worker", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        const started: Array<number> = []
        const handler = Handler.make(Report, { run: (payload) => Effect.sync(() => void started.push(payload.seconds)) })
        // The database stalls in the claim (a slow disk, a synchronous standby): 11 s, past the stop's 10 s wait.
        yield* Effect.acquireRelease(
          sql`CREATE FUNCTION test_stall_claims() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(11); RETURN NEW; END $$;
              CREATE TRIGGER test_stall_claims BEFORE INSERT ON job_runs FOR EACH ROW EXECUTE FUNCTION test_stall_claims()`.unprepared,
          () => Effect.orDie(sql`DROP TRIGGER test_stall_claims ON job_runs; DROP FUNCTION test_stall_claims()`.unprepared)
        )
        const { scope, warnings } = yield* startWorker(handler, "1 second")
        const job = yield* enqueue(1)
        yield* eventually(
          Effect.map(sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event = 'PgSleep'`, (rows) => rows[0]!.n === 1),
          "the claim is stalled"
        )
        const closing = yield* Effect.forkDaemon(Scope.close(scope, Exit.void))
        const closed = yield* Fiber.await(closing).pipe(Effect.timeout("20 seconds"), Effect.option)
        expect(Option.isSome(closed), "the stop did not end").toBe(true)
        expect(warnings).toContainEqual(expect.stringContaining("a claim sent before the stop has not answered within 10s"))
        // The claim answers a second later: its job goes back to pending, its attempt not counted, and never runs here.
        yield* eventually(Effect.map(auditEvents(job.id), (events) => events.includes("job_released")), "the late claim's job is released", "10 seconds")
        expect(yield* jobRow(job.id)).toMatchObject({ status: "pending", attempts: 0, lockedBy: null })
        expect(yield* auditEvents(job.id)).toEqual(["job_started", "job_released"])
        expect(started).toEqual([])
      }).pipe(Effect.scoped), 60_000)

    it.effect("a stop with nothing running is immediate and leaves nothing in processing", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const gate = yield* Deferred.make<void>()
        const handler = Handler.make(Report, { run: () => Deferred.await(gate) })
        const scope = yield* Scope.make()
        yield* Worker.make({ handlers: [handler], shutdownTimeout: "30 seconds" }).pipe(Scope.extend(scope))
        const started = Date.now()
        yield* Scope.close(scope, Exit.void)
        expect(Date.now() - started).toBeLessThan(1000)
        const [row] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM job_queue WHERE status = 'processing'`
        expect(row!.n).toBe(0)
      }))
  })
})
