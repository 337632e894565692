// The database goes away while a handler runs: its outcome cannot be written. The worker says so
// as what it is, not as a lease lost to another worker; the job stays the worker's until its lease
// runs out and a rescuer takes it back (test/reliability/kill.test.ts shows that part).
import { SqlClient } from "@effect/sql"
import { describe, expect, layer } from "@effect/vitest"
import { Deferred, Effect, Layer, Logger, Schema } from "effect"
import { Db, Handler, JobDefinition, JobQueue, Worker } from "../../src/index.js"
import type { Outcome } from "../../src/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { ORG } from "../support/jobs.js"
import { silenceableProxy } from "../support/proxy.js"

const Report = JobDefinition.make("report_generation", Schema.Struct({ n: Schema.Number }))

describe("an outcome that cannot be written", () => {
  layer(TestDatabase.layer(), { excludeTestServices: true })((it) => {
    it.scoped("is Unrecorded, logged and counted as such, not as a lost lease", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const { url } = yield* TestDatabase
        const proxy = yield* silenceableProxy(url)
        const { id } = yield* JobQueue.enqueueJob(Report, { n: 1 }, { organizationId: ORG }).pipe(Effect.provide(JobQueue.layer([Report])))
        const logged: Array<string> = []
        const capture = Logger.make(({ logLevel, message }) => {
          if (logLevel._tag === "Warning" || logLevel._tag === "Error") logged.push(String(Array.isArray(message) ? message[0] : message))
        })
        const done = yield* Deferred.make<Outcome>()
        // The handler fails after the database went down: recording the failure cannot reach it.
        const handler = Handler.make(Report, { run: () => Effect.zipRight(Effect.sync(proxy.close), Effect.fail(new Error("ledger offline"))) })
        const pool = yield* Layer.build(Db.layer({ url: proxy.url, maxConnections: 4, connectTimeout: "1 second" }))
        // Recording is tried for as long as the lease (3 s here) could still be renewed.
        yield* Worker.make({ handlers: [handler], pollInterval: "100 millis", leaseDuration: "3 seconds", heartbeatInterval: "1 second", listen: false, onOutcome: (_, outcome) => Deferred.unsafeDone(done, Effect.succeed(outcome)) }).pipe(
          Effect.provide(pool),
          Effect.provide(Logger.replace(Logger.defaultLogger, capture))
        )
        const outcome = yield* Deferred.await(done)
        expect(outcome._tag).toBe("Unrecorded")
        expect(logged.some((line) => line.startsWith("could not record the job's outcome (the database stayed unreachable); its lease runs out and it is rescued"))).toBe(true)
        expect(logged.some((line) => line.includes("lost the job's lease"))).toBe(false)
        // Nothing was written: the job is still the worker's, until its lease runs out.
        const [row] = yield* sql<{ status: string; attempts: number }>`SELECT status, attempts FROM job_queue WHERE id = ${id}`
        expect(row).toEqual({ status: "processing", attempts: 1 })
      }), 60_000)
  })
})
