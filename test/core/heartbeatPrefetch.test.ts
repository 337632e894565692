// A prefetched job that starts while the heartbeat is on its way is judged by that heartbeat's answer:
// told the worker no longer holds it, the worker stops the handler it just started.
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, FiberId, Fiber, Schema, TestClock } from "effect"
import { Handler, JobDefinition, JobQueue, Worker } from "../../src/index.js"
import type { Outcome } from "../../src/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { ORG } from "../support/jobs.js"
import { eventually, pauseLive } from "../support/live.js"

const Report = JobDefinition.make("report_generation", Schema.Struct({ n: Schema.Number }))

describe("a heartbeat and a prefetched job started while it was on its way", () => {
  it.layer(TestDatabase.layer())((it) => {
    it.scoped("the answer 'not held' stops the handler it just started", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        const gates = new Map<number, Deferred.Deferred<void>>()
        const gate = (n: number) => { let g = gates.get(n); if (!g) gates.set(n, (g = Deferred.unsafeMake<void>(FiberId.none))); return g }
        const started: Array<number> = []
        const outcomes: Array<string> = []
        let inHandler = 0
        const handler = Handler.make(Report, {
          timeout: "1 hour",
          run: (p) => Effect.suspend(() => { started.push(p.n); inHandler++; return Deferred.await(gate(p.n)).pipe(Effect.ensuring(Effect.sync(() => inHandler--))) })
        })
        const [, b] = yield* JobQueue.enqueueMany([1, 2].map((n) => ({ organizationId: ORG, jobType: "report_generation", payload: { n }, priority: n })))
          .pipe(Effect.provide(JobQueue.layer([Report])))
        yield* Worker.make({ handlers: [handler], workerId: "w", concurrency: 1, prefetch: 1, listen: false, pollInterval: "1 hour", rescueInterval: "1 hour",
          onOutcome: (job, o: Outcome) => void outcomes.push(`${job.id === b!.id ? "B" : "A"}:${o._tag}`) })
        yield* Effect.addFinalizer(() => Effect.forEach([...gates.values()], (d) => Deferred.succeed(d, undefined), { discard: true }))
        yield* eventually(Effect.sync(() => started.length === 1), "A runs, B prefetched")
        // B is taken from the worker (rescued and claimed elsewhere).
        yield* sql`UPDATE job_queue SET locked_by = 'other-worker' WHERE id = ${b!.id}`
        // Hold the worker's row: the heartbeat at 10 s waits in its registration update.
        const release = yield* Deferred.make<void>()
        const locked = yield* Deferred.make<void>()
        const holder = yield* Effect.fork(sql.withTransaction(sql`SELECT 1 FROM job_workers WHERE worker_id = 'w' FOR UPDATE`.pipe(
          Effect.zipRight(Deferred.succeed(locked, undefined)), Effect.zipRight(Deferred.await(release)))))
        yield* Deferred.await(locked)
        yield* TestClock.adjust("10 seconds") // the heartbeat asks about A (running) and B (prefetched)
        const waiting = sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '%worker_heartbeat(%' AND wait_event_type = 'Lock'`
        yield* eventually(Effect.map(waiting, (r) => r[0]!.n === 1), "the heartbeat waits")
        yield* Deferred.succeed(gate(1), undefined) // A returns: B starts from prefetched
        yield* eventually(Effect.sync(() => started.length === 2 && inHandler === 1), "B started")
        yield* Deferred.succeed(release, undefined)
        yield* Fiber.join(holder)
        yield* eventually(Effect.map(waiting, (r) => r[0]!.n === 0), "the heartbeat answered")
        yield* pauseLive("500 millis")
        // The answer says the worker no longer holds B: its handler is stopped.
        expect(outcomes).toContain("B:LeaseLost")
        expect(inHandler).toBe(0)
        yield* TestClock.adjust("3 seconds") // A's completion, answered busy once, retries
      }))
  })
})
