/**
 * Waiting with a time limit. Inside a finalizer: a finalizer runs
 * uninterruptibly, so `Effect.timeout` could not stop what it waits for; and
 * when the fiber closing the scope was itself interrupted (SIGTERM), an
 * `Effect.interruptible` region in it is cut off at once. Running the wait in
 * a fresh fiber avoids both: it is interruptible, and nothing is pending on it.
 * And for a statement to a database that may have gone silent (answeredWithin).
 */
import { SqlError } from "@effect/sql/SqlError"
import { Cause, Clock, Duration, Effect, Fiber } from "effect"

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

// Real time, not the Clock's: how long a network stays silent is not the queue's time, and under TestClock a
// test moving time on while a statement is on its way must not make the statement count as unanswered.
const liveClock = Clock.make()

/**
 * A statement, or after `timeout` without an answer a connection error (ETIMEDOUT, so that isConnectionError
 * counts it as the database out of reach). The statement is cancelled in the background: cancelling needs
 * the server too, which may not answer either. (Only the timer runs on the live clock: the statement keeps
 * the caller's, which the times it writes come from.)
 */
export const answeredWithin = <A, E, R>(statement: Effect.Effect<A, E, R>, timeout: Duration.DurationInput) =>
  Effect.raceFirst(
    Effect.disconnect(statement),
    Effect.zipRight(
      Effect.sleep(timeout).pipe(Effect.withClock(liveClock)),
      Effect.fail(
        new SqlError({
          message: "no answer",
          cause: Object.assign(new Error(`the database did not answer within ${Duration.format(timeout)}`), { code: "ETIMEDOUT" })
        })
      )
    )
  )
