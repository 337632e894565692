/**
 * The service's database, ready for the worker:
 * - DATABASE_URL set: wait until the server answers (retrying with backoff and
 *   saying why), then require every migration to be applied ("run `npm run
 *   migrate`"); the service never changes a shared schema on its own.
 * - DATABASE_URL unset: start the embedded PostgreSQL (data under `.data/`)
 *   and apply the migrations, so `npm start` works on a bare machine.
 */
import * as Migrator from "../Migrator.js"
import * as Db from "../Db.js"
import { Context, Duration, Effect, Layer, Option, Redacted } from "effect"
import pg from "pg"
import { type DatabaseConfig } from "../config/ServiceConfig.js"
import { errorText, redactUrl } from "../internal/describe.js"
import { sqlErrorText } from "../internal/sqlErrorText.js"
import * as EmbeddedPostgres from "./EmbeddedPostgres.js"
import type { DataCheck } from "./jobs.js"
import { StartupError } from "./StartupError.js"

export interface DatabaseInfo {
  readonly url: Redacted.Redacted<string>
  /** The URL with its password masked, for logs and messages. */
  readonly display: string
  readonly embedded: boolean
}

export class Database extends Context.Tag("skiplock/app/Database")<Database, DatabaseInfo>() {}

export interface DatabaseOptions<R = never> {
  readonly config: DatabaseConfig
  /** The migration sets the application needs (core first). */
  readonly migrationSets: ReadonlyArray<string>
  /** Told what start-up is waiting for, for /readyz. */
  readonly onWaiting?: (detail: string) => Effect.Effect<void, never, R>
  readonly maxConnections?: number
  /** Run once the migrations are in place; each finding is logged as a warning (see AppJobs.checkData). */
  readonly checkData?: DataCheck
}

// A wrong password or database name does not fix itself: stop with the message instead of retrying.
const FATAL_SQLSTATES = new Set(["28P01", "28000", "3D000"])
// The same from the `pg` client itself, with no SQLSTATE: the server asks for a password the URL does not
// give ("SASL: SCRAM-SERVER-FIRST-MESSAGE: client password must be a string"), or SCRAM authentication failed.
const CLIENT_AUTH_FAILURE = /^SASL: |password must be a (non-empty )?string/
const NO_PASSWORD = /password must be a (non-empty )?string/

interface ProbeFailure {
  readonly reason: string
  readonly fatal: boolean
}

const probe = (url: string) =>
  Effect.tryPromise({
    try: async () => {
      const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 })
      client.on("error", () => undefined)
      try {
        await client.connect()
        await client.query("SELECT 1")
      } finally {
        await client.end().catch(() => undefined)
      }
    },
    catch: (error): ProbeFailure => {
      const message = String((error as { message?: unknown } | null)?.message ?? "")
      return {
        reason: NO_PASSWORD.test(message) ? `the server asks for a password and DATABASE_URL has none (${errorText(error)})` : errorText(error),
        fatal: FATAL_SQLSTATES.has(String((error as { code?: unknown } | null)?.code)) || CLIENT_AUTH_FAILURE.test(message)
      }
    }
  })

/** Waits until the server answers: 1 s, 2 s, 4 s … at most 30 s between tries, forever; fails at once on a refused login. */
export const waitForDatabase = <R>(url: string, onWaiting: (detail: string) => Effect.Effect<void, never, R>) =>
  Effect.gen(function* () {
    const display = redactUrl(url)
    for (let attempt = 1; ; attempt++) {
      const result = yield* Effect.either(probe(url))
      if (result._tag === "Right") {
        if (attempt > 1) yield* Effect.logInfo(`database ${display} is reachable`)
        return
      }
      const { reason, fatal } = result.left
      if (fatal) return yield* new StartupError({ message: `the database ${display} refused the connection: ${reason}; check DATABASE_URL` })
      const delay = Duration.seconds(Math.min(2 ** (attempt - 1), 30))
      yield* Effect.logWarning(`cannot reach the database ${display}: ${reason}; retrying in ${Duration.format(delay)} (attempt ${attempt})`)
      yield* onWaiting(`waiting for the database ${display}: ${reason}`)
      yield* Effect.sleep(delay)
    }
  })

const requireMigrations = (sets: ReadonlyArray<string>, display: string) =>
  Effect.gen(function* () {
    const missing = yield* Migrator.pending(sets)
    if (missing.length > 0) {
      return yield* new StartupError({
        message: `the database ${display} is missing ${missing.length} migration(s) (${missing.join(", ")}): run \`npm run migrate\` with the same DATABASE_URL, then start again`
      })
    }
    // Applied from another text than this version's: its SQL functions may not be what this code calls.
    const changed = yield* Migrator.changed(sets)
    if (changed.length > 0) {
      return yield* new StartupError({
        message: `the database ${display} applied ${changed.length} migration(s) from a text other than this version's (${changed.join(", ")}): ` +
          "a migration was changed after it was applied; deploy the version that applied it, or add a new migration instead of changing one"
      })
    }
  })

const applyMigrations = (sets: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const applied = yield* Migrator.migrate(sets)
    yield* Effect.logInfo(applied.length === 0 ? "migrations are up to date" : `applied ${applied.length} migration(s): ${applied.join(", ")}`)
  })

const warnAbout = (checkData: DatabaseOptions["checkData"]) =>
  checkData === undefined ? Effect.void : Effect.flatMap(checkData, (findings) => Effect.forEach(findings, (finding) => Effect.logWarning(finding), { discard: true }))

const toStartupError = (error: { readonly message: string }) =>
  error instanceof StartupError ? error : new StartupError({ message: error.message, cause: error })

/** The PgClient (also the SqlClient) and what it points at, or a StartupError that says why not. */
export const layer = <R = never>(options: DatabaseOptions<R>) =>
  Layer.unwrapScoped(
    Effect.gen(function* () {
      const onWaiting: (detail: string) => Effect.Effect<void, never, R> = options.onWaiting ?? (() => Effect.void)
      const maxConnections = options.maxConnections ?? 10
      if (Option.isSome(options.config.url)) {
        const url = options.config.url.value
        const display = redactUrl(Redacted.value(url))
        yield* onWaiting(`connecting to the database ${display}`)
        yield* waitForDatabase(Redacted.value(url), onWaiting)
        // Said at once: the last failed try's reason ("waiting for the database …: …") no longer holds.
        yield* onWaiting(`the database ${display} answers; checking its migrations`)
        return Db.layer({ url, maxConnections, preparedStatements: options.config.preparedStatements, answerTimeout: options.config.answerTimeout }).pipe(
          Layer.tap((context) => requireMigrations(options.migrationSets, display).pipe(Effect.zipRight(warnAbout(options.checkData)), Effect.provide(context))),
          Layer.merge(Layer.succeed(Database, { url, display, embedded: false }))
        )
      }
      yield* onWaiting("starting the embedded PostgreSQL")
      const server = yield* EmbeddedPostgres.start({ dataDir: options.config.dataDir, port: options.config.embeddedPort })
      yield* Effect.logInfo(
        `DATABASE_URL is not set: using the embedded PostgreSQL on 127.0.0.1:${server.port} (data in ${server.dataDirectory}); connect with: psql ${server.url}`
      )
      yield* onWaiting("the embedded PostgreSQL runs; applying its migrations")
      return Db.layer({ url: server.url, maxConnections, preparedStatements: options.config.preparedStatements, answerTimeout: options.config.answerTimeout }).pipe(
        Layer.tap((context) => applyMigrations(options.migrationSets).pipe(Effect.zipRight(warnAbout(options.checkData)), Effect.provide(context))),
        Layer.merge(Layer.succeed(Database, { url: Redacted.make(server.url), display: server.url, embedded: true }))
      )
    })
  ).pipe(
    Layer.mapError((error) =>
      error._tag === "SqlError" ? new StartupError({ message: `cannot use the database: ${sqlErrorText(error)}`, cause: error }) : toStartupError(error)
    )
  )
