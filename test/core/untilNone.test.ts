// The shutdown's waits (running jobs, claims on their way): done at once at zero, else when the count settles there.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { untilNone } from "../../src/internal/untilNone.js"

describe("untilNone", () => {
  it.effect("does not wait when nothing is in progress, also after the count went up and down unwatched", () =>
    Effect.gen(function* () {
      let count = 0
      const none = untilNone(() => count)
      yield* none.await
      count = 2
      count = 0
      none.settled()
      yield* none.await
    }))

  it.effect("waits until the count is back at zero, not for the first decrease", () =>
    Effect.gen(function* () {
      let count = 2
      const none = untilNone(() => count)
      const waiter = yield* Effect.fork(none.await)
      yield* Effect.yieldNow()
      count = 1
      none.settled()
      yield* Effect.yieldNow()
      expect(waiter.unsafePoll()).toBeNull()
      count = 0
      none.settled()
      yield* Fiber.join(waiter)
      // A later wait with work in progress again waits anew.
      count = 1
      const second = yield* Effect.fork(none.await)
      yield* Effect.yieldNow()
      expect(second.unsafePoll()).toBeNull()
      count = 0
      none.settled()
      yield* Fiber.join(second)
    }))
})
