// The database goes away for a few seconds, shorter than a lease, and comes back: the jobs that ran
// through it are recorded once it is back, and the worker does not take its own running jobs for
// dead. Real clock, the worker's pool behind a proxy that goes down and comes back.
import { SqlClient } from "@effect/sql"
import { describe, expect, layer } from "@effect/vitest"
import { Deferred, type Duration, Effect, Layer, Schema } from "effect"
import { Db, Handler, JobDefinition, JobQueue, Worker } from "../../src/index.js"
import type { Outcome } from "../../src/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { ORG } from "../support/jobs.js"
import { pauseLive } from "../support/live.js"
import { restartableProxy } from "../support/proxy.js"

const Report = JobDefinition.make("report_generation", Schema.Struct({ n: Schema.Number }))

const setUp = (options: { readonly leaseDuration: Duration.DurationInput; readonly heartbeatInterval: Duration.DurationInput }) =>
  Effect.gen(function* () {
    const { url } = yield* TestDatabase
    const sql = yield* SqlClient.SqlClient
    yield* sql`DELETE FROM job_queue`
    const proxy = yield* restartableProxy(url)
    const { id } = yield* JobQueue.enqueueJob(Report, { n: 1 }, { organizationId: ORG }).pipe(Effect.provide(JobQueue.layer([Report])))
    const started = yield* Deferred.make<void>()
    const finish = yield* Deferred.make<void>()
    const outcomes: Array<Outcome["_tag"]> = []
    const outcome = yield* Deferred.make<Outcome>()
    // The handler does not touch the database: only the worker's own statements meet the outage.
    const handler = Handler.make(Report, { run: () => Effect.zipRight(Deferred.succeed(started, undefined), Deferred.await(finish)) })
    const pool = yield* Layer.build(Db.layer({ url: proxy.url, connectTimeout: "1 second" }))
    yield* Worker.make({
      handlers: [handler], pollInterval: "500 millis", rescueInterval: "500 millis", listen: false, ...options,
      onOutcome: (_, result) => {
        outcomes.push(result._tag)
        Deferred.unsafeDone(outcome, Effect.succeed(result))
      }
    }).pipe(Effect.provide(pool))
    yield* Deferred.await(started)
    const events = Effect.map(
      sql<{ event: string }>`SELECT event FROM audit_logs WHERE job_id = ${id} ORDER BY id`,
      (rows) => rows.map((row) => row.event)
    )
    const jobRow = Effect.map(sql<{ status: string; attempts: number }>`SELECT status, attempts FROM job_queue WHERE id = ${id}`, (rows) => rows[0])
    return { proxy, finish, outcome, outcomes, events, jobRow }
  })

describe("a database outage shorter than the lease", () => {
  layer(TestDatabase.layer(), { excludeTestServices: true })((it) => {
    it.scoped("a job that finished during it is recorded completed once the database is back, its attempt not counted again", () =>
      Effect.gen(function* () {
        const { proxy, finish, outcome, events, jobRow } = yield* setUp({ leaseDuration: "15 seconds", heartbeatInterval: "2 seconds" })
        proxy.down()
        yield* Deferred.succeed(finish, undefined)
        yield* pauseLive("6 seconds") // longer than five tries of recording it (about 3 s)
        proxy.up()
        expect((yield* Deferred.await(outcome))._tag).toBe("Completed")
        expect(yield* jobRow).toEqual({ status: "completed", attempts: 1 })
        expect(yield* events).toEqual(["job_started", "job_completed"])
      }), 60_000)

    it.scoped("a job running through an outage that outlasts its lease in the database, not the worker's next heartbeat, is not rescued by its own worker", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const { proxy, finish, outcome, outcomes, events, jobRow } = yield* setUp({ leaseDuration: "6 seconds", heartbeatInterval: "5 seconds" })
        // Right after a heartbeat (at t): the lease in the database runs to t + 6 s; the next beat, due at
        // t + 5 s, fails and is tried again every second.
        const lastBeat = Effect.map(sql<{ at: Date }>`SELECT last_heartbeat_at AS at FROM job_workers`, (rows) => rows[0]!.at.getTime())
        const before = yield* lastBeat
        while ((yield* lastBeat) === before) yield* pauseLive("20 millis")
        const t = yield* lastBeat
        proxy.down()
        yield* pauseLive(`${t + 6_700 - Date.now()} millis`)
        // Back after the lease ran out in the database, before the worker's heartbeat renewed it; the rescuer
        // runs every half second.
        proxy.up()
        yield* pauseLive("3 seconds")
        expect(outcomes).toEqual([])
        yield* Deferred.succeed(finish, undefined)
        expect((yield* Deferred.await(outcome))._tag).toBe("Completed")
        expect(yield* jobRow).toEqual({ status: "completed", attempts: 1 })
        expect(yield* events).toEqual(["job_started", "job_completed"])
      }), 60_000)
  })
})
