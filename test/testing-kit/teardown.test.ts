// What happens to work still running when the kit's layer closes (a test that failed, or ended, while
// a job or a worker it started still ran): it is stopped while the database is still there, and the
// test ends at once with its own result.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Fiber, TestClock } from "effect"
import { Handler, JobQueue, type Outcome, Worker } from "../../src/index.js"
import type { JobAttempt } from "../../src/testing/index.js"
import { SkiplockTest } from "../../src/testing/index.js"
import { eventually } from "../support/live.js"
import { ORG, Report } from "./support.js"

// Runs the test body in a daemon fiber and waits (real time) until it ends: a teardown that hangs fails
// this test with a message instead of running into vitest's timeouts.
const endsWithin = <A, E>(body: Effect.Effect<A, E>, seconds = 10) =>
  Effect.gen(function* () {
    const fiber = yield* Effect.forkDaemon(body)
    yield* eventually(Effect.sync(() => fiber.unsafePoll() !== null), "the test body and its layer's teardown ended", `${seconds} seconds`)
    return yield* Fiber.await(fiber)
  })

class TestFailed extends Error {}

// A test body that returns while its Worker runs a job that never ends. (shutdownTimeout 0: the worker's
// shutdown waits for running jobs on the TestClock, which nothing moves once the body returned.)
const workerRunningAJob = (outcomes: Array<Outcome>) =>
  Effect.gen(function* () {
    const stuck = Handler.make(Report, { run: () => Effect.never })
    yield* Worker.make({ handlers: [stuck], listen: false, pollInterval: "1 second", shutdownTimeout: "0 seconds", onOutcome: (_, outcome) => outcomes.push(outcome) })
    yield* JobQueue.enqueueJob(Report, { month: "2025-03" }, { organizationId: ORG })
    yield* TestClock.adjust("1 second")
    yield* eventually(Effect.map(SkiplockTest.enqueued({ status: "processing" }), (jobs) => jobs.length === 1), "the job runs")
    return "passed"
  })

describe("closing the kit's layer", () => {
  it.effect("stops a forked runJob's job still running, before the database goes: the job is released and the test's own failure reported", () => {
    const stuck = Handler.make(Report, { run: () => Effect.never })
    let running: Fiber.RuntimeFiber<JobAttempt, unknown> | undefined
    return Effect.gen(function* () {
      const exit = yield* endsWithin(Effect.gen(function* () {
        running = yield* Effect.fork(SkiplockTest.runJob(stuck, { month: "2025-03" }))
        yield* eventually(Effect.map(SkiplockTest.enqueued({ status: "processing" }), (jobs) => jobs.length === 1), "the job runs")
        return yield* Effect.die(new TestFailed("the test's own assertion"))
      }).pipe(Effect.provide(SkiplockTest.layer({ handlers: [] }))))

      expect(Exit.isFailure(exit) && exit.cause.toString()).toContain("the test's own assertion")
      const run = yield* Fiber.join(running!)
      expect(run.outcome).toEqual({ _tag: "Released" })
    })
  })

  it.effect("a Worker held in Effect.scoped inside the layer, with shutdownTimeout 0, releases the job it still runs when the test ends", () => {
    const outcomes: Array<Outcome> = []
    return Effect.gen(function* () {
      const exit = yield* endsWithin(workerRunningAJob(outcomes).pipe(Effect.scoped, Effect.provide(SkiplockTest.layer({ handlers: [] }))))
      expect(exit).toEqual(Exit.succeed("passed"))
      expect(outcomes).toEqual([{ _tag: "Released" }])
    })
  })

  it.effect("a Worker held in a scope outside the layer stops at once although the pool has ended: its release is not retried", () => {
    const outcomes: Array<Outcome> = []
    return Effect.gen(function* () {
      const exit = yield* endsWithin(workerRunningAJob(outcomes).pipe(Effect.provide(SkiplockTest.layer({ handlers: [] })), Effect.scoped))
      expect(exit).toEqual(Exit.succeed("passed"))
      // An ended pool is not a lost connection: waiting for it to come back (on the TestClock) cannot help.
      expect(outcomes).toEqual([{ _tag: "Unrecorded", error: expect.stringContaining("Cannot use a pool after calling end on the pool") }])
    })
  })
})
