// How many connections a worker may hold at once, and a default pool that has room for them.
import { SqlClient } from "@effect/sql"
import { describe, expect, layer } from "@effect/vitest"
import { Deferred, Effect, Fiber, Layer } from "effect"
import { Db, Worker } from "../../src/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { eventually } from "../support/live.js"

describe("pool size", () => {
  it_connectionsNeeded()

  layer(TestDatabase.layer(), { excludeTestServices: true })((it) => {
    it.effect("Db.layer's default pool opens a default worker's connections and two more, and no more", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const sql = yield* SqlClient.SqlClient
        const applicationName = "skiplock-pool-size"
        const pool = yield* Layer.build(Db.layer({ url, applicationName }))
        const release = yield* Deferred.make<void>()
        const wanted = Worker.connectionsNeeded({}) + 3
        // Each transaction holds its connection until released; one more than the pool has waits.
        const holders = yield* Effect.forEach(Array.from({ length: wanted }), () =>
          Effect.flatMap(SqlClient.SqlClient, (client) => client.withTransaction(Effect.zipRight(client`SELECT 1`, Deferred.await(release)))).pipe(
            Effect.provide(pool),
            Effect.fork
          )
        )
        const open = sql<{ n: number }>`
          SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = ${applicationName}`
        yield* eventually(Effect.map(open, ([row]) => row!.n >= Db.DEFAULT_MAX_CONNECTIONS), "the pool is full")
        expect((yield* open)[0]!.n).toBe(Db.DEFAULT_MAX_CONNECTIONS)
        expect(Db.DEFAULT_MAX_CONNECTIONS).toBe(Worker.connectionsNeeded({}) + 2)
        yield* Deferred.succeed(release, undefined)
        yield* Effect.forEach(holders, Fiber.join)
      }).pipe(Effect.scoped))
  })
})

function it_connectionsNeeded() {
  layer(Layer.empty)((it) => {
    it.effect("connectionsNeeded: one per handler slot, the statements in flight (at least 2), heartbeat, rescue, prune and one spare", () =>
      Effect.sync(() => {
        expect(Worker.connectionsNeeded({})).toBe(5 + 2 + 4)
        expect(Worker.connectionsNeeded({ concurrency: 1 })).toBe(1 + 2 + 4)
        // A claim takes at most batchSize jobs: enough statements to claim for every slot and prefetched job at once.
        expect(Worker.connectionsNeeded({ concurrency: 5, prefetch: 5 })).toBe(5 + 2 + 4)
        expect(Worker.connectionsNeeded({ concurrency: 50 })).toBe(50 + 10 + 4)
        expect(Worker.connectionsNeeded({ concurrency: 50, prefetch: 50, batchSize: 20 })).toBe(50 + 5 + 4)
      }))
  })
}
