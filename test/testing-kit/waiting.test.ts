// What docs/TESTING.md promises beyond drain's own jobs: why a job another worker or another
// transaction holds is still waiting, and failNext applied to a Worker the test starts itself.
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Clock, Deferred, Effect, TestClock } from "effect"
import pg from "pg"
import { Handler, JobQueue, Worker } from "../../src/index.js"
import type { Outcome } from "../../src/index.js"
import { SkiplockTest } from "../../src/testing/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { pauseLive } from "../support/live.js"
import { ORG, Report } from "./support.js"

describe("drain, for jobs it cannot take", () => {
  it.effect("one another worker holds waits as Processing (with its worker), one whose row is locked as Locked", () => {
    const report = Handler.make(Report, { run: () => Effect.void })
    return Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const { url } = yield* TestDatabase
      const held = yield* JobQueue.enqueueJob(Report, { month: "2025-01" }, { organizationId: ORG })
      // Claimed by another worker at the TestClock's time.
      yield* sql`SELECT id FROM claim_next_job('other-worker', NULL, 1, ${new Date(yield* Clock.currentTimeMillis)})`
      const locked = yield* JobQueue.enqueueJob(Report, { month: "2025-02" }, { organizationId: ORG })
      const done = yield* JobQueue.enqueueJob(Report, { month: "2025-03" }, { organizationId: ORG })
      // Another transaction keeps the second job's row locked.
      const operator = new pg.Client({ connectionString: url })
      yield* Effect.acquireRelease(Effect.promise(() => operator.connect()), () => Effect.promise(() => operator.end()))
      yield* Effect.promise(() => operator.query("BEGIN"))
      yield* Effect.promise(() => operator.query("SELECT id FROM job_queue WHERE id = $1 FOR UPDATE", [locked.id]))

      const result = yield* SkiplockTest.drain()

      expect(result.completed.map((drained) => drained.job.id)).toEqual([done.id])
      const reasons = Object.fromEntries(result.waiting.map((drained) => [drained.job.id, drained.waiting]))
      expect(reasons[held.id]).toEqual(expect.objectContaining({ _tag: "Processing", lockedBy: "other-worker" }))
      expect(reasons[locked.id]).toEqual(expect.objectContaining({ _tag: "Locked" }))
      yield* Effect.promise(() => operator.query("ROLLBACK"))
    }).pipe(Effect.scoped, Effect.provide(SkiplockTest.layer({ handlers: [report] })))
  })
})

describe("kit.withFailures", () => {
  it.effect("applies failNext to a handler given to a Worker the test starts itself", () => {
    let runs = 0
    const report = Handler.make(Report, { run: () => Effect.sync(() => void runs++) })
    return Effect.gen(function* () {
      const kit = yield* SkiplockTest
      yield* kit.failNext(Report, 1, new Error("ledger offline"))
      const outcomes: Array<Outcome> = []
      const finished = yield* Deferred.make<void>()
      yield* Worker.make({
        handlers: [kit.withFailures(report)], listen: false, pollInterval: "1 second", retryBackoff: "1 second",
        onOutcome: (_, outcome) => {
          outcomes.push(outcome)
          if (outcome._tag === "Completed") Deferred.unsafeDone(finished, Effect.void)
        }
      })
      yield* JobQueue.enqueueJob(Report, { month: "2025-03" }, { organizationId: ORG })
      // The first attempt fails with the injected error before the handler runs; the retry, a second later, runs it.
      for (let step = 0; step < 20 && !(yield* Deferred.isDone(finished)); step++) {
        yield* TestClock.adjust("1 second")
        yield* pauseLive("50 millis")
      }
      expect(outcomes.map((outcome) => outcome._tag)).toEqual(["RetryScheduled", "Completed"])
      expect(outcomes[0]).toEqual(expect.objectContaining({ error: "ledger offline" }))
      expect(runs).toBe(1)
      expect(yield* kit.remainingFailures("report_generation")).toBe(0)
    }).pipe(Effect.scoped, Effect.provide(SkiplockTest.layer({ handlers: [report] })))
  })
})
