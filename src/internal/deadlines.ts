/**
 * Handler timeouts for a worker: one fiber sleeps until the earliest deadline
 * of the running jobs and stops the jobs past theirs (stop reason "timeout";
 * executeJob records a HandlerTimeout). Racing a timer fiber against every job
 * instead cost ~130 µs of CPU per job, more than the rest of the worker's
 * work for a no-op job. Times come from the Clock, so TestClock drives them.
 *
 * Stopping is interruption, and code the handler runs uninterruptibly (Effect.uninterruptible,
 * an acquire, a finalizer) finishes first. Until the handler's fiber ends the job keeps its slot
 * and its lease: it is not rescued and run a second time elsewhere while this attempt may still
 * write. A handler still running a minute after it was stopped is reported, so that it is seen
 * rather than silently holding a slot.
 */
import { Clock, Duration, Effect, Fiber, Option, Queue } from "effect"
import type { ClaimedJob } from "./JobStore.js"
import type { JobControl } from "./executeJob.js"

/** How long after its stop a handler still running is reported. */
export const STUCK_REPORT_AFTER = Duration.minutes(1)

export interface TimedJob {
  readonly job: Pick<ClaimedJob, "id" | "jobType" | "attempts">
  /** Clock time (ms) at which the handler is stopped. */
  readonly deadline: number
  readonly control: JobControl
  readonly fiber: Fiber.RuntimeFiber<unknown> | undefined
}

// Rare (a timeout), so a fiber each; it ends with the handler's fiber, or with the watcher.
const reportIfStuck = (job: TimedJob, fiber: Fiber.RuntimeFiber<unknown>) =>
  Fiber.await(fiber).pipe(
    Effect.timeoutOption(STUCK_REPORT_AFTER),
    Effect.flatMap((ended) =>
      Option.isSome(ended)
        ? Effect.void
        : Effect.logWarning(
            `the handler has not stopped ${Duration.format(STUCK_REPORT_AFTER)} after its timeout: it runs code that cannot be ` +
              "interrupted (Effect.uninterruptible, an acquire or a finalizer). The job keeps its slot and its lease until it returns"
          ).pipe(Effect.annotateLogs({ jobId: job.job.id, jobType: job.job.jobType, attempt: job.job.attempts }))
    )
  )

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
            yield* Effect.fork(reportIfStuck(job, job.fiber))
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
