/**
 * How a background task (claiming, heartbeat, rescue, prune, registration, LISTEN) says that it keeps failing.
 * An outage is a few lines, not a storm: a warning on its first failure, another every 10th failure,
 * and one line when the task works again. A connection that is dropped again and again (a pooler,
 * a flaky network, an operator terminating backends) makes the task fail, work, and fail again:
 * a failure within a minute of the previous one (or two of the task's intervals, when longer) belongs to the
 * same outage, so each flap does not start a new warning.
 */
import { Clock, Duration, Effect } from "effect"
import { sqlErrorText } from "./sqlErrorText.js"

export interface OutageLog {
  readonly failed: (error: unknown) => Effect.Effect<void>
  readonly succeeded: Effect.Effect<void>
  /** Whether `succeeded` has something to log: a warning went out that no "works again" has answered yet. */
  readonly reported: () => boolean
}

const SAME_OUTAGE_WITHIN_MS = 60_000

/**
 * `interval`: how often the task runs. Failures at most two intervals apart (and at least a minute) are one
 * outage: a task run once a minute (pruning) failed a few milliseconds more than a minute apart, and logged
 * each failure of a long outage as a new one.
 */
export const makeOutageLog = (task: string, interval?: Duration.Duration): OutageLog => {
  const sameOutageWithin = Math.max(SAME_OUTAGE_WITHIN_MS, interval === undefined ? 0 : 2 * Duration.toMillis(interval))
  let failures = 0
  let since = 0
  let lastFailureAt: number | undefined
  // Whether a warning went out that no "works again" has answered yet.
  let reported = false
  return {
    failed: (error) =>
      Effect.flatMap(Clock.currentTimeMillis, (at) => {
        const sameOutage = lastFailureAt !== undefined && at - lastFailureAt <= sameOutageWithin
        lastFailureAt = at
        if (!sameOutage) {
          failures = 1
          since = at
          reported = true
          return Effect.logWarning(`${task} failed: ${sqlErrorText(error)}`)
        }
        if (++failures % 10 !== 0) return Effect.void
        reported = true
        return Effect.logWarning(`${task} still failing (${failures} failures since ${new Date(since).toISOString()}): ${sqlErrorText(error)}`)
      }),
    succeeded: Effect.suspend(() => {
      if (!reported) return Effect.void
      reported = false
      return Effect.logInfo(`${task} works again after ${failures} failure(s)`)
    }),
    reported: () => reported
  }
}
