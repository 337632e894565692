/**
 * A background task on a fixed rate: runs at start + interval, start + 2 ×
 * interval, … of the Clock. Sleeping a whole interval after each run (the
 * simple loop) drifts by the run's duration, and under TestClock it skips a
 * tick when the clock moves on while a run still waits for the database.
 * A run that ends late is followed by one catch-up run at once, never a pile.
 */
import { Clock, Duration, Effect } from "effect"

/** Runs `effect` every `interval` forever, first after one interval. */
export const fixedRate = <E, R>(interval: Duration.DurationInput, effect: Effect.Effect<void, E, R>): Effect.Effect<never, E, R> =>
  Effect.gen(function* () {
    const intervalMillis = Duration.toMillis(Duration.decode(interval))
    let next = (yield* Clock.currentTimeMillis) + intervalMillis
    while (true) {
      const wait = next - (yield* Clock.currentTimeMillis)
      if (wait > 0) yield* Effect.sleep(Duration.millis(wait))
      yield* effect
      next = Math.max(next + intervalMillis, yield* Clock.currentTimeMillis)
    }
  })
