/**
 * Waits for a count of things in progress (running jobs, claims on their way) to reach zero.
 * The count lives with its owner; `settled` is called after it goes down. The Deferred is made
 * only when someone waits (the count changes once per job, the wait happens at shutdown), and
 * `await` reads the count when it runs, so a count that reached zero before is not waited for.
 */
import { Deferred, Effect, Exit, FiberId } from "effect"

export interface UntilNone {
  readonly settled: () => void
  readonly await: Effect.Effect<void>
}

export const untilNone = (count: () => number): UntilNone => {
  let waiting: Deferred.Deferred<void> | undefined
  return {
    settled: () => {
      if (waiting === undefined || count() > 0) return
      Deferred.unsafeDone(waiting, Exit.void)
      waiting = undefined
    },
    await: Effect.suspend(() => {
      if (count() === 0) return Effect.void
      waiting ??= Deferred.unsafeMake<void>(FiberId.none)
      return Deferred.await(waiting)
    })
  }
}
