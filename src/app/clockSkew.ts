/**
 * Leases and retry times are written with each worker's own clock (Effect's Clock, so tests can
 * drive them) and read by the other workers with theirs: a worker whose clock is behind another's
 * by more than the lease less the heartbeat interval (30 s − 10 s) sees that worker's running jobs as
 * abandoned and rescues them, and they run twice. The database server's clock is the reference all
 * workers share: the service compares its clock with it at start and every 10 minutes, and warns.
 */
import { SqlClient } from "@effect/sql"
import { Clock, Effect, Schedule } from "effect"
import { sqlErrorText } from "../internal/sqlErrorText.js"

/** Beyond this, a warning: two workers each this far off, in opposite directions, are still inside the 20 s margin. */
export const SKEW_WARNING_MS = 5_000

/** The database server's clock less this machine's (ms); the round trip is split in half. */
export const measure = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  const before = yield* Clock.currentTimeMillis
  const [row] = yield* sql<{ ms: string }>`SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint::text AS ms`
  const after = yield* Clock.currentTimeMillis
  return Number(row!.ms) - (before + after) / 2
})

/** Logs a warning when this machine's clock is off the database server's by more than SKEW_WARNING_MS. */
export const check = measure.pipe(
  Effect.flatMap((skew) =>
    Math.abs(skew) <= SKEW_WARNING_MS
      ? Effect.void
      : Effect.logWarning(
          `this machine's clock is ${(Math.abs(skew) / 1000).toFixed(1)} s ${skew > 0 ? "behind" : "ahead of"} the database server's: ` +
            "leases (30 s) and retry times are kept by each worker's clock, and workers whose clocks differ by more than 20 s " +
            "rescue each other's running jobs. Synchronize the clocks (NTP)"
        )
  ),
  Effect.catchAll((error) => Effect.logWarning(`cannot compare this machine's clock with the database server's: ${sqlErrorText(error)}`))
)

/** `check` now and every 10 minutes; fork it for the service's lifetime. */
export const watch = Effect.repeat(check, Schedule.spaced("10 minutes"))
