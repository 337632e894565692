// The worker's jobs on their own, without a database: claimed jobs start in claim order while handler
// slots are free, a job whose lease ran out while it waited is dropped, and a job claimed again while
// its earlier attempt still runs stops that attempt, which keeps its slot until it ends.
import { describe, expect, it } from "@effect/vitest"
import { Clock, Deferred, Effect, Exit, Fiber, FiberId, Logger, Schema } from "effect"
import { Handler, JobDefinition } from "../../src/index.js"
import type { JobControl, Outcome } from "../../src/internal/executeJob.js"
import { make as makeJobSlots } from "../../src/internal/jobSlots.js"
import type { ClaimedJob } from "../../src/internal/JobStore.js"

const Report = JobDefinition.make("report_generation", Schema.Struct({}))
const handler = Handler.make(Report, { run: () => Effect.void, timeout: "10 seconds" })

const claimedJob = (id: string, attempts = 1): ClaimedJob => ({
  id,
  organizationId: "6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f",
  jobType: "report_generation",
  payload: {},
  priority: 0,
  attempts,
  maxAttempts: 3,
  runAt: new Date(0),
  idempotencyKey: null,
  traceId: "0af7651916cd43dd8448eb211c80319c",
  parentSpanId: null,
  createdBy: null,
  createdAt: new Date(0),
  runIdempotencyStatus: "in_progress"
})

/** Job slots whose "handlers" run until the test ends them; records what was started and logged. */
const setUp = (concurrency: number) =>
  Effect.gen(function* () {
    const clock = yield* Effect.clock
    const started: Array<{ job: ClaimedJob; control: JobControl; end: Deferred.Deferred<Outcome> }> = []
    const deadlines: Array<number> = []
    const logged: Array<Effect.Effect<void>> = []
    let changes = 0
    const slots = makeJobSlots({
      concurrency,
      clock,
      handlerOf: () => handler,
      run: (_, job, control) => {
        const end = Deferred.unsafeMake<Outcome>(FiberId.none)
        started.push({ job, control, end })
        // Until the test ends it, interrupted or not: a handler that finishes what it cannot leave half done.
        return Effect.runFork(Effect.uninterruptible(Deferred.await(end)))
      },
      log: (effect) => void logged.push(effect),
      deadlines: { started: (deadline) => void deadlines.push(deadline) },
      changed: () => void changes++
    })
    return { slots, started, deadlines, logged, changes: () => changes }
  })

/** Waits in real time (the fibers end on their own) until the condition holds; fails after 5 s. */
const waitUntil = (condition: () => boolean) =>
  Effect.gen(function* () {
    const deadline = Date.now() + 5_000
    while (!condition()) {
      if (Date.now() > deadline) return yield* Effect.dieMessage("waitUntil: timed out")
      yield* Effect.sleep("1 millis").pipe(Effect.withClock(Clock.make()))
    }
  })

describe("job slots", () => {
  it.effect("start claimed jobs in claim order while slots are free, and one more as each handler returns", () =>
    Effect.gen(function* () {
      const { slots, started, deadlines, changes } = yield* setUp(2)
      const [a, b, c] = [claimedJob("a"), claimedJob("b"), claimedJob("c")]
      const leaseValidUntil = (yield* Clock.currentTimeMillis) + 30_000
      slots.prefetched.push({ job: a, leaseValidUntil }, { job: b, leaseValidUntil }, { job: c, leaseValidUntil })

      // Not while the worker does not allow it (it stops), whatever the free slots.
      expect(slots.startPrefetched(false)).toBeUndefined()
      expect(started).toEqual([])

      expect(slots.startPrefetched(true)).toBeUndefined()
      expect(started.map(({ job }) => job.id)).toEqual(["a", "b"])
      expect(slots.prefetched.map(({ job }) => job.id)).toEqual(["c"])
      expect(slots.handlersRunning()).toBe(2)
      // Each started job's handler deadline goes to the timeout watcher.
      expect(deadlines).toEqual([(yield* Clock.currentTimeMillis) + 10_000, (yield* Clock.currentTimeMillis) + 10_000])

      // b's handler fails: its slot stays taken while its fiber writes the failure on a connection of its own.
      slots.handlerReturned(b, false)
      expect(slots.handlersRunning()).toBe(2)
      expect(slots.entryOf(b)?.handlerReturned).toBe(true)
      // a's handler succeeds: its slot is free at once, though its fiber (waiting for its completion) still runs.
      slots.handlerReturned(a, true)
      expect(slots.handlersRunning()).toBe(1)
      expect(slots.size()).toBe(2)
      slots.startPrefetched(true)
      expect(started.map(({ job }) => job.id)).toEqual(["a", "b", "c"])

      // The fibers end: the jobs leave, each end tells the claim loop, and the shutdown's wait is over.
      const noneRunning = yield* Effect.fork(slots.noneRunning.await)
      for (const { end } of started) Deferred.unsafeDone(end, Exit.succeed({ _tag: "Completed" } as Outcome))
      yield* waitUntil(() => slots.size() === 0)
      expect(slots.handlersRunning()).toBe(0)
      expect(changes()).toBe(3)
      yield* Fiber.join(noneRunning)
    }))

  it.effect("drop a claimed job whose lease ran out while it waited, and say so", () =>
    Effect.gen(function* () {
      const { slots, started } = yield* setUp(1)
      const now = yield* Clock.currentTimeMillis
      slots.prefetched.push({ job: claimedJob("expired"), leaseValidUntil: now }, { job: claimedJob("held"), leaseValidUntil: now + 1 })
      const dropped = slots.startPrefetched(true)
      expect(started.map(({ job }) => job.id)).toEqual(["held"])
      expect(slots.prefetched).toEqual([])
      const warnings: Array<unknown> = []
      yield* dropped!.pipe(Effect.provide(Logger.replace(Logger.defaultLogger, Logger.make(({ message }) => void warnings.push(message)))))
      expect(String(warnings)).toContain("the lease of a prefetched job ran out before it could start")
    }))

  it.effect("stop the earlier attempt of a job claimed again, which keeps its slot until its fiber ends", () =>
    Effect.gen(function* () {
      const { slots, started, logged } = yield* setUp(2)
      const leaseValidUntil = (yield* Clock.currentTimeMillis) + 30_000
      const first = claimedJob("j", 1)
      const second = claimedJob("j", 2)
      slots.prefetched.push({ job: first, leaseValidUntil })
      slots.startPrefetched(true)
      slots.prefetched.push({ job: second, leaseValidUntil })
      slots.startPrefetched(true)

      const [earlier, latest] = started
      expect(earlier!.control.stopReason).toBe("lease_lost")
      expect(latest!.control.stopReason).toBeUndefined()
      expect(logged).toHaveLength(1)
      // The running job by id is the latest attempt; each attempt is found by its own job object.
      expect(slots.running.get("j")?.job).toBe(second)
      expect(slots.entryOf(first)?.job).toBe(first)
      expect(slots.entryOf(second)?.job).toBe(second)
      expect(slots.handlersRunning()).toBe(2)
      expect(slots.size()).toBe(2)

      Deferred.unsafeDone(earlier!.end, Exit.succeed({ _tag: "LeaseLost" } as Outcome))
      yield* waitUntil(() => slots.size() === 1)
      expect(slots.superseded.size).toBe(0)
      expect(slots.running.get("j")?.job).toBe(second)
      expect(slots.handlersRunning()).toBe(1)
    }))
})
