// Inline mode: enqueueing runs the handler at once, inside the enqueue call,
// through the same real path as drain (the job, job_runs and audit exist).
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Clock, Effect, FiberRef, HashMap, Option } from "effect"
import { CurrentJob, Handler, JobQueue } from "../../src/index.js"
import { SkiplockTest } from "../../src/testing/index.js"
import { auditEvents, ORG, Report, SepaExport } from "./support.js"

// Code under test: it enqueues a report for a month and returns the job.
const requestReport = (month: string) => JobQueue.enqueueJob(Report, { month }, { organizationId: ORG })

const Requester = FiberRef.unsafeMake("nobody")

describe("inline mode", () => {
  it.effect("enqueueing runs the handler before the enqueue returns, with the enqueuer's fiber refs", () => {
    const seen: Array<string> = []
    const report = Handler.make(Report, {
      run: (payload) => Effect.flatMap(FiberRef.get(Requester), (who) => Effect.sync(() => seen.push(`${payload.month} for ${who}`)))
    })
    return Effect.gen(function* () {
      const job = yield* requestReport("2025-03").pipe(Effect.locally(Requester, "alice"))
      expect(seen).toEqual(["2025-03 for alice"])
      expect(job.status).toBe("completed")
      expect(yield* auditEvents(job.id)).toEqual(["job_started", "job_completed"])
      expect((yield* SkiplockTest.attempts).map((attempt) => [attempt.jobId, attempt.outcome._tag])).toEqual([[job.id, "Completed"]])
    }).pipe(Effect.provide(SkiplockTest.layer({ handlers: [report], inline: true })))
  })

  it.effect("a job its handler enqueues runs inline too; a failure leaves the job waiting for its retry", () => {
    const order: Array<string> = []
    const report = Handler.make(Report, {
      run: (payload, job) =>
        Effect.gen(function* () {
          order.push(`report ${payload.month} starts`)
          const follow = yield* JobQueue.enqueueJob(SepaExport, { month: payload.month, batch: 1 }, { organizationId: job.organizationId })
          order.push(`report ${payload.month} sees the export ${follow.status}`)
          // The export ran inline in between; the report's job context and log annotations are still its own.
          const current = yield* Effect.serviceOption(CurrentJob)
          const annotated = HashMap.get(yield* FiberRef.get(FiberRef.currentLogAnnotations), "jobId")
          const own = Option.map(current, (c) => c.jobId).pipe(Option.contains(job.jobId)) && Option.contains(annotated, job.jobId)
          order.push(`report's context is ${own ? "its own" : "another job's"}`)
        })
    })
    const sepa = Handler.make(SepaExport, { run: (payload) => Effect.sync(() => order.push(`export ${payload.month}`)).pipe(Effect.zipRight(Effect.fail(new Error("SFTP refused")))) })
    return Effect.gen(function* () {
      const t0 = yield* Clock.currentTimeMillis
      yield* requestReport("2025-03")
      expect(order).toEqual(["report 2025-03 starts", "export 2025-03", "report 2025-03 sees the export pending", "report's context is its own"])
      const [exportJob] = yield* SkiplockTest.assertEnqueued({ jobType: SepaExport, status: "pending" })
      expect(exportJob).toMatchObject({ attempts: 1, error: "SFTP refused", runAt: new Date(t0 + 30_000) })
    }).pipe(Effect.provide(SkiplockTest.layer({ handlers: [report, sepa], inline: true })))
  })

  it.effect("a job scheduled for later stays in the queue, for drain", () => {
    let runs = 0
    const report = Handler.make(Report, { run: () => Effect.sync(() => runs++) })
    return Effect.gen(function* () {
      const t0 = yield* Clock.currentTimeMillis
      const job = yield* JobQueue.enqueueJob(Report, { month: "2025-03" }, { organizationId: ORG, runAt: new Date(t0 + 60_000) })
      expect(job.status).toBe("pending")
      expect(runs).toBe(0)
      yield* SkiplockTest.drain({ maxAdvance: "1 minute" })
      expect(runs).toBe(1)
    }).pipe(Effect.provide(SkiplockTest.layer({ handlers: [report], inline: true })))
  })

  it.effect("SkiplockTest.inline switches one piece of code to inline mode; elsewhere jobs wait for drain", () => {
    let runs = 0
    const report = Handler.make(Report, { run: () => Effect.sync(() => runs++) })
    return Effect.gen(function* () {
      const queued = yield* requestReport("2025-03")
      expect([queued.status, runs]).toEqual(["pending", 0])
      const inline = yield* SkiplockTest.inline(requestReport("2025-04"))
      expect([inline.status, runs]).toEqual(["completed", 1])
      yield* SkiplockTest.drain()
      expect(runs).toBe(2)
    }).pipe(Effect.provide(SkiplockTest.layer({ handlers: [report] })))
  })
})

describe("inline mode inside the enqueuer's transaction", () => {
  it.effect("the handler's work commits or rolls back with the enqueuer's transaction", () => {
    const report = Handler.make(Report, {
      run: (payload) => Effect.flatMap(SqlClient.SqlClient, (sql) => sql`INSERT INTO reports (month) VALUES (${payload.month})`)
    })
    return Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE reports (month text NOT NULL)`
      const committed = yield* sql.withTransaction(requestReport("2025-03"))
      expect(committed.status).toBe("completed")
      const rolledBack = yield* sql.withTransaction(Effect.zipRight(requestReport("2025-04"), Effect.fail("the enqueuer fails after enqueueing" as const))).pipe(Effect.flip)
      expect(rolledBack).toBe("the enqueuer fails after enqueueing")
      expect(yield* sql`SELECT month FROM reports`).toEqual([{ month: "2025-03" }])
      expect((yield* SkiplockTest.enqueued()).map((job) => [job.payload, job.status])).toEqual([[{ month: "2025-03" }, "completed"]])
    }).pipe(Effect.provide(SkiplockTest.layer({ handlers: [report], inline: true })))
  })

  it.effect("a handler whose statement fails inside the enqueuer's transaction leaves that transaction usable: the retry is recorded and the enqueuer's work commits", () => {
    const report = Handler.make(Report, {
      run: (payload) => Effect.flatMap(SqlClient.SqlClient, (sql) => sql`INSERT INTO reports (month) VALUES (${payload.month})`)
    })
    return Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE reports (month text PRIMARY KEY)`
      yield* sql`CREATE TABLE orders (id text)`
      yield* sql`INSERT INTO reports VALUES ('2025-03')`
      const job = yield* sql.withTransaction(Effect.zipRight(sql`INSERT INTO orders VALUES ('o-1')`, requestReport("2025-03")))
      // A worker runs the handler after the commit, on a connection of its own: its failed INSERT aborts nothing else.
      expect(job.status).toBe("pending")
      expect(job.runAt.getTime()).toBe((yield* Clock.currentTimeMillis) + 30_000)
      expect(yield* sql`SELECT id FROM orders`).toEqual([{ id: "o-1" }])
      expect((yield* SkiplockTest.attempts).map((attempt) => attempt.outcome._tag)).toEqual(["RetryScheduled"])
      expect(yield* auditEvents(job.id)).toEqual(["job_started", "job_retry_scheduled"])
    }).pipe(Effect.provide(SkiplockTest.layer({ handlers: [report], inline: true })))
  })
})

describe("inline mode with several jobs at once", () => {
  // The second job has the higher priority: claim_next_job alone would take it first.
  const batch = (months: readonly [string, string]) =>
    JobQueue.enqueueMany([
      { organizationId: ORG, jobType: "report_generation", payload: { month: months[0] } },
      { organizationId: ORG, jobType: "report_generation", payload: { month: months[1] }, priority: -1 }
    ])

  it.effect("enqueueMany runs each job once, in the order given", () => {
    const months: Array<string> = []
    const report = Handler.make(Report, { run: (payload) => Effect.sync(() => months.push(payload.month)) })
    return Effect.gen(function* () {
      const jobs = yield* batch(["2025-01", "2025-02"])
      expect(months).toEqual(["2025-01", "2025-02"])
      expect(jobs.map((job) => job.status)).toEqual(["completed", "completed"])
    }).pipe(Effect.provide(SkiplockTest.layer({ handlers: [report], inline: true })))
  })

  it.effect("inside the enqueuer's transaction, enqueueMany runs each job once, in claim order", () => {
    const months: Array<string> = []
    const report = Handler.make(Report, { run: (payload) => Effect.sync(() => months.push(payload.month)) })
    return Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const jobs = yield* sql.withTransaction(batch(["2025-01", "2025-02"]))
      expect(months).toEqual(["2025-02", "2025-01"])
      expect(jobs.map((job) => job.status)).toEqual(["completed", "completed"])
      expect(yield* SkiplockTest.attempts).toHaveLength(2)
    }).pipe(Effect.provide(SkiplockTest.layer({ handlers: [report], inline: true })))
  })
})
