// runJob: one attempt of one handler for one payload, through the real path
// (claim_next_job, decode, transaction, job_runs, audit), with its outcome.
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Clock, Effect, Fiber, Schema, TestClock } from "effect"
import { Handler, JobDefinition, JobQueue, PermanentError } from "../../src/index.js"
import { SkiplockTest, TEST_ORGANIZATION_ID } from "../../src/testing/index.js"
import { eventually } from "../support/live.js"
import { auditEvents, jobRun, ORG, Report } from "./support.js"

// The stored payload is the Schema's encoded form; the handler gets the decoded one.
const Settlement = JobDefinition.make("settlement_calculation", Schema.Struct({ contractId: Schema.String, dueOn: Schema.Date }))

describe("runJob", () => {
  it.effect("runs the handler once with the decoded payload and records the completion like a worker", () => {
    const seen: Array<unknown> = []
    const settle = Handler.make(Settlement, { run: (payload, job) => Effect.sync(() => seen.push({ payload, attempt: job.attempt, org: job.organizationId })) })
    return Effect.gen(function* () {
      const t0 = yield* Clock.currentTimeMillis
      const run = yield* SkiplockTest.runJob(settle, { contractId: "c-1", dueOn: new Date("2025-04-15T00:00:00.000Z") })

      expect(run).toMatchObject({ jobType: "settlement_calculation", organizationId: TEST_ORGANIZATION_ID, attempt: 1, at: new Date(t0), outcome: { _tag: "Completed" } })
      expect(seen).toEqual([{ payload: { contractId: "c-1", dueOn: new Date("2025-04-15T00:00:00.000Z") }, attempt: 1, org: TEST_ORGANIZATION_ID }])
      const [stored] = yield* SkiplockTest.enqueued({ jobType: Settlement })
      expect(stored).toMatchObject({ id: run.jobId, status: "completed", payload: { contractId: "c-1", dueOn: "2025-04-15T00:00:00.000Z" } })
      expect(yield* jobRun(run.jobId)).toMatchObject({ status: "completed", attempts: 1 })
      expect(yield* auditEvents(run.jobId)).toEqual(["job_started", "job_completed"])
    }).pipe(Effect.provide(SkiplockTest.layer({ handlers: [] })))
  })

  it.effect("an idempotency key used before fails with JobAlreadyEnqueued, naming the earlier job, and runs nothing", () => {
    let runs = 0
    const report = Handler.make(Report, { run: () => Effect.sync(() => void runs++) })
    return Effect.gen(function* () {
      const first = yield* SkiplockTest.runJob(report, { month: "2025-03" }, { idempotencyKey: "report:2025-03" })
      const again = yield* Effect.flip(SkiplockTest.runJob(report, { month: "2025-04" }, { idempotencyKey: "report:2025-03" }))
      expect(again).toMatchObject({ _tag: "JobAlreadyEnqueued", jobId: first.jobId, idempotencyKey: "report:2025-03", status: "completed" })
      expect(again.message).toContain(`a job with idempotency key "report:2025-03" exists already (${first.jobId}, completed)`)
      expect(runs).toBe(1)
    }).pipe(Effect.provide(SkiplockTest.layer({ handlers: [] })))
  })

  it.effect("interrupting runJob releases its job like a worker's shutdown: back to pending, the attempt not counted", () => {
    const stuck = Handler.make(Report, { run: () => Effect.never })
    return Effect.gen(function* () {
      const running = yield* Effect.fork(SkiplockTest.runJob(stuck, { month: "2025-03" }))
      yield* eventually(Effect.map(SkiplockTest.enqueued({ status: "processing" }), (jobs) => jobs.length === 1), "the job runs")
      yield* Fiber.interrupt(running)
      const [row] = yield* SkiplockTest.enqueued()
      expect(row).toMatchObject({ status: "pending", attempts: 0, error: null })
      expect(yield* auditEvents(row!.id)).toEqual(["job_started", "job_released"])
    }).pipe(Effect.provide(SkiplockTest.layer({ handlers: [] })))
  })

  it.effect("a failed attempt's outcome carries the retry's run_at: now + 30 s, then + 120 s", () => {
    const failing = Handler.make(Report, { run: () => Effect.fail(new Error("bank API unavailable")) })
    return Effect.gen(function* () {
      const t0 = yield* Clock.currentTimeMillis
      const first = yield* SkiplockTest.runJob(failing, { month: "2025-03" }, { organizationId: ORG })
      expect(first.outcome).toEqual(expect.objectContaining({ _tag: "RetryScheduled", error: "bank API unavailable", runAt: new Date(t0 + 30_000) }))
      const [row] = yield* SkiplockTest.enqueued()
      expect(row).toMatchObject({ id: first.jobId, status: "pending", attempts: 1, runAt: new Date(t0 + 30_000), error: "bank API unavailable" })
      expect(yield* jobRun(first.jobId)).toMatchObject({ status: "retry_scheduled", lastError: "bank API unavailable" })

      // With one attempt allowed, the same failure is final.
      const last = yield* SkiplockTest.runJob(failing, { month: "2025-04" }, { organizationId: ORG, maxAttempts: 1 })
      expect(last.outcome).toEqual(expect.objectContaining({ _tag: "Failed", error: "bank API unavailable" }))
    }).pipe(Effect.provide(SkiplockTest.layer({ handlers: [] })))
  })

  it.effect("uses the layer's retryBackoff, as a worker with that option would", () => {
    const failing = Handler.make(Report, { run: () => Effect.fail(new Error("down")) })
    return Effect.gen(function* () {
      const t0 = yield* Clock.currentTimeMillis
      const run = yield* SkiplockTest.runJob(failing, { month: "2025-03" })
      expect(run.outcome).toEqual(expect.objectContaining({ _tag: "RetryScheduled", runAt: new Date(t0 + 5_000) }))
    }).pipe(Effect.provide(SkiplockTest.layer({ handlers: [], retryBackoff: "5 seconds" })))
  })

  it.effect("a PermanentError fails the job at once", () => {
    const rejecting = Handler.make(Report, { run: () => Effect.fail(new PermanentError({ message: "IBAN rejected" })) })
    return Effect.gen(function* () {
      const run = yield* SkiplockTest.runJob(rejecting, { month: "2025-03" })
      expect(run.outcome).toEqual(expect.objectContaining({ _tag: "Failed", error: "PermanentError: IBAN rejected" }))
      expect(yield* auditEvents(run.jobId)).toEqual(["job_started", "job_failed"])
    }).pipe(Effect.provide(SkiplockTest.layer({ handlers: [] })))
  })

  it.effect("a transactional handler's writes roll back with its failure and commit with its completion", () => {
    const write = (fail: boolean) =>
      Handler.make(Report, {
        transactional: true,
        run: (payload) =>
          Effect.gen(function* () {
            const sql = yield* SqlClient.SqlClient
            yield* sql`INSERT INTO reports (month) VALUES (${payload.month})`
            if (fail) return yield* Effect.fail(new Error("render failed"))
          })
      })
    return Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE reports (month text NOT NULL)`
      expect((yield* SkiplockTest.runJob(write(true), { month: "2025-03" })).outcome._tag).toBe("RetryScheduled")
      expect(yield* sql`SELECT month FROM reports`).toEqual([])
      expect((yield* SkiplockTest.runJob(write(false), { month: "2025-04" })).outcome._tag).toBe("Completed")
      expect(yield* sql`SELECT month FROM reports`).toEqual([{ month: "2025-04" }])
    }).pipe(Effect.provide(SkiplockTest.layer({ handlers: [] })))
  })

  it.effect("runs exactly its own job when other jobs of the type are due, and leaves them untouched", () => {
    let ran: Array<string> = []
    const report = Handler.make(Report, { run: (payload) => Effect.sync(() => ran.push(payload.month)) })
    return Effect.gen(function* () {
      // Enqueued earlier and with a higher priority: claim_next_job alone would pick these first.
      const others = yield* JobQueue.enqueueMany([
        { organizationId: ORG, jobType: "report_generation", payload: { month: "2025-01" }, priority: -5 },
        { organizationId: ORG, jobType: "report_generation", payload: { month: "2025-02" } }
      ])
      const run = yield* SkiplockTest.runJob(report, { month: "2025-03" }, { organizationId: ORG })
      expect(run.outcome._tag).toBe("Completed")
      expect(ran).toEqual(["2025-03"])
      for (const other of others) {
        expect((yield* SkiplockTest.enqueued()).find((job) => job.id === other.id)).toMatchObject({ status: "pending", attempts: 0 })
        expect(yield* auditEvents(other.id)).toEqual([])
      }
      ran = []
      yield* SkiplockTest.drain()
      expect(ran).toEqual(["2025-01", "2025-02"])
    }).pipe(Effect.provide(SkiplockTest.layer({ handlers: [report] })))
  })

  it.effect("an invalid payload is refused before anything is stored", () => {
    const settle = Handler.make(Settlement, { run: () => Effect.void })
    return Effect.gen(function* () {
      const error = yield* Effect.flip(SkiplockTest.runJob(settle, { contractId: "c-1", dueOn: new Date("not a date") }))
      expect(error._tag).toBe("InvalidPayload")
      expect(yield* SkiplockTest.enqueued()).toEqual([])
    }).pipe(Effect.provide(SkiplockTest.layer({ handlers: [] })))
  })

  it.effect("a handler that runs past its timeout is stopped at the deadline on the test's clock and retried", () => {
    const hanging = Handler.make(Report, { run: () => Effect.never, timeout: "5 minutes" })
    return Effect.gen(function* () {
      const fiber = yield* Effect.fork(SkiplockTest.runJob(hanging, { month: "2025-03" }, { organizationId: ORG }))
      // Moving the clock before the handler's timeout is set would leave the timeout 5 minutes ahead for ever.
      yield* SkiplockTest.handlerWaiting()
      yield* TestClock.adjust("4 minutes")
      expect(fiber.unsafePoll()).toBeNull()
      yield* TestClock.adjust("1 minute")
      const run = yield* Fiber.join(fiber)
      expect(run.outcome).toEqual(expect.objectContaining({
        _tag: "RetryScheduled",
        error: `HandlerTimeout: handler for "report_generation" timed out after 300000 ms`
      }))
    }).pipe(Effect.provide(SkiplockTest.layer({ handlers: [] })))
  })
})
