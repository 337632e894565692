// skiplock's job-path statements are named prepared statements: parsed once
// per connection, then only executed; other statements stay unnamed; the
// setting turns it off; and a migration that changes what a prepared statement
// returns does not wedge it, nor a running worker's rescuer (pg_prepared_statements
// shows what each connection holds).
import { SqlClient } from "@effect/sql"
import { describe, expect, it, layer } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import { Db, Handler, JobDefinition, JobQueue, Worker } from "../../src/index.js"
import { PREPARED } from "../../src/internal/preparedStatements.js"
import { sqlErrorText } from "../../src/internal/sqlErrorText.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { jobStatus, ORG } from "../support/jobs.js"
import { eventually } from "../support/live.js"

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
  // Live clock: the worker's own rescuer, every 100 ms, on a pool of one connection, so the statement it prepared is the one refused.
  layer(TestDatabase.layer({ maxConnections: 1 }), { excludeTestServices: true })((it) => {
    it.scoped("a running worker carries on when a migration changes what one of its prepared statements returns", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const handler = Handler.make(Report, { run: () => Effect.void })
        // Listening would take a second connection; the poll finds the work.
        yield* Worker.make({
          handlers: [handler], workerId: "steady", concurrency: 1,
          listen: false, pollInterval: "100 millis", rescueInterval: "100 millis", heartbeatInterval: "1 second"
        })
        // A job whose worker died holding it (of a type this worker does not run): the rescuer gives it back.
        const abandoned = (n: number) =>
          Effect.gen(function* () {
            yield* sql`INSERT INTO job_queue (organization_id, job_type, payload, run_at)
                       VALUES (${ORG}, 'sepa_export', ${JSON.stringify({ n })}::jsonb, now() - ${n + 1} * interval '1 minute')`
            // Claimed before the jobs rescued earlier, which are pending again: its run_at is earlier.
            const [claimed] = yield* sql<{ id: string }>`SELECT id FROM claim_next_job('gone', ARRAY['sepa_export'], 1, now() - interval '1 minute', interval '1 second')`
            return claimed!.id
          })
        const rescued = (id: string) => Effect.map(jobStatus(id), (status) => status === "pending")
        yield* eventually(rescued(yield* abandoned(1)), "the first abandoned job was rescued")

        // The migration: rescue_expired_jobs returns dead_worker as varchar instead of text.
        const [definition] = yield* sql<{ def: string }>`SELECT pg_get_functiondef('rescue_expired_jobs'::regproc) AS def`
        const changed = definition!.def.replace("dead_worker text)", "dead_worker character varying)")
        expect(changed).not.toBe(definition!.def)
        yield* sql.withTransaction(Effect.zipRight(sql`DROP FUNCTION rescue_expired_jobs(text, timestamptz, integer)`, sql.unsafe(changed)))

        yield* eventually(rescued(yield* abandoned(2)), "the second abandoned job was rescued")
      }))
  })
})
