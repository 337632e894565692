// The heartbeat must not wait for another session's row lock: while an
// operator's open transaction holds one running job, the worker's other
// running jobs keep their leases, so no other worker rescues them mid-run.
import { SqlClient } from "@effect/sql"
import { describe, expect, layer } from "@effect/vitest"
import { Deferred, Effect, Layer, Schema } from "effect"
import { Db, Handler, JobDefinition, JobQueue, Worker } from "../../src/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { eventually } from "../support/live.js"
import { ORG } from "../support/jobs.js"
import { connection } from "./harness/cluster.js"

const Report = JobDefinition.make("report_generation", Schema.Struct({ n: Schema.Number }))

describe("heartbeat under row locks", () => {
  layer(TestDatabase.layer(), { excludeTestServices: true })((it) => {
    it.effect("an operator holding one running job for longer than the lease does not expose the worker's other running jobs to rescue", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const { url } = yield* TestDatabase
        const gate = yield* Deferred.make<void>()
        const handler = Handler.make(Report, { run: () => Deferred.await(gate) })
        yield* Effect.addFinalizer(() => Deferred.succeed(gate, undefined))
        const timing = { leaseDuration: "1 second", heartbeatInterval: "200 millis", rescueInterval: "200 millis", pollInterval: "200 millis", shutdownTimeout: "1 second" } as const
        const worker = (workerId: string, concurrency: number) =>
          Layer.build(Worker.layer({ handlers: [handler], workerId, concurrency, ...timing }).pipe(Layer.provide(Db.layer({ url, maxConnections: 4 }))))
        const [first, second] = yield* JobQueue.enqueueMany(
          [1, 2].map((n) => ({ organizationId: ORG, jobType: "report_generation", payload: { n } }))
        ).pipe(Effect.provide(JobQueue.layer([Report])))
        yield* worker("holder", 2)
        yield* eventually(
          Effect.map(sql<{ n: number }>`SELECT count(*)::int AS n FROM job_queue WHERE status = 'processing' AND locked_by = 'holder'`, (rows) => rows[0]!.n === 2),
          "the holder runs both jobs"
        )
        yield* worker("rescuer", 1) // a second worker, ready to rescue what expires

        // An operator edits the first job and leaves the transaction open for 2.5 leases.
        const operator = yield* connection(url, "operator")
        yield* Effect.promise(() => operator.query("BEGIN"))
        yield* Effect.promise(() => operator.query("UPDATE job_queue SET priority = 1 WHERE id = $1", [first!.id]))
        yield* Effect.sleep("2500 millis")
        yield* Effect.promise(() => operator.query("ROLLBACK"))

        const [row] = yield* sql<{ status: string; lockedBy: string; attempts: number }>`
          SELECT status, locked_by AS "lockedBy", attempts FROM job_queue WHERE id = ${second!.id}`
        expect(row).toEqual({ status: "processing", lockedBy: "holder", attempts: 1 })
        const rescued = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM audit_logs WHERE event = 'job_rescued' AND job_id = ${second!.id}`
        expect(rescued[0]!.n).toBe(0)
        // (The locked job itself was not renewed while locked: right after the lock ends, the rescuer may win the race
        // against the holder's next heartbeat. Either way it completes once below.)
        yield* Deferred.succeed(gate, undefined)
        yield* eventually(
          Effect.map(sql<{ n: number }>`SELECT count(*)::int AS n FROM job_queue WHERE status = 'completed'`, (rows) => rows[0]!.n === 2),
          "both jobs completed"
        )
      }).pipe(Effect.scoped), { timeout: 30_000 })
  })
})
