// What counts as a lost connection (connectionLoss.ts): not 08P01 (protocol violation), which is also
// what a live server answers to a statement the handler got wrong (more than 65,535 parameters: the Bind
// message counts them in 16 bits). Such a job was released without counting its attempt, as if the
// database had gone away. Found by a review.
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { isConnectionError, isTransient } from "../../src/internal/connectionLoss.js"
import { sqlErrorCode } from "../../src/internal/sqlErrorText.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"

describe("a statement the server refuses as a protocol violation", () => {
  it.layer(TestDatabase.layer({ maxConnections: 2 }), { timeout: 30_000 })((it) => {
    it.effect("is the handler's failure, not a lost connection", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const values = Array.from({ length: 70_000 }, (_, i) => i)
        const error = yield* Effect.flip(sql`SELECT 1 WHERE 1 IN ${sql.in(values)}`)
        expect(sqlErrorCode(error)).toBe("08P01")
        // The connection is fine: the next statement on the pool answers.
        expect(yield* sql<{ n: number }>`SELECT 1::int AS n`).toEqual([{ n: 1 }])
        expect(isConnectionError(error)).toBe(false)
        expect(isTransient(error)).toBe(false)
      }))
  })
})
