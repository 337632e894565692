// Injected failures: the next N attempts of a job type fail with a chosen
// error, and the runtime treats that error as it would the handler's own.
import { describe, expect, it } from "@effect/vitest"
import { Clock, Effect } from "effect"
import { Handler, JobQueue, PermanentError } from "../../src/index.js"
import { SkiplockTest } from "../../src/testing/index.js"
import { ORG, Report } from "./support.js"

describe("failNext", () => {
  it.effect("the next two attempts fail with the chosen error; the third runs the handler and completes", () => {
    let runs = 0
    const report = Handler.make(Report, { run: () => Effect.sync(() => runs++) })
    return Effect.gen(function* () {
      const t0 = yield* Clock.currentTimeMillis
      yield* SkiplockTest.failNext(report, 2, new Error("bank API unavailable"))
      expect(yield* SkiplockTest.remainingFailures(report)).toBe(2)
      yield* JobQueue.enqueueJob(Report, { month: "2025-03" }, { organizationId: ORG })

      const result = yield* SkiplockTest.drain({ maxAdvance: "10 minutes" })

      expect(result.attempts.map((attempt) => [attempt.at.getTime() - t0, attempt.outcome._tag, "error" in attempt.outcome ? attempt.outcome.error : null])).toEqual([
        [0, "RetryScheduled", "bank API unavailable"],
        [30_000, "RetryScheduled", "bank API unavailable"],
        [150_000, "Completed", null]
      ])
      expect(runs).toBe(1) // the injected failures happened before the handler's own code
      expect(yield* SkiplockTest.remainingFailures("report_generation")).toBe(0)
    }).pipe(Effect.provide(SkiplockTest.layer({ handlers: [report] })))
  })

  it.effect("a permanent error fails the job at once; queued errors are used in order", () => {
    let runs = 0
    const report = Handler.make(Report, { run: () => Effect.sync(() => runs++) })
    return Effect.gen(function* () {
      yield* SkiplockTest.failNext(Report, 1, new Error("timeout"))
      yield* SkiplockTest.failNext(Report, 1, new PermanentError({ message: "account closed" }))
      const first = yield* SkiplockTest.runJob(report, { month: "2025-03" })
      expect(first.outcome).toEqual(expect.objectContaining({ _tag: "RetryScheduled", error: "timeout" }))
      const second = yield* SkiplockTest.runJob(report, { month: "2025-04" })
      expect(second.outcome).toEqual(expect.objectContaining({ _tag: "Failed", error: "PermanentError: account closed" }))
      expect(runs).toBe(0)
      const third = yield* SkiplockTest.runJob(report, { month: "2025-05" })
      expect([third.outcome._tag, runs]).toEqual(["Completed", 1])
    }).pipe(Effect.provide(SkiplockTest.layer({ handlers: [] })))
  })

  it.effect("clearFailures forgets failures not used yet", () => {
    const report = Handler.make(Report, { run: () => Effect.void })
    return Effect.gen(function* () {
      yield* SkiplockTest.failNext("report_generation", 3, new Error("down"))
      yield* SkiplockTest.clearFailures
      expect(yield* SkiplockTest.remainingFailures(report)).toBe(0)
      expect((yield* SkiplockTest.runJob(report, { month: "2025-03" })).outcome._tag).toBe("Completed")
    }).pipe(Effect.provide(SkiplockTest.layer({ handlers: [] })))
  })
})
