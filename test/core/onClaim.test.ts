// The worker's onClaim callback (for tests and instrumentation) may throw: the claim's jobs are the
// worker's all the same and run, and a hand-off gives its reserved slot back. Thrown through, a throw
// lost the jobs until their leases ran out, and a hand-off's slot for good (with concurrency 1 the
// worker never claimed again). Found by a review.
import { describe, expect, layer } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { Handler, JobDefinition, JobQueue, LocalWorkers, Worker } from "../../src/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { jobRow, ORG } from "../support/jobs.js"
import { eventually, settled } from "../support/live.js"

const Report = JobDefinition.make("report_generation", Schema.Struct({ n: Schema.Number }))

/** An onClaim that throws on the first claim, and counts the claims. */
const throwingOnce = () => {
  const seen = { claims: 0 }
  const onClaim = () => {
    seen.claims++
    if (seen.claims === 1) throw new Error("instrumentation bug")
  }
  return { seen, onClaim }
}

const completed = (id: string) => Effect.map(jobRow(id), (row) => row.status === "completed")

describe("an onClaim callback that throws", () => {
  layer(TestDatabase.layer(), { excludeTestServices: true })((it) => {
    it.effect("loses no job of a hand-off and gives its slot back: the worker goes on claiming", () =>
      Effect.gen(function* () {
        const { seen, onClaim } = throwingOnce()
        const worker = yield* Worker.make({ handlers: [Handler.make(Report, { run: () => Effect.void })], concurrency: 1, pollInterval: "1 hour", onClaim })
        yield* settled(worker)
        // Handed off to the free slot (the enqueue claims it); the callback throws on this claim.
        const first = yield* JobQueue.enqueue({ organizationId: ORG, jobType: "report_generation", payload: { n: 1 } })
        expect(first.status).toBe("processing")
        yield* eventually(completed(first.id), "the first job completed")
        // The statement that completed it also claimed for the freed slot: once it is back (the loop settled),
        // the slot is free again, and the next enqueue hands its job off too.
        yield* settled(worker)
        const second = yield* JobQueue.enqueue({ organizationId: ORG, jobType: "report_generation", payload: { n: 2 } })
        expect(second.status).toBe("processing")
        yield* eventually(completed(second.id), "the second job completed")
        expect(seen.claims).toBe(2)
      }).pipe(Effect.provide(JobQueue.layer([Report])), Effect.provide(LocalWorkers.layer), Effect.scoped), { timeout: 30_000 })

    it.effect("loses no job of the worker's own claim", () =>
      Effect.gen(function* () {
        const { seen, onClaim } = throwingOnce()
        // Enqueued before the worker starts (no hand-off): its own first claim takes both.
        const jobs = yield* JobQueue.enqueueMany([1, 2].map((n) => ({ organizationId: ORG, jobType: "report_generation", payload: { n } })))
        yield* Worker.make({ handlers: [Handler.make(Report, { run: () => Effect.void })], pollInterval: "1 hour", onClaim })
        for (const job of jobs) yield* eventually(completed(job.id), `job ${job.id} completed`)
        expect(seen.claims).toBe(1)
      }).pipe(Effect.provide(JobQueue.layer([Report])), Effect.scoped), { timeout: 30_000 })
  })
})
