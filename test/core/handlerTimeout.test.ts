// What a handler's timeout stops, in real time: a SQL statement is cancelled on the server, and a
// promise gets its AbortSignal aborted; and what ends with an attempt: its forked fibers, not its
// daemon fibers (README, "Writing a handler").
import { SqlClient } from "@effect/sql"
import { describe, expect, layer } from "@effect/vitest"
import { Deferred, Effect, Schema } from "effect"
import { Handler, JobDefinition, JobQueue, Worker } from "../../src/index.js"
import type { Outcome } from "../../src/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { ORG } from "../support/jobs.js"
import { eventually } from "../support/live.js"

const Report = JobDefinition.make("report_generation", Schema.Struct({ n: Schema.Number }))

const runUntilOutcome = (handler: Handler.Handler) =>
  Effect.scoped(
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      yield* sql`DELETE FROM job_queue`
      yield* JobQueue.enqueueJob(Report, { n: 1 }, { organizationId: ORG }).pipe(Effect.provide(JobQueue.layer([Report])))
      const done = yield* Deferred.make<Outcome>()
      yield* Worker.make({ handlers: [handler], pollInterval: "100 millis", onOutcome: (_, outcome) => Deferred.unsafeDone(done, Effect.succeed(outcome)) })
      return yield* Deferred.await(done)
    })
  )

describe("handler timeouts and forked fibers", () => {
  layer(TestDatabase.layer(), { excludeTestServices: true })((it) => {
    it.effect("cancel the handler's running SQL statement on the server", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const handler = Handler.make(Report, { run: () => Effect.asVoid(sql`SELECT pg_sleep(60) AS handler_timeout_probe`), timeout: "1 second" })
        const started = Date.now()
        const outcome = yield* runUntilOutcome(handler)
        expect(outcome).toMatchObject({ _tag: "RetryScheduled", error: `HandlerTimeout: handler for "report_generation" timed out after 1000 ms` })
        expect(Date.now() - started).toBeLessThan(10_000)
        const stillRunning = sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity
          WHERE datname = current_database() AND query LIKE '%handler_timeout_probe%' AND state = 'active' AND pid <> pg_backend_pid()`
        yield* eventually(Effect.map(stillRunning, ([row]) => row!.n === 0), "the statement is gone from pg_stat_activity", "5 seconds")
      }), { timeout: 30_000 })

    it.effect("abort the AbortSignal that Effect.tryPromise hands the handler's promise", () =>
      Effect.gen(function* () {
        let aborted = false
        const handler = Handler.make(Report, {
          run: () =>
            Effect.tryPromise((signal) => new Promise<void>(() => signal.addEventListener("abort", () => void (aborted = true)))),
          timeout: "1 second"
        })
        const outcome = yield* runUntilOutcome(handler)
        expect(outcome._tag).toBe("RetryScheduled")
        expect(aborted).toBe(true)
      }), { timeout: 30_000 })

    it.effect("end the fibers the handler forked with its attempt; daemon fibers run on", () =>
      Effect.gen(function* () {
        const ran = { forked: false, daemon: false }
        const later = (key: keyof typeof ran) => Effect.delay(Effect.sync(() => void (ran[key] = true)), "300 millis")
        const handler = Handler.make(Report, { run: () => Effect.zipRight(Effect.fork(later("forked")), Effect.forkDaemon(later("daemon"))) })
        expect((yield* runUntilOutcome(handler))._tag).toBe("Completed")
        yield* eventually(Effect.sync(() => ran.daemon), "the daemon fiber ran")
        expect(ran.forked).toBe(false)
      }), { timeout: 30_000 })
  })
})
