// skiplock's own statements run straight on a connection of Db.layer's pool when no
// transaction is open, and through @effect/sql otherwise (internal/directStatements.ts):
// which way each one went (the `sql.execute` span @effect/sql makes), that one inside a
// transaction sees the transaction's own rows, that an interrupted one is cancelled on
// the server and its connection given back, and that a refused one fails as
// @effect/sql-pg's statements fail.
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, TestServices } from "effect"
import * as DirectStatements from "../../src/internal/directStatements.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { notingTracer } from "../support/spanNames.js"

/** Runs `effect` with a tracer that notes the name of every span started in it. */
const spanNames = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const { tracer, names } = yield* notingTracer
    const result = yield* Effect.withTracer(effect, tracer)
    return { result, names }
  })

const withoutPool = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.mapInputContext(effect, (context: Context.Context<R>) => Context.omit(DirectStatements.DbPool)(context) as Context.Context<R>)

describe("skiplock's statements outside @effect/sql", () => {
  it.layer(TestDatabase.layer({ maxConnections: 2 }), { timeout: 30_000 })((it) => {
    it.effect("go straight to the pool outside a transaction, through @effect/sql inside one or without Db.layer's pool", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const run = yield* DirectStatements.make
        const one = run(sql<{ n: number }>`SELECT ${1}::int AS n`)

        const direct = yield* spanNames(one)
        expect(direct.result).toEqual([{ n: 1 }])
        expect(direct.names).toEqual([])

        const inTransaction = yield* spanNames(sql.withTransaction(one))
        expect(inTransaction.result).toEqual([{ n: 1 }])
        expect(inTransaction.names).toContain("sql.execute")

        const runWithoutPool = yield* withoutPool(DirectStatements.make)
        const viaEffectSql = yield* spanNames(runWithoutPool(sql<{ n: number }>`SELECT ${2}::int AS n`))
        expect(viaEffectSql.result).toEqual([{ n: 2 }])
        expect(viaEffectSql.names).toEqual(["sql.execute"])
      }))

    it.effect("inside a transaction, see the transaction's own rows", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const run = yield* DirectStatements.make
        yield* sql`CREATE TABLE direct_probe (id int)`
        const count = run(sql<{ n: number }>`SELECT count(*)::int AS n FROM direct_probe`)
        const seen = yield* sql.withTransaction(Effect.zipRight(sql`INSERT INTO direct_probe VALUES (1)`, count)).pipe(
          Effect.zipLeft(sql`DELETE FROM direct_probe`)
        )
        expect(seen).toEqual([{ n: 1 }])
        expect(yield* count).toEqual([{ n: 0 }])
      }))

    it.effect("when interrupted, are cancelled on the server and give their connection back", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const run = yield* DirectStatements.make
        const started = Date.now()
        const slept = yield* run(sql`SELECT pg_sleep(30) AS direct_probe_sleep`).pipe(Effect.timeout("300 millis"), Effect.option, TestServices.provideLive)
        expect(slept._tag).toBe("None")
        // Both connections are free again (one held by a sleep that went on would leave one), and the sleep is gone.
        const [a, b] = yield* Effect.all([
          run(sql<{ pid: number }>`SELECT pg_backend_pid() AS pid, pg_sleep(0.2)`),
          run(sql<{ pid: number }>`SELECT pg_backend_pid() AS pid, pg_sleep(0.2)`)
        ], { concurrency: 2 })
        expect(a![0]!.pid).not.toBe(b![0]!.pid)
        const sleeping = yield* sql<{ n: number }>`
          SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%direct_probe_sleep%' AND pid <> pg_backend_pid()`
        expect(sleeping).toEqual([{ n: 0 }])
        expect(Date.now() - started).toBeLessThan(10_000)
      }))

    it.effect("that the server refuses fail with @effect/sql-pg's SqlError and the server's code", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const run = yield* DirectStatements.make
        const error = yield* run(sql`SELECT 1 / ${0}::int`).pipe(Effect.flip)
        expect(error._tag).toBe("SqlError")
        expect(error.message).toBe("Failed to execute statement")
        expect((error.cause as { code?: string }).code).toBe("22012")
      }))
  })
})
