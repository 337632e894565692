/**
 * The database connection: a PgClient (which is also the SqlClient every
 * skiplock module uses). Column names are never transformed, because
 * @effect/sql-pg would rewrite the keys inside jsonb payloads too; queries
 * alias their columns to camelCase instead.
 *
 * The pool is built here rather than by @effect/sql-pg so that skiplock's
 * job-path statements can be named prepared statements (preparedStatements.ts).
 */
import type { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { SqlError } from "@effect/sql/SqlError"
import { Duration, Effect, Layer, Redacted } from "effect"
import pg from "pg"
import { DbPool } from "./internal/directStatements.js"
import { setLocalLockTimeout } from "./internal/lockTimeout.js"
import { durationRange } from "./internal/workerOptions.js"
import { ANSWER_TIMEOUT_RANGE, clientOptions, PreparingClient } from "./internal/preparedStatements.js"
import { LOCK_NOT_AVAILABLE, QUERY_CANCELED, sqlErrorCode } from "./internal/sqlErrorText.js"

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
  /**
   * How long one of the worker's bookkeeping statements (claim, completion, heartbeat, rescue, registration)
   * may go unanswered before it is cancelled, and its connection closed if the cancel gets no answer within
   * 2 s either: a connection whose network fell silent would otherwise hold it until TCP gives up (~15 minutes).
   * Default 30 s (those statements answer in milliseconds); from 100 ms to 1 hour.
   */
  readonly answerTimeout?: Duration.DurationInput
}

/**
 * A pg pool on the given URL, ended with the scope (in at most a second), and connected once, so a bad
 * URL fails here. The first statement is bounded as well as the connect: a server that accepts the login
 * and then never answers (a pooler with no server connection free) fails the start instead of hanging it.
 */
const acquirePool = (options: DbOptions) =>
  Effect.gen(function* () {
    const connectTimeout = Duration.decode(options.connectTimeout ?? Duration.seconds(5))
    if (options.answerTimeout !== undefined && !Duration.between(Duration.decode(options.answerTimeout), { minimum: ANSWER_TIMEOUT_RANGE.min, maximum: ANSWER_TIMEOUT_RANGE.max })) {
      return yield* Effect.dieMessage(`Db.layer: answerTimeout must be ${durationRange(ANSWER_TIMEOUT_RANGE)}, got ${Duration.format(Duration.decode(options.answerTimeout))}`)
    }
    const pool = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const pool = new pg.Pool({
          connectionString: typeof options.url === "string" ? options.url : Redacted.value(options.url),
          max: options.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
          application_name: options.applicationName ?? "skiplock",
          connectionTimeoutMillis: Duration.toMillis(connectTimeout),
          Client: PreparingClient,
          ...clientOptions(options)
        })
        // A pooled connection that breaks while idle is dropped by the pool; statements report their own errors.
        pool.on("error", () => undefined)
        return pool
      }),
      (pool) => Effect.promise(() => pool.end()).pipe(Effect.interruptible, Effect.timeoutOption(Duration.seconds(1)))
    )
    yield* Effect.tryPromise({
      try: async (signal) => {
        const client = await pool.connect()
        // Given back once; closed (release with an error) unless it answered, also when the start is
        // interrupted (while connecting, too).
        let released = false
        const ignore = () => undefined
        const release = (error?: Error) => {
          if (released) return
          released = true
          client.removeListener("error", ignore)
          client.release(error ?? false)
        }
        client.on("error", ignore)
        if (signal.aborted) return release(new Error("interrupted"))
        signal.addEventListener("abort", () => release(new Error("interrupted")), { once: true })
        try {
          // query_timeout is pg's per-query read timeout (missing from its types).
          await client.query({ text: "SELECT 1", query_timeout: Duration.toMillis(connectTimeout) } as pg.QueryConfig)
          release()
        } catch (error) {
          release(error instanceof Error ? error : new Error(String(error)))
          throw error
        }
      },
      catch: (cause) => new SqlError({ cause, message: "PgClient: Failed to connect" })
    }).pipe(
      Effect.timeoutFail({
        duration: connectTimeout,
        onTimeout: () => new SqlError({ cause: new Error("Connection timed out"), message: "PgClient: Connection timed out" })
      })
    )
    return pool
  })

/**
 * A PgClient layer for the given database URL. It also hands skiplock its pool (DbPool), on which the
 * worker's own statements run without @effect/sql's execution around them (internal/directStatements.ts).
 */
export const layer = (options: DbOptions): Layer.Layer<PgClient.PgClient | SqlClient.SqlClient, SqlError> =>
  Layer.unwrapScoped(Effect.map(acquirePool(options), (pool) => layerOnPool(pool, options.applicationName ?? "skiplock")))

/** A PgClient layer on a pool its caller owns, handing skiplock that pool too (DbPool). */
export const layerOnPool = (pool: pg.Pool, applicationName: string): Layer.Layer<PgClient.PgClient | SqlClient.SqlClient, SqlError> =>
  Layer.merge(PgClient.layerFromPool({ acquire: Effect.succeed(pool), applicationName }), Layer.succeed(DbPool, pool))

/**
 * Makes the statements of the current transaction wait at most `timeout` for a row or table lock,
 * instead of for ever (PostgreSQL's lock_timeout, local to the transaction). A wait past it fails with
 * an SqlError that `isLockTimeout` recognizes, for the caller to say what holds things up.
 */
export const withLockTimeout = (sql: SqlClient.SqlClient, timeout: Duration.DurationInput): Effect.Effect<void, SqlError> =>
  setLocalLockTimeout(sql, timeout)

/** Whether a statement failed because it waited for a lock longer than the lock timeout (SQLSTATE 55P03). */
export const isLockTimeout = (error: unknown): boolean =>
  (error as { _tag?: unknown } | null)?._tag === "SqlError" && sqlErrorCode(error) === LOCK_NOT_AVAILABLE

/**
 * Whether a statement was cancelled (SQLSTATE 57014): past its statement_timeout, or by pg_cancel_backend;
 * only the caller, knowing the timeout it set, can tell which.
 */
export const isStatementCancelled = (error: unknown): boolean =>
  (error as { _tag?: unknown } | null)?._tag === "SqlError" && sqlErrorCode(error) === QUERY_CANCELED
