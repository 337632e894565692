// The worker's connection pool held full by another part of the same process
// (e.g. HTTP handlers in long transactions): the worker slows down, says so a
// few times, and recovers when the pool frees up; every job completes once.
import { SqlClient } from "@effect/sql"
import { describe, expect, layer } from "@effect/vitest"
import { Deferred, Effect, Layer, Logger, Schema } from "effect"
import { Db, Handler, JobDefinition, Worker } from "../../src/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { eventually } from "../support/live.js"
import { enqueueJobs, JOB_TYPE, prepareQueue, tally } from "./harness/cluster.js"

const BulkImport = JobDefinition.make(JOB_TYPE, Schema.Struct({ n: Schema.Int }))

describe("connection pool held full", () => {
  layer(TestDatabase.layer(), { excludeTestServices: true })((it) => {
    it.effect("another user of the worker's pool holds every connection for 3 s: the worker waits, warns a few times, and finishes every job once", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        yield* prepareQueue(url)
        const warnings: Array<string> = []
        const capture = Logger.make(({ logLevel, message }) => {
          if (logLevel._tag === "Warning" || logLevel._tag === "Error") warnings.push(String(Array.isArray(message) ? message[0] : message))
        })
        // One pool of 4, shared by the worker and "the application".
        const pool = yield* Layer.build(Db.layer({ url, maxConnections: 4, connectTimeout: "1 second", applicationName: "skiplock-chaos-pool" }))
        const handler = Handler.make(BulkImport, {
          transactional: true,
          run: (payload, job) =>
            Effect.flatMap(SqlClient.SqlClient, (sql) =>
              sql`INSERT INTO effects (job_id, n, worker_id, attempt) VALUES (${job.jobId}, ${payload.n}, ${job.workerId}, ${job.attempt})`
            ).pipe(Effect.zipRight(Effect.sleep("10 millis")))
        })
        yield* Worker.make({
          handlers: [handler], workerId: "pooled", concurrency: 2,
          leaseDuration: "2 seconds", heartbeatInterval: "500 millis", rescueInterval: "500 millis", pollInterval: "500 millis", retryBackoff: "100 millis"
        }).pipe(Effect.provide(pool), Effect.provide(Logger.replace(Logger.defaultLogger, capture)))
        yield* enqueueJobs(url, 150)
        yield* eventually(Effect.map(tally(url), (t) => t.completed >= 30), "the run is under way", "20 seconds")

        // The application takes all four connections, each in a transaction, for 3 s.
        const release = yield* Deferred.make<void>()
        const holders = yield* Effect.forEach([1, 2, 3, 4], () =>
          Effect.flatMap(SqlClient.SqlClient, (sql) => sql.withTransaction(Effect.zipRight(sql`SELECT 1`, Deferred.await(release)))).pipe(
            Effect.provide(pool),
            Effect.fork
          )
        )
        yield* Effect.sleep("3 seconds")
        const [during] = [yield* tally(url)]
        yield* Deferred.succeed(release, undefined)
        yield* Effect.forEach(holders, (fiber) => fiber.await)
        const releasedAt = Date.now()

        yield* eventually(Effect.map(tally(url), (t) => t.pending + t.processing === 0), "every job finished", "30 seconds")
        const result = yield* tally(url)
        console.log(JSON.stringify({ during, result, afterReleaseMs: Date.now() - releasedAt, warnings }))
        expect(result).toMatchObject({ enqueued: 150, completed: 150, lost: 0, runTwice: 0, completedWithoutEffect: 0 })
        expect(during.completed).toBeLessThan(150) // it did have to wait
        expect(warnings.length).toBeLessThan(25) // a few lines, not one per job or per retry
      }).pipe(Effect.scoped), { timeout: 60_000 })
  })
})
