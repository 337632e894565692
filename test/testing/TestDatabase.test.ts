// TestDatabase: a fresh migrated database per layer, isolated from others,
// dropped on release even while other sessions are connected to it.
import { PgClient } from "@effect/sql-pg"
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Exit, Layer, Scope, TestServices } from "effect"
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import pg from "pg"
import { coreMigrations, readMigrationSet } from "../../src/Migrator.js"
import { acquireTestDatabase, ADMIN_URL_ENV, TestDatabase } from "../../src/testing/TestDatabase.js"

const adminUrl = (): string => process.env[ADMIN_URL_ENV]!

const databaseExists = (name: string) =>
  Effect.promise(async () => {
    const client = new pg.Client({ connectionString: adminUrl() })
    await client.connect()
    try {
      return (await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [name])).rowCount === 1
    } finally {
      await client.end()
    }
  })

const insertJob = (payload: unknown) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ id: string }>`INSERT INTO job_queue (organization_id, job_type, payload)
                        VALUES (gen_random_uuid(), 'billing_run', ${JSON.stringify(payload)}::jsonb) RETURNING id`)

const countJobs = Effect.flatMap(SqlClient.SqlClient, (sql) => sql<{ n: number }>`SELECT count(*)::int AS n FROM job_queue`).pipe(
  Effect.map((rows) => rows[0]!.n)
)

describe("TestDatabase", () => {
  it.layer(TestDatabase.layer())("a layer", (it) => {
    it.effect("is a fresh database with the core migrations applied", () =>
      Effect.gen(function* () {
        const database = yield* TestDatabase
        const sql = yield* SqlClient.SqlClient
        expect(database.name).toMatch(/^skiplock_test_[0-9a-f]{12}$/)
        const [current] = yield* sql<{ name: string }>`SELECT current_database() AS name`
        expect(current!.name).toBe(database.name)
        const [table] = yield* sql<{ exists: boolean }>`SELECT to_regclass('job_queue') IS NOT NULL AS exists`
        expect(table!.exists).toBe(true)
        const applied = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM skiplock_migrations WHERE set_name = 'core'`
        expect(applied[0]!.n).toBe(readMigrationSet(coreMigrations).length)
        expect(yield* countJobs).toBe(0)
      }))

    it.effect("provides PgClient too, and keeps jsonb keys as written", () =>
      Effect.gen(function* () {
        const client = yield* PgClient.PgClient
        const payload = { snake_key: { camelKey: 1, "kebab-key": [true] } }
        const [job] = yield* insertJob(payload)
        const [row] = yield* client<{ payload: unknown }>`SELECT payload FROM job_queue WHERE id = ${job!.id}`
        expect(row!.payload).toEqual(payload)
      }))

    it.effect("has a URL child processes can connect to", () =>
      Effect.gen(function* () {
        const database = yield* TestDatabase
        const rows = yield* Effect.promise(async () => {
          const client = new pg.Client({ connectionString: database.url })
          await client.connect()
          try {
            return (await client.query("SELECT current_database() AS name")).rows
          } finally {
            await client.end()
          }
        })
        expect(rows).toEqual([{ name: database.name }])
      }))
  })

  it.scoped("two test databases do not see each other's rows", () =>
    Effect.gen(function* () {
      const first = yield* Layer.build(TestDatabase.layer())
      const second = yield* Layer.build(TestDatabase.layer())
      expect(Context.get(first, TestDatabase).name).not.toBe(Context.get(second, TestDatabase).name)
      yield* insertJob({ n: 1 }).pipe(Effect.provide(first))
      yield* insertJob({ n: 2 }).pipe(Effect.provide(first))
      expect(yield* countJobs.pipe(Effect.provide(first))).toBe(2)
      expect(yield* countJobs.pipe(Effect.provide(second))).toBe(0)
    }))

  it.effect("drops the database on release, even with other sessions connected", () =>
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(TestDatabase.layer(), scope)
      const database = Context.get(context, TestDatabase)
      yield* insertJob({}).pipe(Effect.provide(context))
      expect(yield* databaseExists(database.name)).toBe(true)
      // A session the test "forgot" to close, like a killed child process would leave.
      const straggler = new pg.Client({ connectionString: database.url })
      straggler.on("error", () => undefined)
      yield* Effect.promise(() => straggler.connect())
      yield* Scope.close(scope, Exit.void)
      expect(yield* databaseExists(database.name)).toBe(false)
      yield* Effect.promise(() => straggler.end().catch(() => undefined))
    }))

  it.effect("is built under a TestClock nothing moves even when CREATE DATABASE must be retried (the template is busy)", () =>
    Effect.gen(function* () {
      // A session on template1 makes CREATE DATABASE fail ("being accessed by other users", after waiting 5 s
      // for it to leave) until it leaves; the retries wait in real time, not on this test's TestClock.
      const template = new URL(adminUrl())
      template.pathname = "/template1"
      const busy = new pg.Client({ connectionString: template.toString() })
      yield* Effect.promise(() => busy.connect())
      setTimeout(() => void busy.end(), 5_500)
      const scope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(TestDatabase.layer(), scope).pipe(
        Effect.raceFirst(TestServices.provideLive(Effect.sleep("15 seconds")).pipe(Effect.zipRight(Effect.dieMessage("the layer was not built within 15 s"))))
      )
      expect(yield* countJobs.pipe(Effect.provide(context))).toBe(0)
      yield* Scope.close(scope, Exit.void)
      expect(yield* databaseExists(Context.get(context, TestDatabase).name)).toBe(false)
    }))

  it.scoped("applies further migration folders after the core ones", () =>
    Effect.gen(function* () {
      const root = mkdtempSync(join(tmpdir(), "skiplock-migrations-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(root, { recursive: true, force: true })))
      const extras = join(root, "extras")
      mkdirSync(extras)
      writeFileSync(join(extras, "0001_widgets.sql"), "CREATE TABLE widgets (id int PRIMARY KEY, job_id uuid REFERENCES job_queue (id));\n")
      const database = yield* acquireTestDatabase({ migrations: [coreMigrations, extras] })
      const rows = yield* Effect.promise(async () => {
        const client = new pg.Client({ connectionString: database.url })
        await client.connect()
        try {
          return (await client.query("SELECT set_name, name FROM skiplock_migrations WHERE set_name = 'extras'")).rows
        } finally {
          await client.end()
        }
      })
      expect(rows).toEqual([{ set_name: "extras", name: "widgets" }])
    }))

  it.scoped("runs the PostgresServer chain itself when no admin URL is given", () =>
    Effect.gen(function* () {
      const saved = process.env[ADMIN_URL_ENV]
      yield* Effect.acquireRelease(
        Effect.sync(() => delete process.env[ADMIN_URL_ENV]),
        () => Effect.sync(() => (process.env[ADMIN_URL_ENV] = saved))
      )
      const database = yield* acquireTestDatabase({ server: { env: {}, testcontainers: false } })
      const port = (url: string) => new URL(url).port
      expect(port(database.url)).not.toBe(port(saved!))
      const rows = yield* Effect.promise(async () => {
        const client = new pg.Client({ connectionString: database.url })
        await client.connect()
        try {
          return (await client.query("SELECT count(*)::int AS n FROM job_queue")).rows
        } finally {
          await client.end()
        }
      })
      expect(rows).toEqual([{ n: 0 }])
    }), 120_000)

  it.effect("fails with TestDatabaseError when the server is unreachable", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(Effect.scoped(acquireTestDatabase({ adminUrl: "postgres://postgres@127.0.0.1:1/postgres" })))
      expect(error._tag).toBe("TestDatabaseError")
      expect(error.message).toMatch(/cannot create database skiplock_test_[0-9a-f]{12} on postgres:\/\/postgres@127\.0\.0\.1:1\/postgres: .*ECONNREFUSED/)
    }))
})
