/**
 * How long the statements of the current transaction may wait for a lock (PostgreSQL's
 * lock_timeout, local to the transaction). A wait past it fails with LOCK_NOT_AVAILABLE
 * (sqlErrorText.ts), which the caller turns into a message that says what to do.
 */
import type { SqlClient } from "@effect/sql"
import { Duration, Effect } from "effect"

export const setLocalLockTimeout = (sql: SqlClient.SqlClient, timeout: Duration.DurationInput) =>
  Effect.asVoid(sql`SELECT set_config('lock_timeout', ${`${Duration.toMillis(Duration.decode(timeout))}ms`}, true)`)
