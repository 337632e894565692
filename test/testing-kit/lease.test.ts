// The kit renews no lease, so it claims for longer than any handler runs: beside a Worker started in the
// test (as docs/TESTING.md says to, for leases and rescue), a handler that waits 10 minutes on the TestClock
// keeps its job and completes, as under a real worker. With the 5-minute lease it had, the Worker's rescue
// took the job back (LeaseLost, the attempt counted). Found by a review.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { Handler, Worker } from "../../src/index.js"
import { SkiplockTest } from "../../src/testing/index.js"
import { advance, settled } from "../support/live.js"
import { ORG, Report, SepaExport } from "../testing-kit/support.js"

describe("runJob beside a Worker", () => {
  it.effect("a handler that waits 10 minutes on the TestClock keeps its job and completes, as under a real worker", () => {
    const slowReport = Handler.make(Report, { run: () => Effect.sleep("10 minutes") })
    const sepa = Handler.make(SepaExport, { run: () => Effect.void })
    return Effect.gen(function* () {
      const running = yield* Effect.fork(SkiplockTest.runJob(slowReport, { month: "2025-03" }, { organizationId: ORG }))
      yield* SkiplockTest.handlerWaiting({ sleeps: 1 })
      // A Worker for another job type, started by the test (its rescue looks at every job).
      const worker = yield* Worker.make({ handlers: [sepa], listen: false, shutdownTimeout: "0 seconds" })
      yield* settled(worker)
      yield* advance(worker, "10 minutes", "30 seconds")
      const run = yield* Fiber.join(running)
      const [job] = yield* SkiplockTest.enqueued({ jobType: Report })
      expect({ outcome: run.outcome._tag, status: job!.status, error: job!.error }).toEqual({ outcome: "Completed", status: "completed", error: null })
    }).pipe(Effect.scoped, Effect.provide(SkiplockTest.layer({ handlers: [slowReport, sepa], registerJobTypes: true })))
  })
})
