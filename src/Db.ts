/**
 * The database connection: a PgClient (which is also the SqlClient every
 * skiplock module uses). Column names are never transformed, because
 * @effect/sql-pg would rewrite the keys inside jsonb payloads too; queries
 * alias their columns to camelCase instead.
 */
import { PgClient } from "@effect/sql-pg"
import { Config, Duration, Layer, Redacted } from "effect"

export interface DbOptions {
  readonly url: Redacted.Redacted<string> | string
  readonly maxConnections?: number
  readonly applicationName?: string
  readonly connectTimeout?: Duration.DurationInput
}

/** A PgClient layer for the given database URL. */
export const layer = (options: DbOptions) =>
  PgClient.layer({
    url: typeof options.url === "string" ? Redacted.make(options.url) : options.url,
    maxConnections: options.maxConnections ?? 10,
    applicationName: options.applicationName ?? "skiplock",
    connectTimeout: options.connectTimeout ?? Duration.seconds(5)
  })

/** A PgClient layer for `DATABASE_URL`. */
export const layerFromEnv = Layer.unwrapEffect(
  Config.redacted("DATABASE_URL").pipe(Config.map((url) => layer({ url })))
)
