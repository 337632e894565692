// An interrupted statement of skiplock's own (directStatements.ts) is cancelled with a CancelRequest on a
// socket of its own and its connection closed, not given back. It was cancelled with pg_cancel_backend
// sent through the pool: with every connection busy that cancel waited in the pool's queue, the
// interruption gave up on it after 5 s and gave the connection back with the statement still running,
// and the queued cancel later ended whatever that backend ran by then: the statement of whoever got the
// connection next. Found by a review. Real clock.
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Option, TestServices } from "effect"
import type pg from "pg"
import * as Db from "../../src/Db.js"
import * as DirectStatements from "../../src/internal/directStatements.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"

describe("an interrupted direct statement on an exhausted pool", () => {
  it.layer(TestDatabase.layer({ maxConnections: 2 }), { timeout: 60_000 })((it) => {
    it.effect("does not cancel the next user's statement on its connection later", () =>
      Effect.scoped(Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const context = yield* Layer.build(Db.layer({ url, maxConnections: 2, connectTimeout: "10 seconds" }))
        yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const pool = Option.getOrThrow(yield* Effect.serviceOption(DirectStatements.DbPool)) // Db.layer provides it
          const run = yield* DirectStatements.make
          const ignore = () => undefined
          const held: Array<pg.PoolClient> = []
          yield* Effect.addFinalizer(() => Effect.sync(() => held.forEach((client) => client.release(true))))

          // Connection B: held by someone else (a handler, say) for a while.
          const b: pg.PoolClient = yield* Effect.promise(() => pool.connect())
          b.on("error", ignore)
          // Connection A: a direct statement that is then interrupted.
          const old = yield* Effect.fork(run(sql`SELECT pg_sleep(6) AS direct_late_cancel_old`))
          yield* Effect.sleep("300 millis")
          const oldPid = (yield* Effect.promise(() =>
            b.query<{ pid: number }>(`SELECT pid FROM pg_stat_activity WHERE query LIKE '%direct_late_cancel_old%' AND pid <> pg_backend_pid()`)
          )).rows[0]!.pid

          // Somebody waits for a connection (the pool is exhausted), then the direct statement is interrupted.
          const waiter = pool.connect()
          yield* Effect.fork(Fiber.interrupt(old))

          // After the cancel's 5 s the waiter gets A, and runs its own statement there.
          const w = yield* Effect.promise(() => waiter)
          w.on("error", ignore)
          held.push(w)
          const answer = w.query<{ pid: number }>(`SELECT pg_backend_pid() AS pid, pg_sleep(4) IS NULL AS slept`).then(
            (result) => ({ ok: true as const, pid: result.rows[0]!.pid }),
            (error: { code?: string; message?: string }) => ({ ok: false as const, code: error.code, message: error.message })
          )
          // B is given back meanwhile: the pool hands it to the pg_cancel_backend still waiting in its queue.
          yield* Effect.sleep("2 seconds")
          b.release()
          const outcome = yield* Effect.promise(() => answer)

          // The waiter's statement is not cancelled by the cancel meant for the statement before it (it was: 57014),
          // and runs on a new connection: the interrupted statement's was closed.
          expect(outcome).toEqual({ ok: true, pid: expect.any(Number) })
          expect(outcome.ok && outcome.pid).not.toBe(oldPid)
        }).pipe(Effect.provide(context), Effect.scoped)
      })).pipe(TestServices.provideLive))

    it.effect("is cancelled on the server at once, also while the pool has no free connection", () =>
      Effect.scoped(Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const context = yield* Layer.build(Db.layer({ url, maxConnections: 2 }))
        yield* Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const pool = Option.getOrThrow(yield* Effect.serviceOption(DirectStatements.DbPool)) // Db.layer provides it
        const run = yield* DirectStatements.make
        const b: pg.PoolClient = yield* Effect.promise(() => pool.connect())
        b.on("error", () => undefined)
        yield* Effect.addFinalizer(() => Effect.sync(() => b.release(true)))
        const old = yield* Effect.fork(run(sql`SELECT pg_sleep(20) AS direct_uncancelled_old`))
        yield* Effect.sleep("300 millis")
        // Interrupted while the pool has no free connection (B is held): it returned after 5 s, the statement
        // still running on a connection given back to the pool.
        const interrupting = Date.now()
        yield* Fiber.interrupt(old)
        expect(Date.now() - interrupting).toBeLessThan(2_000)
        yield* Effect.sleep("200 millis")
        const running = (yield* Effect.promise(() =>
          b.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%direct_uncancelled_old%' AND pid <> pg_backend_pid()`)
        )).rows[0]!.n
        expect(running).toBe(0)
        }).pipe(Effect.provide(context), Effect.scoped)
      })).pipe(TestServices.provideLive))
  })
})
