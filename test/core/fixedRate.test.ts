// The background tasks' loop (heartbeat, rescue, prune) keeps a fixed rate on the Clock.
import { describe, expect, it } from "@effect/vitest"
import { Clock, Deferred, Effect, Fiber, Queue, TestClock } from "effect"
import { fixedRate } from "../../src/internal/fixedRate.js"

describe("fixedRate", () => {
  it.effect("runs once per interval of the clock, the first after one interval", () =>
    Effect.gen(function* () {
      const runs = yield* Queue.unbounded<number>()
      const fiber = yield* Effect.fork(fixedRate("1 minute", Effect.flatMap(Clock.currentTimeMillis, (at) => Queue.offer(runs, at))))
      yield* TestClock.adjust("59 seconds")
      expect(yield* Queue.size(runs)).toBe(0)
      for (let minute = 1; minute <= 3; minute++) {
        yield* TestClock.adjust(minute === 1 ? "1 second" : "1 minute")
        expect(yield* Queue.take(runs)).toBe(minute * 60_000)
      }
      yield* Fiber.interrupt(fiber)
    }))

  it.effect("a tick that passes while a run is still going is made up at once when the run ends", () =>
    Effect.gen(function* () {
      const started = yield* Queue.unbounded<number>()
      const release = yield* Queue.unbounded<Deferred.Deferred<void>>()
      const slowRun = Effect.gen(function* () {
        yield* Queue.offer(started, yield* Clock.currentTimeMillis)
        const done = yield* Deferred.make<void>()
        yield* Queue.offer(release, done)
        yield* Deferred.await(done) // e.g. a DELETE that takes a while
      })
      const fiber = yield* Effect.fork(fixedRate("1 minute", slowRun))
      yield* TestClock.adjust("1 minute")
      expect(yield* Queue.take(started)).toBe(60_000)
      // The clock reaches the next tick while the first run is still waiting.
      yield* TestClock.adjust("1 minute")
      yield* Deferred.succeed(yield* Queue.take(release), undefined)
      expect(yield* Queue.take(started)).toBe(120_000)
      yield* Deferred.succeed(yield* Queue.take(release), undefined)
      yield* TestClock.adjust("1 minute")
      expect(yield* Queue.take(started)).toBe(180_000)
      yield* Fiber.interrupt(fiber)
    }))

  it.effect("after a long stall it catches up with one run, not one per missed tick", () =>
    Effect.gen(function* () {
      const runs: Array<number> = []
      const stalled = yield* Deferred.make<void>()
      const run = Effect.gen(function* () {
        runs.push(yield* Clock.currentTimeMillis)
        if (runs.length === 1) yield* Deferred.await(stalled) // the first run hangs for an hour
      })
      const fiber = yield* Effect.fork(fixedRate("1 minute", run))
      yield* TestClock.adjust("1 minute")
      yield* TestClock.adjust("1 hour")
      expect(runs).toEqual([60_000])
      yield* Deferred.succeed(stalled, undefined)
      yield* Effect.yieldNow()
      expect(runs).toEqual([60_000, 3_660_000])
      yield* TestClock.adjust("59 seconds")
      expect(runs.length).toBe(2)
      yield* TestClock.adjust("1 second")
      expect(runs).toEqual([60_000, 3_660_000, 3_720_000])
      yield* Fiber.interrupt(fiber)
    }))
})
