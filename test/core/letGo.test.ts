// A job failed by hand while a worker holds it: the database tells that worker at once (NOTIFY, migration
// 0036), and it runs a heartbeat, which stops the handler or drops the job claimed ahead before it starts,
// instead of at its next heartbeat (up to heartbeatInterval later). Real clock: LISTEN is real.
import { SqlClient } from "@effect/sql"
import { describe, expect, layer } from "@effect/vitest"
import { Deferred, Effect, Schema } from "effect"
import { Handler, JobDefinition, JobQueue, Jobs, Worker } from "../../src/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { ORG } from "../support/jobs.js"
import { eventually, pauseLive } from "../support/live.js"

const Report = JobDefinition.make("report_generation", Schema.Struct({ n: Schema.Number }))

const enqueue = (n: number) =>
  Effect.map(JobQueue.enqueueJob(Report, { n }, { organizationId: ORG, priority: n }).pipe(Effect.provide(JobQueue.layer([Report]))), (job) => job.id)

// The worker's LISTEN has run (its connection's last statement): a notification sent before it would be lost.
const listening = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity
                     WHERE datname = current_database() AND application_name LIKE '%-listen' AND query LIKE 'LISTEN %' AND state = 'idle'`
).pipe(Effect.map(([row]) => row!.n === 1))

// Long heartbeats: without the notification, the worker would learn of the fail only 20 s later.
const slowHeartbeat = { heartbeatInterval: "20 seconds", leaseDuration: "60 seconds", pollInterval: "1 hour", shutdownTimeout: "1 second" } as const

describe("a job failed by hand while a worker holds it", () => {
  layer(TestDatabase.layer(), { excludeTestServices: true })((it) => {
    it.scoped("claimed ahead: the worker drops it before a slot frees, so its handler never starts", () =>
      Effect.gen(function* () {
        const started: Array<number> = []
        const gate = yield* Deferred.make<void>()
        yield* Effect.addFinalizer(() => Deferred.succeed(gate, undefined))
        const handler = Handler.make(Report, { run: ({ n }) => Effect.zipRight(Effect.sync(() => started.push(n)), Deferred.await(gate)) })
        const first = yield* enqueue(1)
        const second = yield* enqueue(2)
        const worker = yield* Worker.make({ handlers: [handler], concurrency: 1, prefetch: 1, ...slowHeartbeat })
        yield* eventually(Effect.map(worker.status, (status) => status.running === 1 && status.prefetched === 1), "job 1 runs and job 2 waits")
        yield* eventually(listening, "the worker listens")
        expect(yield* Jobs.fail(second, { actor: "cli:operator", reason: "must not run" })).toMatchObject({ status: "failed", previousStatus: "processing" })
        yield* eventually(Effect.map(worker.status, (status) => status.prefetched === 0), "the worker dropped job 2", "5 seconds")
        yield* Deferred.succeed(gate, undefined)
        yield* eventually(Effect.map(Jobs.get(first), (details) => details.job.status === "completed"), "job 1 completed")
        yield* pauseLive("300 millis")
        expect(started).toEqual([1])
      }), 30_000)

    it.scoped("running: its handler is stopped within moments, not at the next heartbeat", () =>
      Effect.gen(function* () {
        const running = yield* Deferred.make<void>()
        const stopped = yield* Deferred.make<void>()
        const handler = Handler.make(Report, {
          run: () => Effect.zipRight(Deferred.succeed(running, undefined), Effect.never).pipe(Effect.onInterrupt(() => Deferred.succeed(stopped, undefined)))
        })
        const job = yield* enqueue(3)
        yield* Worker.make({ handlers: [handler], ...slowHeartbeat })
        yield* Deferred.await(running)
        yield* eventually(listening, "the worker listens")
        yield* Jobs.fail(job, { actor: "cli:operator", reason: "stop it" })
        const failedAt = Date.now()
        yield* Deferred.await(stopped).pipe(Effect.timeout("5 seconds"))
        expect(Date.now() - failedAt).toBeLessThan(5_000)
      }), 30_000)
  })
})
