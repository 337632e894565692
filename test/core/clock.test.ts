// The runbook's timing rules, driven by TestClock against a real database:
// the 5 s poll, 30 s × attempt² backoff, 3 attempts, 5 jobs a tick, 5 at once.
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Clock, Deferred, Effect, Ref, Schema } from "effect"
import { Handler, JobDefinition, JobQueue, Worker } from "../../src/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { auditEvents, jobRow, jobStatus, ORG, statusCounts } from "../support/jobs.js"
import { advance, eventually, pauseLive, settled } from "../support/live.js"

const Report = JobDefinition.make("report_generation", Schema.Struct({ n: Schema.Number }))

// Tests in one it.layer block share the database and the TestClock: each starts from a clean
// queue and measures time from its own start.
const reset = Effect.flatMap(SqlClient.SqlClient, (sql) => sql`DELETE FROM job_queue`).pipe(Effect.zipRight(Clock.currentTimeMillis))

const enqueueReport = (n: number) =>
  JobQueue.enqueueJob(Report, { n }, { organizationId: ORG }).pipe(Effect.provide(JobQueue.layer([Report])))

describe("worker timing under TestClock", () => {
  it.layer(TestDatabase.layer())((it) => {
    it.scoped("polls every 5 s: a job enqueued while the worker is idle is not claimed before the next poll", () =>
      Effect.gen(function* () {
        const t0 = yield* reset
        const handler = Handler.make(Report, { run: () => Effect.void })
        const worker = yield* Worker.make({ handlers: [handler], listen: false })
        yield* settled(worker)
        const job = yield* enqueueReport(1)

        yield* advance(worker, "4 seconds")
        expect(yield* jobStatus(job.id)).toBe("pending")

        yield* advance(worker, "1 second")
        expect(yield* jobStatus(job.id)).toBe("completed")
        // Claimed by the poll at 5 s (the claim that found it; the completion's statement came at the same time).
        expect((yield* worker.status).lastClaimAt! - t0).toBe(5_000)
      }))

    it.scoped("retries after 30 s, then 120 s, and fails after the 3rd attempt", () =>
      Effect.gen(function* () {
        const t0 = yield* reset
        const handler = Handler.make(Report, { run: () => Effect.fail(new Error("bank API unavailable")) })
        const job = yield* enqueueReport(1)
        const worker = yield* Worker.make({ handlers: [handler], listen: false })
        yield* settled(worker) // attempt 1 at t = 0 fails

        const first = yield* jobRow(job.id)
        expect(first).toMatchObject({ status: "pending", attempts: 1, error: "bank API unavailable" })
        expect(first.runAt.getTime() - t0).toBe(30_000)

        yield* advance(worker, "25 seconds", "5 seconds")
        yield* advance(worker, "4 seconds")
        expect(yield* jobRow(job.id)).toMatchObject({ status: "pending", attempts: 1 }) // t = 29 s

        yield* advance(worker, "1 second") // t = 30 s: attempt 2 fails
        const second = yield* jobRow(job.id)
        expect(second).toMatchObject({ status: "pending", attempts: 2 })
        expect(second.runAt.getTime() - t0).toBe(30_000 + 120_000)

        yield* advance(worker, "115 seconds", "5 seconds")
        yield* advance(worker, "4 seconds")
        expect(yield* jobRow(job.id)).toMatchObject({ status: "pending", attempts: 2 }) // t = 149 s

        yield* advance(worker, "1 second") // t = 150 s: attempt 3 fails for good
        expect(yield* jobRow(job.id)).toMatchObject({ status: "failed", attempts: 3, error: "bank API unavailable" })

        const sql = yield* SqlClient.SqlClient
        const [run] = yield* sql<{ status: string; lastError: string; attempts: number }>`
          SELECT status, last_error AS "lastError", attempts FROM job_runs WHERE job_id = ${job.id}`
        expect(run).toEqual({ status: "failed", lastError: "bank API unavailable", attempts: 3 })
        expect(yield* auditEvents(job.id)).toEqual([
          "job_started", "job_retry_scheduled", "job_started", "job_retry_scheduled", "job_started", "job_failed"
        ])
      }))

    it.scoped("never runs more than 5 handlers at once with 12 jobs waiting, and claims at once when slots free up", () =>
      Effect.gen(function* () {
        const t0 = yield* reset
        const gate = yield* Deferred.make<void>()
        const active = yield* Ref.make(0)
        const maxActive = yield* Ref.make(0)
        const handler = Handler.make(Report, {
          run: () =>
            Effect.gen(function* () {
              const now = yield* Ref.updateAndGet(active, (n) => n + 1)
              yield* Ref.update(maxActive, (max) => Math.max(max, now))
              yield* Deferred.await(gate)
              yield* Ref.update(active, (n) => n - 1)
            })
        })
        for (let n = 0; n < 12; n++) yield* enqueueReport(n)
        const worker = yield* Worker.make({ handlers: [handler], listen: false })
        yield* Effect.addFinalizer(() => Deferred.succeed(gate, undefined)) // runs before the worker's, even if an assertion fails
        yield* settled(worker, { running: 5 })
        yield* pauseLive("300 millis")
        expect(yield* statusCounts).toEqual({ processing: 5, pending: 7 })
        expect(yield* Ref.get(active)).toBe(5)

        yield* Deferred.succeed(gate, undefined)
        yield* eventually(Effect.map(statusCounts, (counts) => counts.completed === 12), "all 12 jobs completed")
        expect(yield* Ref.get(maxActive)).toBe(5)
        // No poll was needed (this test never moves the TestClock): freed slots were refilled at once, by claims at t0.
        expect((yield* worker.status).lastClaimAt! - t0).toBe(0)
      }))

    it.scoped("claims at most 5 jobs a tick, and claims again at once after a full tick", () =>
      Effect.gen(function* () {
        const t0 = yield* reset
        const gate = yield* Deferred.make<void>()
        const handler = Handler.make(Report, { run: () => Deferred.await(gate) })
        for (let n = 0; n < 12; n++) yield* enqueueReport(n)
        const claimSizes: Array<number> = []
        const worker = yield* Worker.make({ handlers: [handler], listen: false, concurrency: 10, onClaim: (jobs) => claimSizes.push(jobs.length) })
        yield* Effect.addFinalizer(() => Deferred.succeed(gate, undefined))
        yield* settled(worker, { running: 10 })
        // Two claims of 5 at t0: the second followed the first, full one without waiting for a poll.
        expect(claimSizes).toEqual([5, 5])
        expect((yield* worker.status).lastClaimAt! - t0).toBe(0)
        expect(yield* statusCounts).toEqual({ processing: 10, pending: 2 })
        yield* Deferred.succeed(gate, undefined)
        yield* eventually(Effect.map(statusCounts, (counts) => counts.completed === 12), "all 12 jobs completed")
      }))
  })
})
