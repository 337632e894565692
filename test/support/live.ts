// Waiting in real time from inside a TestClock test: database I/O is real,
// so a test sometimes has to wait for it to land without moving the TestClock.
import { Clock, Duration, Effect, TestClock, TestServices } from "effect"
import type { Worker } from "../../src/Worker.js"

/** Polls `condition` in real time until it holds; fails after `timeout` of real time. */
export const eventually = <E, R>(
  condition: Effect.Effect<boolean, E, R>,
  description: string,
  timeout: Duration.DurationInput = "10 seconds"
) =>
  Effect.gen(function* () {
    const deadline = Date.now() + Duration.toMillis(Duration.decode(timeout))
    while (!(yield* condition)) {
      if (Date.now() > deadline) {
        // Printed as well: a worker still running a job then waits out its shutdown on the TestClock,
        // which nothing moves any more, and vitest reports only its own timeout.
        console.error(`eventually: timed out waiting until ${description}`)
        return yield* Effect.dieMessage(`timed out waiting until ${description}`)
      }
      yield* TestServices.provideLive(Effect.sleep("10 millis"))
    }
  })

/** Waits real time without moving the TestClock (for asserting that something does NOT happen). */
export const pauseLive = (duration: Duration.DurationInput) => TestServices.provideLive(Effect.sleep(duration))

/**
 * Waits until the worker's claim loop has reacted to the current TestClock
 * time: it waits for a poll that lies in the future, and no job is running.
 */
export const settled = (worker: Worker["Type"], options: { readonly running?: number } = {}) =>
  eventually(
    Effect.gen(function* () {
      const status = yield* worker.status
      const now = yield* Clock.currentTimeMillis
      return status.nextPollAt !== undefined && now < status.nextPollAt && status.running === (options.running ?? 0)
    }),
    "the worker settled"
  )

/** Moves the TestClock forward in steps, letting the worker react after each one. */
export const advance = (worker: Worker["Type"], total: Duration.DurationInput, step: Duration.DurationInput = "1 second", options: { readonly running?: number } = {}) =>
  Effect.gen(function* () {
    let left = Duration.toMillis(Duration.decode(total))
    const stepMillis = Duration.toMillis(Duration.decode(step))
    while (left > 0) {
      const by = Math.min(stepMillis, left)
      yield* TestClock.adjust(Duration.millis(by))
      yield* settled(worker, options)
      left -= by
    }
  })
