// A job claimed ahead (prefetch) before a stop goes back to pending unstarted (README, Shutdown), also
// when a claim on its way as the stop began answers after a handler returned: that claim was made for
// prefetch room (every slot was busy), and only a claim's own jobs, in the slots it was made for, start
// during a stop (ARCHITECTURE). The claim used to start the job waiting ahead in the freed slot instead.
// Found by a review. TestClock against a real database.
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, FiberId, Schema, Scope, TestClock } from "effect"
import { Handler, JobDefinition, JobQueue, Worker } from "../../src/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { auditEvents, jobRow, ORG } from "../support/jobs.js"
import { eventually, pauseLive } from "../support/live.js"

const Report = JobDefinition.make("report_generation", Schema.Struct({ n: Schema.Number }))

const enqueueReport = (n: number) =>
  JobQueue.enqueueJob(Report, { n }, { organizationId: ORG, priority: n }).pipe(Effect.provide(JobQueue.layer([Report])))

describe("prefetch and a stop", () => {
  it.layer(TestDatabase.layer())((it) => {
    it.scoped("a job claimed ahead before the stop is released unstarted, also when a claim on its way answers after a handler returned", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        const gates = new Map<number, Deferred.Deferred<void>>()
        const gate = (n: number) => {
          let found = gates.get(n)
          if (found === undefined) gates.set(n, (found = Deferred.unsafeMake<void>(FiberId.none)))
          return found
        }
        const started: Array<number> = []
        const handler = Handler.make(Report, {
          run: (payload) => Effect.zipRight(Effect.sync(() => started.push(payload.n)), Deferred.await(gate(payload.n)))
        })
        const openAll = Effect.forEach([1, 2, 3], (n) => Deferred.succeed(gate(n), undefined), { discard: true })
        yield* Effect.addFinalizer(() => openAll)

        yield* enqueueReport(1)
        const second = yield* enqueueReport(2)
        const scope = yield* Scope.make()
        const worker = yield* Worker.make({
          handlers: [handler], workerId: "stopper", concurrency: 1, prefetch: 2, listen: false, pollInterval: "5 seconds"
        }).pipe(Scope.extend(scope))
        // Job 1 runs, job 2 waits ahead; the claim came back short.
        yield* eventually(Effect.map(worker.status, (s) => s.running === 1 && s.prefetched === 1 && s.nextPollAt !== undefined), "job 1 runs, job 2 waits")
        expect(started).toEqual([1])

        // Another session holds audit_logs: the next claim (which writes job_started) waits for it.
        const locked = yield* Deferred.make<void>()
        const unlock = yield* Deferred.make<void>()
        const holder = yield* sql
          .withTransaction(sql`LOCK TABLE audit_logs IN SHARE MODE`.pipe(Effect.zipRight(Deferred.succeed(locked, undefined)), Effect.zipRight(Deferred.await(unlock))))
          .pipe(Effect.fork)
        yield* Deferred.await(locked)
        yield* enqueueReport(3)
        yield* TestClock.adjust("5 seconds") // the poll: a claim for the one job of prefetch room left
        const claimWaits = Effect.map(
          sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity
                             WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%FROM claim_next_job(%'`,
          (rows) => rows[0]!.n === 1
        )
        yield* eventually(claimWaits, "the claim waits for the lock")

        // The stop begins while that claim is on its way; then job 1's handler returns.
        const stopping = yield* Effect.fork(Scope.close(scope, Exit.void))
        yield* eventually(Effect.map(worker.status, (s) => !s.claiming), "the stop began")
        yield* Deferred.succeed(gate(1), undefined)
        // Its handler returned (its slot is free); its completion waits for the lock too.
        yield* eventually(
          Effect.map(
            sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity
                               WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%FROM complete_and_claim(%'`,
            (rows) => rows[0]!.n === 1
          ),
          "job 1's completion waits for the lock"
        )
        // The claim answers.
        yield* Deferred.succeed(unlock, undefined)
        yield* Fiber.join(holder)
        yield* eventually(Effect.map(jobRow(second.id), (row) => row.status !== "processing" || started.includes(2)), "job 2 was released or started")
        yield* pauseLive("300 millis")
        const startedDuringStop = [...started]
        const secondRow = yield* jobRow(second.id)
        const secondAudit = yield* auditEvents(second.id)
        yield* openAll
        yield* Fiber.join(stopping)
        // Job 2 was claimed ahead before the stop: it goes back to pending unstarted, its attempt not counted.
        expect(startedDuringStop).toEqual([1])
        expect(secondRow).toMatchObject({ status: "pending", attempts: 0 })
        expect(secondAudit).toEqual(["job_started", "job_released"])
      }))
  })
})
