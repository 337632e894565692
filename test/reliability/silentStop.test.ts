// A stop while the database does not answer at all (a network partition): every wait is bounded,
// so the worker stops within what README's "Shutdown" section adds up, and its jobs come back
// through their lease once the database answers again.
import { SqlClient } from "@effect/sql"
import { describe, expect, layer } from "@effect/vitest"
import { Effect, Exit, Layer, Schema, Scope } from "effect"
import { Db, Handler, JobDefinition, JobQueue, Worker } from "../../src/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { ORG } from "../support/jobs.js"
import { eventually } from "../support/live.js"
import { silenceableProxy } from "../support/proxy.js"

const Report = JobDefinition.make("report_generation", Schema.Struct({ n: Schema.Number }))

// README, "Shutdown": WORKER_SHUTDOWN_TIMEOUT (here 1 s) + 10 s for claims on their way + 5 s for
// releases + 2 × 2 s for background tasks + 5 s for unregistering, and the pool's own 1 s (its connect timeout is the default 5 s).
const DOCUMENTED_BOUND_MS = 1_000 + 10_000 + 5_000 + 4_000 + 5_000 + 1_000

describe("a stop while the database does not answer", () => {
  layer(TestDatabase.layer(), { excludeTestServices: true })((it) => {
    it.scoped("ends within the bound README gives", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const sql = yield* SqlClient.SqlClient
        const proxy = yield* silenceableProxy(url)
        yield* JobQueue.enqueueMany([1, 2].map((n) => ({ organizationId: ORG, jobType: "report_generation", payload: { n } }))).pipe(
          Effect.provide(JobQueue.layer([Report]))
        )
        const scope = yield* Scope.make()
        const pool = yield* Layer.buildWithScope(Db.layer({ url: proxy.url, maxConnections: 6 }), scope)
        const handler = Handler.make(Report, { run: () => Effect.never })
        yield* Worker.make({ handlers: [handler], pollInterval: "100 millis", shutdownTimeout: "1 second", heartbeatInterval: "200 millis", rescueInterval: "200 millis" }).pipe(
          Effect.provide(pool),
          Scope.extend(scope)
        )
        yield* eventually(Effect.map(sql<{ n: number }>`SELECT count(*)::int AS n FROM job_queue WHERE status = 'processing'`, ([row]) => row!.n === 2), "both jobs run")
        proxy.silence()
        // Let the heartbeat and the rescuer get caught in queries that never answer.
        yield* Effect.sleep("1 second")
        const started = Date.now()
        yield* Scope.close(scope, Exit.void)
        expect(Date.now() - started).toBeLessThan(DOCUMENTED_BOUND_MS)
      }), 60_000)
  })
})
