/**
 * A fresh, migrated database per test file (or per layer), dropped afterwards,
 * so concurrent test runs never see each other's rows. The server comes from
 * `SKIPLOCK_TEST_ADMIN_URL` (set by our vitest globalSetup) or, without it,
 * from the PostgresServer chain itself.
 */
import { PgClient } from "@effect/sql-pg"
import type { SqlClient, SqlError } from "@effect/sql"
import { Clock, Context, Data, Duration, Effect, Layer, Schedule, Scope } from "effect"
import { randomBytes } from "node:crypto"
import pg from "pg"
import * as Db from "../Db.js"
import { coreMigrations, migrate, type MigrationError } from "../Migrator.js"
import {
  acquirePostgresServer,
  boundedRelease,
  errorText,
  type NoPostgresServer,
  type PostgresServerOptions,
  redactUrl
} from "./PostgresServer.js"

/** The env var the vitest globalSetup uses to hand the server's admin URL to test workers. */
export const ADMIN_URL_ENV = "SKIPLOCK_TEST_ADMIN_URL"

export interface TestDatabaseInfo {
  /** Connection URL of the fresh database (for child processes, CLIs, a second client). */
  readonly url: string
  /** Its name, `skiplock_test_<random>`. */
  readonly name: string
}

export interface TestDatabaseOptions {
  /** Migration folders applied in order (default `[coreMigrations]`). */
  readonly migrations?: ReadonlyArray<string>
  /** Server admin URL; default `process.env.SKIPLOCK_TEST_ADMIN_URL`, else the PostgresServer chain. */
  readonly adminUrl?: string
  /** Options for the PostgresServer chain when it has to run. */
  readonly server?: PostgresServerOptions
  /** How long dropping the database may take before it is abandoned (default 15 s). */
  readonly dropTimeout?: Duration.DurationInput
  /** Pool size of the provided PgClient (default Db.DEFAULT_MAX_CONNECTIONS, 13, as Db.layer's). */
  readonly maxConnections?: number
}

export class TestDatabaseError extends Data.TaggedError("TestDatabaseError")<{
  readonly message: string
  readonly cause?: unknown
}> {}

/** The fresh database, as a service. */
export class TestDatabase extends Context.Tag("skiplock/testing/TestDatabase")<TestDatabase, TestDatabaseInfo>() {
  /** TestDatabase plus a `PgClient` / `SqlClient` connected to it. */
  static readonly layer = (options: TestDatabaseOptions = {}) => layer(options)
}

const withAdminClient = <A>(adminUrl: string, what: string, run: (client: pg.Client) => Promise<A>) =>
  Effect.tryPromise({
    try: async () => {
      const client = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 10_000 })
      client.on("error", () => undefined)
      try {
        await client.connect()
        return await run(client)
      } finally {
        await client.end().catch(() => undefined)
      }
    },
    catch: (cause) => new TestDatabaseError({ message: `cannot ${what} on ${redactUrl(adminUrl)}: ${errorText(cause)}`, cause })
  })

const createDatabase = (adminUrl: string, name: string) =>
  withAdminClient(adminUrl, `create database ${name}`, (client) => client.query(`CREATE DATABASE "${name}"`)).pipe(
    // Concurrent CREATE DATABASE may find the template busy for a moment.
    Effect.retry({
      schedule: Schedule.spaced(Duration.millis(250)),
      times: 8,
      while: (error) => /being accessed by other users/.test(error.message)
    })
  )

const dropDatabase = (adminUrl: string, name: string) =>
  withAdminClient(adminUrl, `drop database ${name}`, async (client) => {
    await client.query(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
      [name]
    )
    await client.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)
  })

const resolveAdminUrl = (options: TestDatabaseOptions) => {
  const fromEnv = process.env[ADMIN_URL_ENV]
  if (options.adminUrl !== undefined) return Effect.succeed(options.adminUrl)
  if (fromEnv !== undefined && fromEnv !== "") return Effect.succeed(fromEnv)
  return Effect.map(acquirePostgresServer(options.server), (server) => server.adminUrl)
}

const withDatabase = (adminUrl: string, name: string) => {
  const url = new URL(adminUrl)
  url.pathname = `/${name}`
  return url.toString()
}

// The service's own client (Db.layer): the same pool, prepared statements included.
const clientLayer = (url: string, options: TestDatabaseOptions) =>
  Db.layer({
    url,
    applicationName: "skiplock-test",
    ...(options.maxConnections !== undefined ? { maxConnections: options.maxConnections } : {})
  })

// Creating, connecting to and dropping the database wait in real time (retries, timeouts), also under
// a TestClock that nothing moves: an `it.effect` test's layer would otherwise wait for ever.
const liveClock = Clock.make()
const onLiveClock = Effect.withClock(liveClock)

/**
 * Creates `skiplock_test_<random>`, applies the migrations and returns its URL;
 * the database is dropped (other sessions terminated) when the scope closes.
 */
export const acquireTestDatabase = (
  options: TestDatabaseOptions = {}
): Effect.Effect<TestDatabaseInfo, TestDatabaseError | NoPostgresServer | MigrationError | SqlError.SqlError, Scope.Scope> =>
  Effect.gen(function* () {
    const adminUrl = yield* resolveAdminUrl(options)
    const name = `skiplock_test_${randomBytes(6).toString("hex")}`
    yield* Effect.acquireRelease(createDatabase(adminUrl, name), () =>
      // (A finalizer runs with the clock of the fiber that closes the scope.)
      onLiveClock(boundedRelease(`dropping test database ${name}`, options.dropTimeout ?? Duration.seconds(15), dropDatabase(adminUrl, name)))
    )
    const url = withDatabase(adminUrl, name)
    yield* migrate(options.migrations ?? [coreMigrations]).pipe(Effect.provide(clientLayer(url, options)))
    return { url, name }
  }).pipe(onLiveClock, Effect.withSpan("TestDatabase.acquire"))

/** A fresh migrated database plus `PgClient` / `SqlClient` connected to it. */
export const layer = (
  options: TestDatabaseOptions = {}
): Layer.Layer<
  TestDatabase | PgClient.PgClient | SqlClient.SqlClient,
  TestDatabaseError | NoPostgresServer | MigrationError | SqlError.SqlError
> =>
  Layer.scopedContext(
    Effect.gen(function* () {
      const database = yield* acquireTestDatabase(options)
      const client = yield* Layer.build(clientLayer(database.url, options))
      return Context.add(client, TestDatabase, database)
    }).pipe(onLiveClock)
  )
