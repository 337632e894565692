// drain: runs every due job through the real claim and executeJob, moving the
// TestClock through backoff and scheduled run_at up to the test's limit.
import { describe, expect, it } from "@effect/vitest"
import { SqlClient } from "@effect/sql"
import { Clock, Duration, Effect, Fiber, TestClock, TestServices } from "effect"
import { Handler, JobQueue } from "../../src/index.js"
import { HandlerNotWaiting, SkiplockTest } from "../../src/testing/index.js"
import { auditEvents, jobRun, ORG, Report, SepaExport } from "./support.js"

describe("drain", () => {
  it.effect("a job that fails twice then succeeds goes through 30 s and 120 s of simulated backoff and completes", () => {
    let runs = 0
    const flaky = Handler.make(Report, {
      run: (_payload, job) => (++runs, job.attempt < 3 ? Effect.fail(new Error(`bank API unavailable (attempt ${job.attempt})`)) : Effect.void)
    })
    return Effect.gen(function* () {
      const t0 = yield* Clock.currentTimeMillis
      const job = yield* JobQueue.enqueueJob(Report, { month: "2025-03" }, { organizationId: ORG })
      const wallStart = Date.now()

      const result = yield* SkiplockTest.drain({ maxAdvance: "1 hour" })

      expect(Date.now() - wallStart).toBeLessThan(10_000) // generous: no real waiting happened
      expect((yield* Clock.currentTimeMillis) - t0).toBe(150_000)
      expect(Duration.toMillis(result.advanced)).toBe(150_000)
      expect(runs).toBe(3)
      expect(result.completed.map((drained) => drained.job.id)).toEqual([job.id])
      expect(result.failed).toEqual([])
      expect(result.waiting).toEqual([])
      const [drained] = result.jobs
      expect(drained!.description).toBe("completed after 3 attempts")
      expect(drained!.attempts.map((attempt) => [attempt.attempt, attempt.at.getTime() - t0, attempt.outcome._tag])).toEqual([
        [1, 0, "RetryScheduled"],
        [2, 30_000, "RetryScheduled"],
        [3, 150_000, "Completed"]
      ])
      expect(drained!.attempts[0]!.outcome).toEqual(expect.objectContaining({ error: "bank API unavailable (attempt 1)", runAt: new Date(t0 + 30_000) }))
      expect(drained!.attempts[1]!.outcome).toEqual(expect.objectContaining({ runAt: new Date(t0 + 150_000) }))
      // The real path: job_runs and the audit trail, written by the runtime's SQL functions.
      expect(yield* jobRun(job.id)).toEqual({ status: "completed", attempts: 3, lastError: "bank API unavailable (attempt 2)", workerId: "skiplock-test" })
      expect(yield* auditEvents(job.id)).toEqual([
        "job_started", "job_retry_scheduled", "job_started", "job_retry_scheduled", "job_started", "job_completed"
      ])
    }).pipe(Effect.provide(SkiplockTest.layer({ handlers: [flaky] })))
  })

  it.effect("a handler that enqueues a follow-up job is drained in one call, follow-up included", () => {
    const exported: Array<unknown> = []
    const report = Handler.make(Report, {
      run: (payload, job) => JobQueue.enqueueJob(SepaExport, { month: payload.month, batch: 1 }, { organizationId: job.organizationId })
    })
    const sepa = Handler.make(SepaExport, { run: (payload) => Effect.sync(() => exported.push(payload)) })
    return Effect.gen(function* () {
      const t0 = yield* Clock.currentTimeMillis
      const job = yield* JobQueue.enqueueJob(Report, { month: "2025-03" }, { organizationId: ORG })

      const result = yield* SkiplockTest.drain()

      expect(result.jobs.map((drained) => [drained.job.jobType, drained.status])).toEqual([
        ["report_generation", "completed"],
        ["sepa_export", "completed"]
      ])
      expect(result.jobs[0]!.job.id).toBe(job.id)
      expect(result.jobs[1]!.job).toMatchObject({ organizationId: ORG, payload: { month: "2025-03", batch: 1 } })
      expect(exported).toEqual([{ month: "2025-03", batch: 1 }])
      expect((yield* Clock.currentTimeMillis) - t0).toBe(0)
    }).pipe(Effect.provide(SkiplockTest.layer({ handlers: [report, sepa] })))
  })

  it.effect("stops at its limit and says why each job still waits", () => {
    const failing = Handler.make(Report, { run: () => Effect.fail(new Error("ledger offline")) })
    return Effect.gen(function* () {
      const t0 = yield* Clock.currentTimeMillis
      const retried = yield* JobQueue.enqueueJob(Report, { month: "2025-03" }, { organizationId: ORG })
      const later = yield* JobQueue.enqueueJob(Report, { month: "2025-04" }, { organizationId: ORG, runAt: new Date(t0 + Duration.toMillis(Duration.days(2))) })
      const unhandled = yield* JobQueue.enqueueJob(SepaExport, { month: "2025-03", batch: 7 }, { organizationId: ORG })

      // Default limit 0: only what is due now runs; the retry 30 s later waits.
      const first = yield* SkiplockTest.drain()
      expect(first.attempts.map((attempt) => attempt.jobId)).toEqual([retried.id])
      expect((yield* Clock.currentTimeMillis) - t0).toBe(0)
      const waitingFor = (result: typeof first, id: string) => result.jobs.find((drained) => drained.job.id === id)!
      expect(waitingFor(first, retried.id)).toMatchObject({ status: "waiting", waiting: { _tag: "RetryScheduled", runAt: new Date(t0 + 30_000), lastError: "ledger offline" } })
      expect(waitingFor(first, retried.id).description).toContain("attempt 1 of 3 failed (ledger offline); the retry at")
      expect(waitingFor(first, retried.id).description).toContain("set maxAdvance")
      expect(waitingFor(first, later.id)).toMatchObject({ status: "waiting", waiting: { _tag: "Scheduled", runAt: new Date(t0 + 2 * 86_400_000) } })
      expect(waitingFor(first, unhandled.id)).toMatchObject({ status: "waiting", waiting: { _tag: "NoHandler" } })
      expect(waitingFor(first, unhandled.id).description).toBe(`waiting: the kit has no handler for job type "sepa_export" (handlers: report_generation)`)

      // One minute reaches the 30 s retry, not the next one at 150 s.
      const second = yield* SkiplockTest.drain({ maxAdvance: "1 minute" })
      expect(second.attempts.map((attempt) => attempt.at.getTime() - t0)).toEqual([30_000])
      expect((yield* Clock.currentTimeMillis) - t0).toBe(30_000)
      expect(waitingFor(second, retried.id).waiting).toEqual(expect.objectContaining({ _tag: "RetryScheduled", runAt: new Date(t0 + 150_000) }))

      // Enough time: the third attempt fails for good; the job two days out is still beyond reach.
      const third = yield* SkiplockTest.drain({ maxAdvance: "1 day" })
      expect(third.failed.map((drained) => [drained.job.id, drained.error, drained.description])).toEqual([
        [retried.id, "ledger offline", "failed after 3 attempts: ledger offline"]
      ])
      expect(third.waiting.map((drained) => drained.job.id).sort()).toEqual([later.id, unhandled.id].sort())
      expect((yield* Clock.currentTimeMillis) - t0).toBe(150_000)
      expect(third.summary).toContain(`report_generation ${retried.id} (organization ${ORG}, payload {"month":"2025-03"}): failed after 3 attempts: ledger offline`)
    }).pipe(Effect.provide(SkiplockTest.layer({ handlers: [failing] })))
  })

  it.effect("moves the clock to a run_at with microseconds (written by the database's now()) and runs the job", () => {
    let runs = 0
    const report = Handler.make(Report, { run: () => Effect.sync(() => void runs++) })
    return Effect.gen(function* () {
      const t0 = yield* Clock.currentTimeMillis
      const sql = yield* SqlClient.SqlClient
      // 60.0005 s from now: a JavaScript Date holds no microseconds.
      yield* sql`INSERT INTO job_queue (organization_id, job_type, payload, run_at)
                 VALUES (${ORG}, 'report_generation', '{"month":"2025-03"}', ${new Date(t0)}::timestamptz + interval '60000500 microseconds')`
      // Before, the clock moved to 60.000 s, short of the job, again and again: the drain never ended.
      const result = yield* Effect.raceFirst(
        SkiplockTest.drain({ maxAdvance: "10 minutes" }),
        TestServices.provideLive(Effect.sleep("5 seconds")).pipe(Effect.zipRight(Effect.dieMessage("the drain did not end within 5 s of real time")))
      )
      expect(result.completed).toHaveLength(1)
      expect(runs).toBe(1)
      expect((yield* Clock.currentTimeMillis) - t0).toBe(60_001)
    }).pipe(Effect.provide(SkiplockTest.layer({ handlers: [report] })))
  })

  it.effect("fails with DrainLimitExceeded when handlers keep enqueueing work", () => {
    const forever = Handler.make(Report, {
      run: (payload, job) => JobQueue.enqueueJob(Report, payload, { organizationId: job.organizationId })
    })
    return Effect.gen(function* () {
      yield* JobQueue.enqueueJob(Report, { month: "2025-03" }, { organizationId: ORG })
      const error = yield* Effect.flip(SkiplockTest.drain({ maxRuns: 5 }))
      if (error._tag !== "DrainLimitExceeded") throw error
      expect(error.attempts).toHaveLength(5)
      expect(error.message).toContain("drain stopped after 5 attempts with work still due (report_generation ×5)")
      // The same with no bound on the clock's move (it stood for a time no Date holds, and the check failed in SQL).
      const unbounded = yield* Effect.flip(SkiplockTest.drain({ maxRuns: 5, maxAdvance: Duration.infinity }))
      if (unbounded._tag !== "DrainLimitExceeded") throw unbounded
      expect(unbounded.attempts).toHaveLength(5)
    }).pipe(Effect.provide(SkiplockTest.layer({ handlers: [forever] })))
  })

  it.effect("handlerWaiting: a handler that sleeps on the Clock is woken by TestClock.adjust once its sleep is set", () => {
    const woke: Array<number> = []
    // Database work first: the forked drain reaches the sleep well after the test could have moved the clock.
    const polling = Handler.make(Report, {
      run: () => Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`SELECT pg_sleep(0.05)`
        yield* Effect.sleep("10 seconds")
        woke.push(yield* Clock.currentTimeMillis)
      })
    })
    return Effect.gen(function* () {
      const t0 = yield* Clock.currentTimeMillis
      yield* JobQueue.enqueueJob(Report, { month: "2025-03" }, { organizationId: ORG })
      const draining = yield* Effect.fork(SkiplockTest.drain())
      yield* SkiplockTest.handlerWaiting({ sleeps: 1 })
      yield* TestClock.adjust("10 seconds")
      const result = yield* Fiber.join(draining)
      expect(result.completed).toHaveLength(1)
      expect(woke).toEqual([t0 + 10_000])
    }).pipe(Effect.provide(SkiplockTest.layer({ handlers: [polling] })))
  })

  it.effect("handlerWaiting fails with HandlerNotWaiting, saying what it saw, when no handler waits", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(SkiplockTest.handlerWaiting({ within: "50 millis" }))
      expect(error).toBeInstanceOf(HandlerNotWaiting)
      expect(error.message).toBe(
        "handlerWaiting: after 50ms, 0 job(s) running, 0 in its handler, 0 sleep(s) on the TestClock (wanted the handler's timeout and 0 more)"
      )
    }).pipe(Effect.provide(SkiplockTest.layer({ handlers: [] }))))
})
