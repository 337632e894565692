// A completion whose job row another transaction holds (0018: completions skip locked rows) is asked
// again with the next statement, then after 10 ms, doubling up to every 2 s, with one warning once it
// has waited a second (README, "Rows locked elsewhere").
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Clock, Effect, Fiber, HashMap, List, Logger, TestClock } from "effect"
import { makeCompletions } from "../../src/internal/completions.js"

describe("completions of jobs whose row is locked elsewhere", () => {
  it.effect("are asked again at once, then after 10 ms doubling to 2 s, with one warning after a second", () =>
    Effect.gen(function* () {
      const warnings: Array<{ message: unknown; jobId: unknown; at: number }> = []
      const capture = Logger.make(({ annotations, date, logLevel, message }) => {
        if (logLevel._tag !== "Warning") return
        const jobId = HashMap.get(annotations, "jobId")
        warnings.push({ message: List.toArray(message as List.List<unknown>)[0] ?? message, jobId: jobId._tag === "Some" ? jobId.value : undefined, at: date.getTime() })
      })
      let asked = 0
      const completions = makeCompletions(() => void asked++)
      const fiber = yield* Effect.fork(completions.complete("job-1", 1).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, capture))))
      const t0 = yield* Clock.currentTimeMillis
      // The statement that carries the completion answers "busy" (the row is locked): when was it asked again?
      const askedAt: Array<number> = []
      const answer = (completion: "busy" | "completed") =>
        Effect.gen(function* () {
          while (asked === askedAt.length) {
            // The completion sleeps until its next try: move the TestClock to it.
            const sleeps = yield* TestClock.sleeps()
            if (Chunk.isNonEmpty(sleeps)) yield* TestClock.setTime(Chunk.unsafeLast(sleeps))
            else yield* Effect.yieldNow()
          }
          askedAt.push((yield* Clock.currentTimeMillis) - t0)
          const [waiting] = completions.take(10)
          waiting!.done(Effect.succeed(completion))
        })
      for (let i = 0; i < 11; i++) yield* answer("busy")
      yield* answer("completed")
      expect(yield* Fiber.join(fiber)).toBe(true)
      // Asked first, again at once, then 10, 20, 40, … ms later, at most every 2 s.
      const gaps = askedAt.slice(1).map((at, i) => at - askedAt[i]!)
      expect(gaps).toEqual([0, 10, 20, 40, 80, 160, 320, 640, 1280, 2000, 2000])
      // Once it has waited a second: after the 10 + 20 + … + 640 ms pauses (1,270 ms after it was first asked again).
      expect(warnings).toEqual([{ message: "the job's row is locked by another transaction; its completion waits", jobId: "job-1", at: t0 + 1_270 }])
    }))
})
