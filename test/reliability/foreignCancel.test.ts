// A watched statement past its answer timeout has a CancelRequest on its way (answerWatch.ts). A 57014 that
// comes back keeps the connection only if the server confirmed that cancel first: a 57014 may be another's
// (here an operator's pg_cancel_backend, or a statement_timeout), and the connection was given back to the
// pool while the watch's CancelRequest, slow to arrive, was still on its way, to end the next statement it
// ran. And a statement of skiplock's own interrupted then leaves no cancel behind either. Found by a review.
// Real clock; the CancelRequest's connection takes 600 ms.
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Layer, TestServices } from "effect"
import pg from "pg"
import * as Db from "../../src/Db.js"
import * as DirectStatements from "../../src/internal/directStatements.js"
import { WATCHED } from "../../src/internal/preparedStatements.js"
import { sqlErrorCode } from "../../src/internal/sqlErrorText.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { slowToConnectProxy } from "../support/proxy.js"

// A pool of two connections whose CancelRequests take 600 ms to arrive, answer timeout 400 ms.
const slowCancels = (url: string) =>
  Effect.flatMap(slowToConnectProxy(url, 600), (proxy) =>
    Layer.build(Db.layer({ url: proxy.url, maxConnections: 2, answerTimeout: "400 millis", connectTimeout: "5 seconds" })))

const outcomes = (exits: ReadonlyArray<Exit.Exit<unknown, unknown>>) =>
  exits.map((exit) => (Exit.isFailure(exit) ? sqlErrorCode(exit.cause._tag === "Fail" ? exit.cause.error : undefined) ?? "failed" : "ok"))

describe("a watched statement past its answer timeout, whose cancel is slow to arrive", () => {
  it.layer(TestDatabase.layer({ maxConnections: 2 }), { timeout: 60_000 })((it) => {
    it.effect("ended by another's cancel meanwhile, gives back no connection that the late cancel would hit", () =>
      Effect.scoped(Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const context = yield* slowCancels(url)
        const operator = new pg.Client({ connectionString: url })
        yield* Effect.acquireRelease(Effect.promise(() => operator.connect()), () => Effect.promise(() => operator.end()))
        yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const probe = sql<{ pid: number }>`SELECT pg_backend_pid() AS pid, pg_sleep(1.5) IS NULL AS slept`
          yield* Effect.all([probe, probe], { concurrency: 2 }) // both connections opened
          // Its answer timeout passes at 400 ms and the watch's CancelRequest leaves (it lands at ~1 s); at 450 ms
          // an operator cancels the statement: a 57014 that is not the watch's.
          const watched = yield* Effect.fork(Effect.exit(sql`${sql.literal(WATCHED)} SELECT pg_sleep(5) AS foreign_cancel_probe`))
          yield* Effect.sleep("450 millis")
          yield* Effect.promise(() =>
            operator.query("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%AS foreign_cancel_probe%' AND pid <> pg_backend_pid()"))
          expect(outcomes([yield* Fiber.join(watched)])).toEqual(["57014"])
          // The next statements on the pool's two connections, one of them the cancelled statement's.
          expect(outcomes(yield* Effect.all([Effect.exit(probe), Effect.exit(probe)], { concurrency: 2 }))).toEqual(["ok", "ok"])
        }).pipe(Effect.provide(context), Effect.scoped)
      })).pipe(TestServices.provideLive))

    it.effect("of skiplock's own, interrupted meanwhile, leaves no cancel on its way to a connection given back", () =>
      Effect.scoped(Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const context = yield* slowCancels(url)
        yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const run = yield* DirectStatements.make
          const probe = run(sql<{ pid: number }>`SELECT pg_backend_pid() AS pid, pg_sleep(1.5) IS NULL AS slept`)
          yield* Effect.all([probe, probe], { concurrency: 2 })
          // Its answer timeout passes at 400 ms; at 450 ms the statement is interrupted (the worker stops).
          const watched = yield* Effect.fork(run(sql`${sql.literal(WATCHED)} SELECT pg_sleep(5)`))
          yield* Effect.sleep("450 millis")
          yield* Fiber.interrupt(watched)
          expect(outcomes(yield* Effect.all([Effect.exit(probe), Effect.exit(probe)], { concurrency: 2 }))).toEqual(["ok", "ok"])
        }).pipe(Effect.provide(context), Effect.scoped)
      })).pipe(TestServices.provideLive))
  })
})
