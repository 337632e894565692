// The kit's layer: a fresh migrated database from the test chain, the
// TestClock set to the wall-clock time, checks of its configuration, cleanup.
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Clock, Context, Duration, Effect, Exit, Layer, Schema } from "effect"
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import pg from "pg"
import { Handler, JobDefinition, JobQueue, Migrator } from "../../src/index.js"
import { SkiplockTest, TestDatabase } from "../../src/testing/index.js"
import { ADMIN_URL_ENV } from "../../src/testing/TestDatabase.js"
import { ORG, Report } from "./support.js"

const Receipt = JobDefinition.make("send_receipt", Schema.Struct({ invoiceId: Schema.String }))

const withMigrationFolder = (files: Record<string, string>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const folder = join(mkdtempSync(join(tmpdir(), "skiplock-kit-")), "receipts")
      mkdirSync(folder)
      for (const [name, sql] of Object.entries(files)) writeFileSync(join(folder, name), sql)
      return folder
    }),
    (folder) => Effect.sync(() => rmSync(join(folder, ".."), { recursive: true, force: true }))
  )

const databaseExists = (name: string) =>
  Effect.promise(async () => {
    const client = new pg.Client({ connectionString: process.env[ADMIN_URL_ENV] })
    await client.connect()
    try {
      return (await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [name])).rowCount === 1
    } finally {
      await client.end()
    }
  })

describe("SkiplockTest.layer", () => {
  it.effect("sets the TestClock to the wall-clock time, or to startAt", () =>
    Effect.gen(function* () {
      const before = Date.now()
      const now = yield* Effect.provide(Clock.currentTimeMillis, SkiplockTest.layer({ handlers: [] }))
      expect(now).toBeGreaterThanOrEqual(before)
      expect(now).toBeLessThanOrEqual(Date.now())
      const startAt = new Date("2025-04-01T08:00:00.000Z")
      const job = yield* JobQueue.enqueueJob(Report, { month: "2025-03" }, { organizationId: ORG }).pipe(Effect.provide(SkiplockTest.layer({ handlers: [], startAt })))
      expect(job.runAt).toEqual(startAt)
    }))

  it.scoped("applies your migrations after the core ones, and drops the database when its scope closes", () =>
    Effect.gen(function* () {
      const folder = yield* withMigrationFolder({
        "0001_receipts.sql": `INSERT INTO job_types (name) VALUES ('send_receipt');
                              CREATE TABLE receipts (invoice_id text PRIMARY KEY);`
      })
      const sent: Array<string> = []
      const receipt = Handler.make(Receipt, { run: (payload) => Effect.sync(() => sent.push(payload.invoiceId)) })
      const name = yield* Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`INSERT INTO receipts VALUES ('inv-1')`
        yield* JobQueue.enqueueJob(Receipt, { invoiceId: "inv-1" }, { organizationId: ORG })
        yield* SkiplockTest.drain()
        expect(sent).toEqual(["inv-1"])
        const database = yield* TestDatabase
        expect(yield* databaseExists(database.name)).toBe(true)
        return database.name
        // The core set listed again is applied once.
      }).pipe(Effect.provide(SkiplockTest.layer({ handlers: [receipt], migrations: [Migrator.coreMigrations, folder] })))
      expect(yield* databaseExists(name)).toBe(false)
    }))

  it.effect("refuses handlers whose job type has no row in job_types, unless registerJobTypes is set", () => {
    const receipt = Handler.make(Receipt, { run: () => Effect.void })
    return Effect.gen(function* () {
      const exit = yield* Effect.exit(Effect.provide(Effect.void, SkiplockTest.layer({ handlers: [receipt] })))
      expect(Exit.isFailure(exit) && exit.cause.toString()).toContain(
        `job type(s) "send_receipt" have no row in job_types, so enqueueing them would fail`
      )
      const run = yield* SkiplockTest.runJob(receipt, { invoiceId: "inv-1" }).pipe(
        Effect.provide(SkiplockTest.layer({ handlers: [receipt], registerJobTypes: true }))
      )
      expect(run.outcome._tag).toBe("Completed")
    })
  })

  it.effect("refuses two handlers for one job type", () => {
    const a = Handler.make(Report, { run: () => Effect.void })
    return Effect.gen(function* () {
      const error = yield* Effect.flip(Effect.provide(Effect.void, SkiplockTest.layer({ handlers: [a, a] })))
      expect(error.message).toBe(`two handlers for job type "report_generation"`)
      // A timeout the worker refuses (the TestClock would fire it; a real timer never would).
      const month = Handler.make(Report, { run: () => Effect.void, timeout: Duration.days(25) })
      const long = yield* Effect.flip(Effect.provide(Effect.void, SkiplockTest.layer({ handlers: [month] })))
      expect(long.message).toBe(`the handler for "report_generation" has a timeout of 25d; a handler's timeout must be from 1ms to 24d (a timer holds no longer)`)
    })
  })

  it.effect("refuses a retryBackoff the worker refuses, as the worker does, instead of taking it for 0 or failing at the first retry", () =>
    Effect.gen(function* () {
      const refusal = (retryBackoff: Duration.DurationInput) =>
        Effect.flip(Effect.provide(Effect.void, SkiplockTest.layer({ handlers: [], retryBackoff })))
      expect(yield* refusal("-5 seconds")).toMatchObject({
        _tag: "SkiplockTestSetupError",
        message: `retryBackoff must be a duration of at most 24d, got "-5 seconds"`
      })
      expect((yield* refusal(Infinity)).message).toBe("retryBackoff must be a duration of at most 24d, got Infinity")
      expect((yield* refusal("30 days")).message).toBe(`retryBackoff must be a duration of at most 24d, got "30 days"`)
    }))

  it.live("needs the TestClock, and says so", () =>
    Effect.gen(function* () {
      const exit = yield* Effect.exit(Effect.provide(Effect.void, SkiplockTest.layer({ handlers: [] })))
      expect(Exit.isFailure(exit) && exit.cause.toString()).toContain("SkiplockTest needs the TestClock")
    }))

  it.effect("a row inserted by hand is stamped by the database's now(), ahead of the TestClock, until syncClock", () => {
    let runs = 0
    const report = Handler.make(Report, { run: () => Effect.sync(() => runs++) })
    return Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      // The runbook's SQL: no run_at, so the database's now().
      const [row] = yield* sql<{ id: string }>`
        INSERT INTO job_queue (organization_id, job_type, payload, status)
        VALUES (${ORG}, 'report_generation', '{"month":"2025-03"}', 'pending') RETURNING id`
      const before = yield* SkiplockTest.drain()
      expect(runs).toBe(0)
      expect(before.waiting[0]).toMatchObject({ job: { id: row!.id }, waiting: { _tag: "Scheduled" } })
      expect(before.waiting[0]!.description).toContain("call SkiplockTest.syncClock first")

      yield* SkiplockTest.syncClock
      const after = yield* SkiplockTest.drain()
      expect(after.completed.map((drained) => drained.job.id)).toEqual([row!.id])
    }).pipe(Effect.provide(SkiplockTest.layer({ handlers: [report], startAt: new Date(Date.now() - 60_000) })))
  })

  it.scoped("gives the test the services it was given for its handlers, the same the jobs run with, and leaves the test its own scope", () => {
    class Ledger extends Context.Tag("Ledger")<Ledger, { readonly posted: Array<string> }>() {}
    const post = Handler.make(Report, { run: (payload) => Effect.map(Ledger, (ledger) => void ledger.posted.push(payload.month)) })
    const kit = SkiplockTest.layer({ handlers: [post] }).pipe(Layer.provide(Layer.sync(Ledger, () => ({ posted: [] }))))
    const order: Array<string> = []
    return Effect.gen(function* () {
      yield* Effect.gen(function* () {
        yield* Effect.addFinalizer(() => Effect.sync(() => order.push("the test's scope closed")))
        // Ledger is not provided again: the layer's is the test's.
        const run = yield* SkiplockTest.runJob(post, { month: "2025-03" })
        expect(run.outcome._tag).toBe("Completed")
        expect((yield* Ledger).posted).toEqual(["2025-03"])
      }).pipe(Effect.provide(kit))
      order.push("the layer closed")
      expect(order).toEqual(["the layer closed"])
    })
  })
})

// One layer for several tests: one database and one TestClock; reset empties the queue between them.
describe("SkiplockTest.layer shared through it.layer", () => {
  let runs = 0
  const report = Handler.make(Report, { run: () => Effect.sync(() => runs++) })
  it.layer(SkiplockTest.layer({ handlers: [report] }))((it) => {
    it.effect("runs on the block's TestClock", () =>
      Effect.gen(function* () {
        yield* SkiplockTest.reset
        const t0 = yield* Clock.currentTimeMillis
        expect(Math.abs(t0 - Date.now())).toBeLessThan(120_000)
        yield* SkiplockTest.failNext(report, 1, new Error("down"))
        yield* JobQueue.enqueueJob(Report, { month: "2025-03" }, { organizationId: ORG })
        const result = yield* SkiplockTest.drain({ maxAdvance: "1 minute" })
        expect(result.completed).toHaveLength(1)
        expect((yield* Clock.currentTimeMillis) - t0).toBe(30_000)
      }))

    it.effect("starts from an empty queue after reset", () =>
      Effect.gen(function* () {
        yield* SkiplockTest.failNext(report, 1, new Error("left over"))
        yield* SkiplockTest.reset
        expect(yield* SkiplockTest.enqueued()).toEqual([])
        expect(yield* SkiplockTest.attempts).toEqual([])
        expect(yield* SkiplockTest.remainingFailures(report)).toBe(0)
      }))
  })
})

