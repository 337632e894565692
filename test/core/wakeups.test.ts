// What wakes the claim loop, on its own under the TestClock: the poll, notifications and their look
// again a second later, and changes, which come together when the loop next waits.
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Option, TestClock } from "effect"
import * as Wakeups from "../../src/internal/wakeups.js"

/** Whether the loop's wait ends (and with a look or not) once the scheduler has run everything it can. */
const waitEnded = (fiber: Fiber.RuntimeFiber<boolean>) =>
  Effect.gen(function* () {
    for (let i = 0; i < 10; i++) yield* Effect.yieldNow()
    return Option.map(yield* Fiber.poll(fiber), (exit) => (exit._tag === "Success" ? exit.value : undefined))
  })

describe("the claim loop's wake-ups", () => {
  it.scoped("signals that come while the loop is busy are taken together, and only a look says so", () =>
    Effect.gen(function* () {
      const wakeups = yield* Wakeups.make(Duration.seconds(5))
      wakeups.changed()
      wakeups.changed()
      expect(yield* wakeups.next).toBe(false)
      wakeups.changed()
      wakeups.look()
      wakeups.changed()
      expect(yield* wakeups.next).toBe(true)

      // Nothing since: the loop waits until the next signal.
      const waiting = yield* Effect.fork(wakeups.next)
      expect(yield* waitEnded(waiting)).toEqual(Option.none())
      wakeups.changed()
      expect(yield* Fiber.join(waiting)).toBe(false)
    }))

  it.scoped("the poll is a look every poll interval, and says when it fires next", () =>
    Effect.gen(function* () {
      const wakeups = yield* Wakeups.make(Duration.seconds(5))
      yield* Effect.forkScoped(wakeups.poller)
      // Lets the poller reach its sleep (the TestClock waits for every fiber to suspend).
      yield* TestClock.adjust(0)
      expect(wakeups.nextPollAt()).toBe(5_000)
      const waiting = yield* Effect.fork(wakeups.next)
      yield* TestClock.adjust("4999 millis")
      expect(yield* waitEnded(waiting)).toEqual(Option.none())
      yield* TestClock.adjust("1 millis")
      expect(yield* waitEnded(waiting)).toEqual(Option.some(true))
      expect(wakeups.nextPollAt()).toBe(10_000)
    }))

  it.scoped("a notification is a look at once and one more a second later; notifications in between get one more after that", () =>
    Effect.gen(function* () {
      const wakeups = yield* Wakeups.make(Duration.hours(1))
      yield* Effect.forkScoped(wakeups.looksAgain)
      yield* TestClock.adjust(0)
      wakeups.notified()
      expect(yield* wakeups.next).toBe(true)

      // Two more notifications within that second: they are looks at once, and one look again follows the first.
      yield* TestClock.adjust("500 millis")
      wakeups.notified()
      wakeups.notified()
      expect(yield* wakeups.next).toBe(true)
      let waiting = yield* Effect.fork(wakeups.next)
      yield* TestClock.adjust("499 millis")
      expect(yield* waitEnded(waiting)).toEqual(Option.none())
      yield* TestClock.adjust("1 millis")
      expect(yield* waitEnded(waiting)).toEqual(Option.some(true))

      waiting = yield* Effect.fork(wakeups.next)
      yield* TestClock.adjust("1 second")
      expect(yield* waitEnded(waiting)).toEqual(Option.some(true))
      // And then no more.
      waiting = yield* Effect.fork(wakeups.next)
      yield* TestClock.adjust("10 seconds")
      expect(yield* waitEnded(waiting)).toEqual(Option.none())
    }))
})
