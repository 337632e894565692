/**
 * The database connection: a PgClient (which is also the SqlClient every
 * skiplock module uses). Column names are never transformed, because
 * @effect/sql-pg would rewrite the keys inside jsonb payloads too; queries
 * alias their columns to camelCase instead.
 *
 * The pool is built here rather than by @effect/sql-pg so that skiplock's
 * job-path statements can be named prepared statements (preparedStatements.ts).
 */
import { PgClient } from "@effect/sql-pg"
import { SqlError } from "@effect/sql/SqlError"
import { Config, Duration, Effect, Layer, Redacted } from "effect"
import pg from "pg"
import { PreparingClient } from "./internal/preparedStatements.js"

/**
 * The pool's size unless told otherwise: what a worker with the default options may hold at once
 * (`Worker.connectionsNeeded({})`, 11) and two for the application's own statements, as the service sizes it.
 */
export const DEFAULT_MAX_CONNECTIONS = 13

export interface DbOptions {
  readonly url: Redacted.Redacted<string> | string
  /** Default DEFAULT_MAX_CONNECTIONS (13). */
  readonly maxConnections?: number
  readonly applicationName?: string
  readonly connectTimeout?: Duration.DurationInput
  /**
   * Send skiplock's job-path statements as named prepared statements (default true). Turn off
   * behind a connection pooler that does not keep them per client (PgBouncer in transaction
   * mode before 1.21).
   */
  readonly preparedStatements?: boolean
}

/** A pg pool on the given URL, connected once (so a bad URL fails here), ended with the scope. */
const acquirePool = (options: DbOptions) =>
  Effect.gen(function* () {
    const connectTimeout = Duration.decode(options.connectTimeout ?? Duration.seconds(5))
    const pool = new pg.Pool({
      connectionString: typeof options.url === "string" ? options.url : Redacted.value(options.url),
      max: options.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
      application_name: options.applicationName ?? "skiplock",
      connectionTimeoutMillis: Duration.toMillis(connectTimeout),
      ...(options.preparedStatements === false ? {} : { Client: PreparingClient })
    })
    // A pooled connection that breaks while idle is dropped by the pool; statements report their own errors.
    pool.on("error", () => undefined)
    yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () => pool.query("SELECT 1"),
        catch: (cause) => new SqlError({ cause, message: "PgClient: Failed to connect" })
      }),
      () => Effect.promise(() => pool.end()).pipe(Effect.interruptible, Effect.timeoutOption(Duration.seconds(1)))
    ).pipe(
      Effect.timeoutFail({
        duration: connectTimeout,
        onTimeout: () => new SqlError({ cause: new Error("Connection timed out"), message: "PgClient: Connection timed out" })
      })
    )
    return pool
  })

/** A PgClient layer for the given database URL. */
export const layer = (options: DbOptions) =>
  PgClient.layerFromPool({
    acquire: acquirePool(options),
    applicationName: options.applicationName ?? "skiplock"
  })

/** A PgClient layer for `DATABASE_URL`. */
export const layerFromEnv = Layer.unwrapEffect(
  Config.redacted("DATABASE_URL").pipe(Config.map((url) => layer({ url })))
)
