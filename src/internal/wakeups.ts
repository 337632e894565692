/**
 * What wakes a worker's claim loop: a look (the poll every pollInterval, a LISTEN notification and
 * its look again, a rescue: runnable jobs may wait) or a change (a slot freed up, a claim finished).
 * Signals that come while the loop is busy are taken together when it next waits. A flag and a
 * callback rather than a Queue: the loop is signalled several times a job. Times come from the
 * Clock, so TestClock drives the poll.
 */
import { Clock, Duration, Effect } from "effect"

// After a notification the worker looks once more this much later (see looksAgain).
const LOOK_AGAIN_AFTER = Duration.seconds(1)

export const make = (pollInterval: Duration.Duration) =>
  Effect.gen(function* () {
    let signalled = false
    let lookSignalled = false
    let wakeLoop: (() => void) | undefined
    const signal = (look: boolean) => {
      signalled = true
      if (look) lookSignalled = true
      const wake = wakeLoop
      wakeLoop = undefined
      wake?.()
    }
    const nextSignal = Effect.async<void>((resume) => {
      if (signalled) return resume(Effect.void)
      wakeLoop = () => resume(Effect.void)
      return Effect.sync(() => void (wakeLoop = undefined))
    })
    const takeSignals = Effect.sync(() => {
      signalled = false
      const look = lookSignalled
      lookSignalled = false
      return look
    })

    // The poll: a look every pollInterval.
    let nextTickAt = 0
    const poller = Effect.gen(function* () {
      while (true) {
        nextTickAt = (yield* Clock.currentTimeMillis) + Duration.toMillis(pollInterval)
        yield* Effect.sleep(pollInterval)
        signal(true)
      }
    })

    // A notification can come before its job is due by this worker's clock: the runbook's INSERT takes
    // run_at from the database's now(), and a clock a few milliseconds behind the database's would leave
    // the job to the next poll. So after a notification the worker looks once more, a second later (one
    // such look waiting at a time; a notification meanwhile gets one after it).
    const lookAgain = yield* Effect.makeLatch(false)
    const looksAgain = Effect.forever(
      Effect.zipRight(Effect.zipRight(lookAgain.await, lookAgain.close), Effect.zipRight(Effect.sleep(LOOK_AGAIN_AFTER), Effect.sync(() => signal(true))))
    )

    return {
      /** Something changed (a slot freed up, a claim finished): the loop may claim or complete. */
      changed: () => signal(false),
      /** Runnable jobs may wait (a rescue put jobs back). */
      look: () => signal(true),
      /** A notification: look now, and once more a second later. */
      notified: () => {
        signal(true)
        lookAgain.unsafeOpen()
      },
      /** Waits for the next signal (at once if one came since the last wait); true when any of them was a look. */
      next: Effect.zipRight(nextSignal, takeSignals),
      /** When the poll fires next (Clock time, ms). */
      nextPollAt: () => nextTickAt,
      /** The poll and the looks again, each to be forked; they run until interrupted. */
      poller,
      looksAgain
    }
  })
