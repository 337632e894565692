/**
 * Waiting with a time limit inside a finalizer. A finalizer runs
 * uninterruptibly, so `Effect.timeout` could not stop what it waits for; and
 * when the fiber closing the scope was itself interrupted (SIGTERM), an
 * `Effect.interruptible` region in it is cut off at once. Running the wait in
 * a fresh fiber avoids both: it is interruptible, and nothing is pending on it.
 */
import { Cause, Duration, Effect, Fiber } from "effect"

/** Runs `effect` for at most `timeout`; returns false if it did not finish in time. Never fails. */
export const waitAtMost = <A, E, R>(effect: Effect.Effect<A, E, R>, timeout: Duration.DurationInput) =>
  effect.pipe(
    Effect.timeout(timeout),
    Effect.as(true),
    Effect.catchAll(() => Effect.succeed(false)),
    Effect.interruptible,
    Effect.forkDaemon,
    Effect.flatMap(Fiber.join)
  )

/** Runs a release step with a time bound (in a fresh fiber, see above), logging (never failing) when it does not finish. */
export const boundedRelease = (
  label: string,
  timeout: Duration.DurationInput,
  release: Effect.Effect<void, unknown>
): Effect.Effect<void> =>
  release.pipe(
    Effect.timeoutFail({ duration: timeout, onTimeout: () => `timed out after ${Duration.format(timeout)}` }),
    Effect.catchAllCause((cause) => Effect.logWarning(`${label} failed: ${Cause.pretty(cause)}`)),
    Effect.interruptible,
    Effect.forkDaemon,
    Effect.flatMap(Fiber.join)
  )
