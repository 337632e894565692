// A failed attempt's outcome (fail_job_attempt; a release likewise) is written by the job's own fiber on a
// connection of the worker's pool, and may wait there on a row locked elsewhere. The job keeps its handler
// slot until it is written, so the pool sized by Worker.connectionsNeeded still has a connection for every
// handler that runs: the slot used to free as the handler returned, the worker started new jobs in it, and
// those found every connection taken by the waiting failures ("Failed to acquire connection": released as
// if the database were gone, while it was fine). Found by a review. Real clock, real PostgreSQL.
import { SqlClient } from "@effect/sql"
import { describe, expect, layer } from "@effect/vitest"
import { Data, Deferred, Effect, Fiber, Layer, Schema } from "effect"
import { Db, Handler, JobDefinition, JobQueue, Worker } from "../../src/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { ORG } from "../support/jobs.js"
import { eventually, pauseLive } from "../support/live.js"

const Report = JobDefinition.make("report_generation", Schema.Struct({ n: Schema.Number }))
class Refused extends Data.TaggedError("Refused")<{ readonly message: string }> {}

const CONCURRENCY = 10

describe("failed attempts whose rows are locked elsewhere", () => {
  layer(TestDatabase.layer(), { excludeTestServices: true })((it) => {
    it.effect("keep their slots until their outcome is written: the pool never runs short for the handlers that start", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const { url } = yield* TestDatabase
        yield* sql`DELETE FROM job_queue`
        const gate = yield* Deferred.make<void>()
        const sqlErrors: Array<string> = []
        // Jobs 1..10 wait for the gate, then fail (a typed, retryable error).
        // Jobs 11..20 run one 1 s statement each on the worker's pool, as a handler may (one connection per running handler).
        const handler = Handler.make(Report, {
          run: (payload) =>
            Effect.gen(function* () {
              if (payload.n <= CONCURRENCY) {
                yield* Deferred.await(gate)
                return yield* new Refused({ message: "refused" })
              }
              const workerSql = yield* SqlClient.SqlClient
              yield* workerSql`SELECT pg_sleep(1)`.pipe(
                Effect.tapError((error) => Effect.sync(() => sqlErrors.push(`${payload.n}: ${String(error.message)}`)))
              )
            })
        })
        const enqueue = (from: number, to: number) =>
          JobQueue.enqueueMany(
            Array.from({ length: to - from + 1 }, (_, i) => ({ organizationId: ORG, jobType: "report_generation", payload: { n: from + i } }))
          ).pipe(Effect.provide(JobQueue.layer([Report])))

        yield* enqueue(1, CONCURRENCY)
        // The worker's own pool, sized as documented for its options.
        const options = { concurrency: CONCURRENCY }
        yield* Layer.build(
          Worker.layer({ handlers: [handler], workerId: "w", ...options }).pipe(
            Layer.provide(Db.layer({ url, maxConnections: Worker.connectionsNeeded(options) }))
          )
        )
        yield* eventually(
          Effect.map(sql<{ n: number }>`SELECT count(*)::int AS n FROM job_queue WHERE status = 'processing'`, (rows) => rows[0]!.n === CONCURRENCY),
          "jobs 1..10 run"
        )

        // Another session locks the rows of the running jobs (an operator's UPDATE left open) ...
        const locked = yield* Deferred.make<void>()
        const unlock = yield* Deferred.make<void>()
        const holder = yield* sql
          .withTransaction(
            sql`SELECT id FROM job_queue WHERE status = 'processing' FOR UPDATE`.pipe(
              Effect.zipRight(Deferred.succeed(locked, undefined)),
              Effect.zipRight(Deferred.await(unlock))
            )
          )
          .pipe(Effect.fork)
        yield* Deferred.await(locked)
        // ... and the ten handlers fail: their failures wait for the lock, each on a connection of the worker's pool.
        yield* Deferred.succeed(gate, undefined)
        yield* eventually(
          Effect.map(
            sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity
                               WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%fail_job_attempt(%'`,
            (rows) => rows[0]!.n === CONCURRENCY
          ),
          "the ten failures wait for the lock"
        )

        // Ten more jobs come while the failures wait. Their slots are still taken: none starts before the lock ends
        // (with the slots freed, they started and waited 5 s for a connection, then were released).
        const later = yield* enqueue(CONCURRENCY + 1, 2 * CONCURRENCY)
        const ids = later.map((job) => job.id)
        yield* pauseLive("6 seconds")
        const whileLocked = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM job_queue WHERE id = ANY (${ids}::uuid[]) AND status <> 'pending'`
        yield* Deferred.succeed(unlock, undefined)
        yield* Fiber.join(holder)
        expect(whileLocked[0]!.n).toBe(0)
        // Once it ends, the failures are written and the ten new jobs run and complete, none released.
        yield* eventually(
          Effect.map(
            sql<{ n: number }>`SELECT count(*)::int AS n FROM job_queue WHERE id = ANY (${ids}::uuid[]) AND status = 'completed'`,
            (rows) => rows[0]!.n === CONCURRENCY
          ),
          "the ten new jobs completed",
          "20 seconds"
        )
        const released = yield* sql<{ n: number }>`
          SELECT count(*)::int AS n FROM audit_logs WHERE job_id = ANY (${ids}::uuid[]) AND event = 'job_released'`
        expect(sqlErrors).toEqual([])
        expect(released[0]!.n).toBe(0)
      }).pipe(Effect.scoped), { timeout: 90_000 })
  })
})
