// The service warns when this machine's clock is off the database server's: leases are kept by each
// worker's clock (src/app/clockSkew.ts). The TestClock plays a machine whose clock is wrong.
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Logger, TestClock } from "effect"
import * as ClockSkew from "../../src/app/clockSkew.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"

const warningsOf = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const warnings: Array<string> = []
    const capture = Logger.make(({ logLevel, message }) => {
      if (logLevel._tag === "Warning") warnings.push(String(message))
    })
    yield* effect.pipe(Effect.provide(Logger.replace(Logger.defaultLogger, capture)))
    return warnings
  })

describe("clock skew", () => {
  it.layer(TestDatabase.layer())((it) => {
    it.effect("is measured against the database server's clock and warned about beyond 5 s, either way", () =>
      Effect.gen(function* () {
        yield* TestClock.setTime(Date.now())
        expect(Math.abs(yield* ClockSkew.measure)).toBeLessThan(1_000)
        expect(yield* warningsOf(ClockSkew.check)).toEqual([])

        yield* TestClock.setTime(Date.now() - 42_000)
        const behind = yield* warningsOf(ClockSkew.check)
        expect(behind).toHaveLength(1)
        expect(behind[0]).toMatch(/^this machine's clock is 4[12]\.\d s behind the database server's: .*Synchronize the clocks \(NTP\)$/)

        yield* TestClock.setTime(Date.now() + 8_000)
        expect((yield* warningsOf(ClockSkew.check))[0]).toMatch(/^this machine's clock is [78]\.\d s ahead of the database server's/)
      }))

    it.effect("a comparison that fails is one warning, its reason in the message (one string, for JSON logs)", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const messages: Array<unknown> = []
        const capture = Logger.make(({ logLevel, message }) => {
          if (logLevel._tag === "Warning") messages.push(message)
        })
        // Inside a transaction a failed statement has aborted, the comparison's query fails too.
        yield* sql.withTransaction(Effect.zipRight(Effect.ignore(sql`SELECT 1 / 0`), ClockSkew.check)).pipe(
          Effect.provide(Logger.replace(Logger.defaultLogger, capture))
        )
        expect(messages).toEqual([[expect.stringMatching(/^cannot compare this machine's clock with the database server's: current transaction is aborted/)]])
      }))
  })
})
