/**
 * Handler timeouts for a worker: one fiber sleeps until the earliest deadline
 * of the running jobs and stops the jobs past theirs (stop reason "timeout";
 * executeJob records a HandlerTimeout). Racing a timer fiber against every job
 * instead cost ~130 µs of CPU per job, more than the rest of the worker's
 * work for a no-op job. Times come from the Clock, so TestClock drives them.
 */
import { Clock, Effect, Fiber, Queue } from "effect"
import type { JobControl } from "./executeJob.js"

export interface TimedJob {
  /** Clock time (ms) at which the handler is stopped. */
  readonly deadline: number
  readonly control: JobControl
  readonly fiber: Fiber.RuntimeFiber<unknown> | undefined
}

export const make = (jobs: () => Iterable<TimedJob>) =>
  Effect.gen(function* () {
    const wake = yield* Queue.sliding<void>(1)
    let sleepingUntil = Number.POSITIVE_INFINITY

    const watch = Effect.gen(function* () {
      while (true) {
        const now = yield* Clock.currentTimeMillis
        let earliest = Number.POSITIVE_INFINITY
        for (const job of jobs()) {
          if (job.fiber === undefined || job.control.stopReason !== undefined) continue
          if (job.deadline <= now) {
            job.control.stopReason = "timeout"
            yield* Fiber.interruptFork(job.fiber)
          } else if (job.deadline < earliest) {
            earliest = job.deadline
          }
        }
        sleepingUntil = earliest
        yield* earliest === Number.POSITIVE_INFINITY
          ? Queue.take(wake)
          : Effect.raceFirst(Effect.sleep(earliest - now), Queue.take(wake))
      }
    })

    return {
      /** Runs forever; fork it. */
      watch,
      /** Tells the watcher about a started job (its fiber set); wakes it if this deadline comes first. */
      started: (deadline: number): void => {
        if (deadline < sleepingUntil) Queue.unsafeOffer(wake, undefined)
      }
    }
  })
