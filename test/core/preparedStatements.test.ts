// skiplock's job-path statements are named prepared statements: parsed once
// per connection, then only executed; other statements stay unnamed; the
// setting turns it off; and a migration that changes what a prepared statement
// returns does not wedge it (pg_prepared_statements shows what each connection holds).
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import { Db, JobDefinition, JobQueue } from "../../src/index.js"
import { PREPARED } from "../../src/internal/preparedStatements.js"
import { sqlErrorText } from "../../src/internal/sqlErrorText.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { ORG } from "../support/jobs.js"

const Report = JobDefinition.make("report_generation", Schema.Struct({ n: Schema.Number }))

interface PreparedRow {
  readonly statement: string
  readonly executions: number
}

// What this connection has prepared (the pools below have one connection, so every statement shares it).
const preparedHere = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  sql<PreparedRow>`SELECT statement, (generic_plans + custom_plans)::int AS executions FROM pg_prepared_statements WHERE from_sql = false`
)

const enqueueThree = Effect.forEach([1, 2, 3], (n) => JobQueue.enqueue({ organizationId: ORG, jobType: "report_generation", payload: { n } }), {
  discard: true
}).pipe(Effect.provide(JobQueue.layer([Report])))

describe("prepared statements", () => {
  it.layer(TestDatabase.layer({ maxConnections: 1 }))((it) => {
    it.effect("an enqueue's insert is prepared once on the connection and executed each time; an unmarked statement is not prepared", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`SELECT ${1}::int AS unmarked`
        yield* enqueueThree
        const prepared = yield* preparedHere
        expect(prepared.filter((row) => row.statement.includes("unmarked"))).toEqual([])
        const inserts = prepared.filter((row) => row.statement.includes("INSERT INTO job_queue"))
        expect(inserts).toHaveLength(1)
        expect(inserts[0]!.statement.startsWith(PREPARED)).toBe(true)
        expect(inserts[0]!.executions).toBe(3)
      }))

    it.effect("a statement whose result columns a migration changed is prepared again: at once outside a transaction, on the next call inside one", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`CREATE TABLE evolving (id int PRIMARY KEY, a int)`
        yield* sql`INSERT INTO evolving VALUES (1, 10)`
        // SELECT * on purpose: its columns follow the table's.
        const read = sql<Record<string, number | null>>`${sql.literal(PREPARED)} SELECT * FROM evolving WHERE id = ${1}`
        expect(yield* read).toEqual([{ id: 1, a: 10 }])

        yield* sql`ALTER TABLE evolving ADD COLUMN b int DEFAULT 20`
        expect(yield* read).toEqual([{ id: 1, a: 10, b: 20 }])

        yield* sql`ALTER TABLE evolving ADD COLUMN c int DEFAULT 30`
        const inTransaction = yield* sql.withTransaction(read).pipe(Effect.flip)
        expect(sqlErrorText(inTransaction)).toContain("cached plan must not change result type")
        expect(yield* sql.withTransaction(read)).toEqual([{ id: 1, a: 10, b: 20, c: 30 }])
      }))
  })

  it.layer(TestDatabase.layer({ maxConnections: 1 }))((it) => {
    it.effect("with preparedStatements: false, nothing is prepared", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const unprepared = yield* Layer.build(Db.layer({ url, maxConnections: 1, preparedStatements: false }))
        yield* Effect.gen(function* () {
          yield* enqueueThree
          expect(yield* preparedHere).toEqual([])
        }).pipe(Effect.provide(unprepared))
        // The same on the default pool, to show the check can see them.
        yield* enqueueThree
        expect((yield* preparedHere).length).toBeGreaterThan(0)
      }).pipe(Effect.scoped))
  })
})
