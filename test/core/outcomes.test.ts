// How a handler's typed result maps to the job's state: success, retryable and
// permanent errors, defects, timeouts, undecodable payloads, transactions.
import { SqlClient } from "@effect/sql"
import { SqlError } from "@effect/sql/SqlError"
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Clock, Data, Deferred, Duration, Effect, Fiber, Logger, ParseResult, Schema, TestClock, type Tracer } from "effect"
import pg from "pg"
import { CurrentJob, Handler, JobDefinition, JobQueue, PermanentError, Worker } from "../../src/index.js"
import type { ClaimedJob, Outcome } from "../../src/index.js"
import { MAX_UNCOUNTED_RELEASES, UNCOUNTED_RELEASE_SPAN, UNCOUNTED_RELEASES_AT_MOST } from "../../src/internal/executeJob.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { auditEvents, jobRow, ORG } from "../support/jobs.js"
import { advance, eventually } from "../support/live.js"

const Settlement = JobDefinition.make("settlement_calculation", Schema.Struct({ contractId: Schema.String, amountCents: Schema.Int }))

class ContractClosed extends Data.TaggedError("ContractClosed")<{ readonly contractId: string }> {
  override get message() {
    return `contract ${this.contractId} is closed`
  }
}

const reset = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  Effect.zipRight(sql`DELETE FROM job_queue`, sql`CREATE TABLE IF NOT EXISTS settlements (contract_id text PRIMARY KEY, amount_cents int NOT NULL)`)
)

// The handler's own other database (a warehouse) refuses connections: it looks like an outage.
const warehouseDown = () =>
  Effect.fail(new SqlError({ message: "warehouse", cause: Object.assign(new Error("connect ECONNREFUSED 10.0.0.9:5432"), { code: "ECONNREFUSED" }) }))

/** A fresh queue with one job that has a single attempt. */
const oneAttemptJob = Effect.zipRight(
  reset,
  JobQueue.enqueue({ organizationId: ORG, jobType: "settlement_calculation", payload: { contractId: "c-1", amountCents: 1 }, maxAttempts: 1 }).pipe(
    Effect.provide(JobQueue.layer([]))
  )
)

/** Enqueues one job, runs a worker until that job's first outcome, and returns it. */
const firstOutcome = (handler: Handler.Handler, payload: unknown = { contractId: "c-1", amountCents: 1250 }) =>
  Effect.scoped(
    Effect.gen(function* () {
      yield* reset
      const job = yield* JobQueue.enqueue({ organizationId: ORG, jobType: "settlement_calculation", payload }).pipe(
        Effect.provide(JobQueue.layer([]))
      )
      const done = yield* Deferred.make<{ job: ClaimedJob; outcome: Outcome }>()
      yield* Worker.make({
        handlers: [handler],
        listen: false,
        onOutcome: (claimed, outcome) => Deferred.unsafeDone(done, Effect.succeed({ job: claimed, outcome }))
      })
      const result = yield* Deferred.await(done)
      return { id: job.id, ...result }
    })
  )

const jobRun = (id: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ status: string; idempotencyStatus: string; lastError: string | null; traceId: string; idempotencyKey: string }>`
      SELECT status, idempotency_status AS "idempotencyStatus", last_error AS "lastError", trace_id AS "traceId",
             idempotency_key AS "idempotencyKey"
      FROM job_runs WHERE job_id = ${id}`
  ).pipe(Effect.map((rows) => rows[0]!))

/**
 * A job shows as processing once claimed, a moment before its handler starts
 * and the timeout watcher arms: moving the TestClock before that would move
 * the job's deadline along with it. Waits until a sleep ends `timeout` from
 * now, and returns that time.
 */
const untilWatcherSleepsFor = (timeout: Duration.DurationInput) =>
  Effect.gen(function* () {
    const deadline = (yield* Clock.currentTimeMillis) + Duration.toMillis(Duration.decode(timeout))
    yield* eventually(Effect.map(TestClock.sleeps(), (sleeps) => Chunk.contains(sleeps, deadline)), "the timeout watcher sleeps until the job's deadline")
    return deadline
  })

describe("outcomes", () => {
  it.layer(TestDatabase.layer())((it) => {
    it.scoped("success completes the job, its job_runs row and its audit trail", () =>
      Effect.gen(function* () {
        const seen: Array<unknown> = []
        const handler = Handler.make(Settlement, {
          run: (payload, job) => Effect.sync(() => seen.push({ payload, attempt: job.attempt, organizationId: job.organizationId }))
        })
        const { id, outcome } = yield* firstOutcome(handler)
        expect(outcome._tag).toBe("Completed")
        expect(seen).toEqual([{ payload: { contractId: "c-1", amountCents: 1250 }, attempt: 1, organizationId: ORG }])
        expect(yield* jobRow(id)).toMatchObject({ status: "completed", attempts: 1, error: null, lockedBy: null })
        expect(yield* jobRun(id)).toMatchObject({ status: "completed", idempotencyStatus: "completed", lastError: null, idempotencyKey: id })
        expect(yield* auditEvents(id)).toEqual(["job_started", "job_completed"])
      }))

    it.scoped("a PermanentError fails the job at once, without retry", () =>
      Effect.gen(function* () {
        const handler = Handler.make(Settlement, { run: () => Effect.fail(new PermanentError({ message: "IBAN rejected by the bank" })) })
        const { id, outcome } = yield* firstOutcome(handler)
        expect(outcome._tag).toBe("Failed")
        expect(yield* jobRow(id)).toMatchObject({ status: "failed", attempts: 1, error: "PermanentError: IBAN rejected by the bank" })
        expect(yield* jobRun(id)).toMatchObject({ status: "failed", idempotencyStatus: "failed", lastError: "PermanentError: IBAN rejected by the bank" })
        expect(yield* auditEvents(id)).toEqual(["job_started", "job_failed"])
      }))

    it.scoped("a PermanentError of another copy of skiplock (a handler module that loaded its own) fails the job at once too", () =>
      Effect.gen(function* () {
        class CopysPermanentError extends Data.TaggedError("PermanentError")<{ readonly message: string }> {}
        const handler = Handler.make(Settlement, { run: () => Effect.fail(new CopysPermanentError({ message: "IBAN rejected by the bank" })) })
        const { id, outcome } = yield* firstOutcome(handler)
        expect(outcome._tag).toBe("Failed")
        expect(yield* jobRow(id)).toMatchObject({ status: "failed", attempts: 1, error: "PermanentError: IBAN rejected by the bank" })
      }))

    it.scoped("a typed error the handler declares permanent fails at once; other typed errors retry", () =>
      Effect.gen(function* () {
        const handler = Handler.make(Settlement, {
          run: (payload) => (payload.amountCents < 0 ? Effect.fail(new ContractClosed({ contractId: payload.contractId })) : Effect.fail(new Error("timeout talking to ledger"))),
          permanent: (error) => error instanceof ContractClosed
        })
        const permanent = yield* firstOutcome(handler, { contractId: "c-9", amountCents: -1 })
        expect(permanent.outcome).toMatchObject({ _tag: "Failed", error: "ContractClosed: contract c-9 is closed" })
        const retryable = yield* firstOutcome(handler)
        expect(retryable.outcome).toMatchObject({ _tag: "RetryScheduled", error: "timeout talking to ledger" })
        expect(yield* jobRow(retryable.id)).toMatchObject({ status: "pending", attempts: 1 })
      }))

    it.scoped("a payload that does not decode (inserted by hand) fails at once, naming the field and why", () =>
      Effect.gen(function* () {
        const handler = Handler.make(Settlement, { run: () => Effect.void })
        const { id, outcome } = yield* firstOutcome(handler, { contractId: "c-1", amountCents: "12.50" })
        expect(outcome._tag).toBe("Failed")
        const row = yield* jobRow(id)
        expect(row.status).toBe("failed")
        expect(row.error).toContain("invalid payload")
        expect(row.error).toContain(`["amountCents"]`)
        expect(row.error).toContain(`Expected number, actual "12.50"`)
        expect((yield* jobRun(id)).lastError).toBe(row.error)
        const sql = yield* SqlClient.SqlClient
        const [audit] = yield* sql<{ details: { error: string } }>`SELECT details FROM audit_logs WHERE job_id = ${id} AND event = 'job_failed'`
        expect(audit!.details.error).toBe(row.error)
      }))

    it.scoped("a tagged error without a message is recorded by its tag", () =>
      Effect.gen(function* () {
        class LedgerLocked extends Data.TaggedError("LedgerLocked")<{}> {}
        const handler = Handler.make(Settlement, { run: () => Effect.fail(new LedgerLocked()) })
        const { id, outcome } = yield* firstOutcome(handler)
        expect(outcome).toMatchObject({ _tag: "RetryScheduled", error: "LedgerLocked" })
        expect((yield* jobRow(id)).error).toBe("LedgerLocked")
      }))

    it.scoped("a defect, even a thrown non-Error value, is retried with its text recorded", () =>
      Effect.gen(function* () {
        const handler = Handler.make(Settlement, {
          run: () =>
            Effect.sync(() => {
              throw { code: "E_LEDGER", detail: "ledger locked" }
            })
        })
        const { id, outcome } = yield* firstOutcome(handler)
        expect(outcome._tag).toBe("RetryScheduled")
        expect((yield* jobRow(id)).error).toBe(`defect: {"code":"E_LEDGER","detail":"ledger locked"}`)
      }))

    it.scoped("a handler that runs past its timeout is interrupted and retried", () =>
      Effect.gen(function* () {
        const handler = Handler.make(Settlement, { run: () => Effect.never, timeout: "2 minutes" })
        const fiber = yield* Effect.fork(firstOutcome(handler))
        yield* eventually(Effect.map(SqlClient.SqlClient.pipe(Effect.flatMap((sql) => sql<{ n: number }>`SELECT count(*)::int AS n FROM job_queue WHERE status = 'processing'`)), (rows) => rows[0]!.n === 1), "the job runs")
        yield* untilWatcherSleepsFor("2 minutes")
        yield* TestClock.adjust("2 minutes")
        const { id, outcome } = yield* Fiber.join(fiber)
        expect(outcome).toMatchObject({ _tag: "RetryScheduled", error: `HandlerTimeout: handler for "settlement_calculation" timed out after 120000 ms` })
        expect((yield* jobRow(id)).status).toBe("pending")
      }))

    it.scoped("a timeout is recorded as the timeout even when a finalizer of the handler then fails", () =>
      Effect.gen(function* () {
        const handler = Handler.make(Settlement, {
          run: () => Effect.never.pipe(Effect.ensuring(Effect.die(new Error("cleanup broke")))),
          timeout: "2 minutes"
        })
        const fiber = yield* Effect.fork(firstOutcome(handler))
        yield* eventually(Effect.map(SqlClient.SqlClient.pipe(Effect.flatMap((sql) => sql<{ n: number }>`SELECT count(*)::int AS n FROM job_queue WHERE status = 'processing'`)), (rows) => rows[0]!.n === 1), "the job runs")
        yield* untilWatcherSleepsFor("2 minutes")
        yield* TestClock.adjust("2 minutes")
        const { id, outcome } = yield* Fiber.join(fiber)
        expect(outcome._tag).toBe("RetryScheduled")
        const { error } = yield* jobRow(id)
        expect(error).toContain(`HandlerTimeout: handler for "settlement_calculation" timed out after 120000 ms`)
        expect(error).toContain("cleanup broke")
      }))

    it.scoped("a handler that cannot be interrupted keeps its slot and lease past its timeout, is reported once a minute later, and is then recorded as timed out", () =>
      Effect.gen(function* () {
        yield* reset
        const warnings: Array<string> = []
        const capture = Logger.make(({ logLevel, message }) => {
          if (logLevel._tag === "Warning") warnings.push(String(message))
        })
        const stuck = warnings.filter.bind(warnings, (text) => text.includes("has not stopped"))
        const handler = Handler.make(Settlement, { run: () => Effect.uninterruptible(Effect.sleep("5 minutes")), timeout: "2 minutes" })
        const done = yield* Deferred.make<Outcome>()
        const { id } = yield* JobQueue.enqueue({ organizationId: ORG, jobType: "settlement_calculation", payload: { contractId: "c-1", amountCents: 1 } }).pipe(
          Effect.provide(JobQueue.layer([]))
        )
        const worker = yield* Worker.make({ handlers: [handler], listen: false, onOutcome: (_, outcome) => Deferred.unsafeDone(done, Effect.succeed(outcome)) }).pipe(
          Effect.provide(Logger.replace(Logger.defaultLogger, capture))
        )
        yield* untilWatcherSleepsFor("2 minutes")
        yield* advance(worker, "2 minutes", "5 seconds", { running: 1 })
        yield* advance(worker, "59 seconds", "5 seconds", { running: 1 })
        expect(stuck()).toEqual([])
        // Still held: not rescued, so not run a second time elsewhere while this attempt may still write.
        expect(yield* jobRow(id)).toMatchObject({ status: "processing", attempts: 1 })
        yield* advance(worker, "1 second", "1 second", { running: 1 })
        yield* eventually(Effect.sync(() => stuck().length === 1), "the stuck handler is reported")
        expect(stuck()[0]).toContain("has not stopped 1m after its timeout")
        yield* advance(worker, "1 minute", "5 seconds", { running: 1 })
        expect(stuck()).toHaveLength(1)
        yield* TestClock.adjust("1 minute")
        expect(yield* Deferred.await(done)).toMatchObject({ _tag: "RetryScheduled", error: `HandlerTimeout: handler for "settlement_calculation" timed out after 120000 ms` })
      }))

    it.scoped("a payload Schema that decodes asynchronously is decoded for the handler, and its refusal fails the job", () =>
      Effect.gen(function* () {
        // Its check cannot run synchronously (it asks a service); JobQueue accepts such Schemas too.
        const Checked = Schema.transformOrFail(Settlement.payload, Schema.Struct({ contractId: Schema.String, amountCents: Schema.Int }), {
          strict: true,
          decode: (value, _, ast) =>
            Effect.flatMap(Effect.promise(() => Promise.resolve(value.contractId !== "closed")), (open) =>
              open ? Effect.succeed(value) : Effect.fail(new ParseResult.Type(ast, value, "contract closed is closed"))
            ),
          encode: ParseResult.succeed
        })
        const seen: Array<unknown> = []
        const handler = Handler.make(JobDefinition.make("settlement_calculation", Checked), { run: (payload) => Effect.sync(() => void seen.push(payload)) })
        expect((yield* firstOutcome(handler)).outcome._tag).toBe("Completed")
        expect(seen).toEqual([{ contractId: "c-1", amountCents: 1250 }])
        const refused = yield* firstOutcome(handler, { contractId: "closed", amountCents: 1 })
        expect(refused.outcome._tag).toBe("Failed")
        expect((yield* jobRow(refused.id)).error).toContain("contract closed is closed")
      }))

    it.scoped("a handler that interrupts itself counts as a failed attempt (it is not a worker shutdown)", () =>
      Effect.gen(function* () {
        const handler = Handler.make(Settlement, { run: () => Effect.interrupt })
        const { id, outcome } = yield* firstOutcome(handler)
        expect(outcome._tag).toBe("RetryScheduled")
        expect(yield* jobRow(id)).toMatchObject({ status: "pending", attempts: 1 })
        expect((yield* jobRow(id)).error).toContain("interrupted")
        expect(yield* auditEvents(id)).toEqual(["job_started", "job_retry_scheduled"])
      }))

    it.scoped("an error whose message getter throws, or a permanent predicate that throws, is still recorded", () =>
      Effect.gen(function* () {
        class Unreadable extends Data.TaggedError("Unreadable")<{}> {
          override get message(): string {
            throw new Error("no message here")
          }
        }
        const unreadable = yield* firstOutcome(Handler.make(Settlement, { run: () => Effect.fail(new Unreadable()) }))
        expect(unreadable.outcome._tag).toBe("RetryScheduled")
        expect((yield* jobRow(unreadable.id)).error).toContain("Unreadable")

        const predicateThrows = Handler.make(Settlement, {
          run: () => Effect.fail(new ContractClosed({ contractId: "c-1" })),
          permanent: () => {
            throw new Error("predicate broke")
          }
        })
        const { id, outcome } = yield* firstOutcome(predicateThrows)
        expect(outcome._tag).toBe("RetryScheduled")
        const { error } = yield* jobRow(id)
        expect(error).toContain("contract c-1 is closed")
        expect(error).toContain("predicate broke")
      }))

    it.scoped("a job with a shorter timeout, started while a longer one runs, times out at its own deadline", () =>
      Effect.gen(function* () {
        yield* reset
        const sql = yield* SqlClient.SqlClient
        const Report = JobDefinition.make("report_generation", Schema.Struct({ n: Schema.Number }))
        const outcomes = new Map<string, Outcome>()
        yield* Worker.make({
          handlers: [
            Handler.make(Settlement, { run: () => Effect.never, timeout: "10 minutes" }),
            Handler.make(Report, { run: () => Effect.never, timeout: "90 seconds" })
          ],
          onOutcome: (job, outcome) => outcomes.set(job.jobType, outcome)
        })
        const processing = (n: number) =>
          Effect.map(sql<{ n: number }>`SELECT count(*)::int AS n FROM job_queue WHERE status = 'processing'`, (rows) => rows[0]!.n === n)
        yield* JobQueue.enqueue({ organizationId: ORG, jobType: "settlement_calculation", payload: { contractId: "c-1", amountCents: 1 } }).pipe(
          Effect.provide(JobQueue.layer([]))
        )
        yield* eventually(processing(1), "the long job runs")
        // the notification wakes the worker; the watcher sleeps until the long job's deadline by now
        yield* JobQueue.enqueue({ organizationId: ORG, jobType: "report_generation", payload: { n: 1 } }).pipe(Effect.provide(JobQueue.layer([])))
        yield* eventually(processing(2), "both jobs run")
        const shortDeadline = yield* untilWatcherSleepsFor("90 seconds")

        // TestClock keeps interrupted sleeps listed: count the long deadline's to see the watcher re-arm
        const longDeadline = shortDeadline - 90_000 + 600_000
        const armedForLong = Effect.map(TestClock.sleeps(), (sleeps) => Chunk.filter(sleeps, (at) => at === longDeadline).length)
        const armedBefore = yield* armedForLong

        yield* TestClock.adjust("90 seconds")
        yield* eventually(Effect.sync(() => outcomes.has("report_generation")), "the short job's outcome")
        expect(outcomes.get("report_generation")).toMatchObject({
          _tag: "RetryScheduled",
          error: `HandlerTimeout: handler for "report_generation" timed out after 90000 ms`
        })
        expect(outcomes.has("settlement_calculation")).toBe(false)

        yield* eventually(Effect.map(armedForLong, (n) => n > armedBefore), "the watcher sleeps until the long job's deadline")
        yield* TestClock.adjust("510 seconds")
        yield* eventually(Effect.sync(() => outcomes.has("settlement_calculation")), "the long job's outcome")
        expect(outcomes.get("settlement_calculation")).toMatchObject({
          _tag: "RetryScheduled",
          error: `HandlerTimeout: handler for "settlement_calculation" timed out after 600000 ms`
        })
      }))

    it.scoped("an error text with a NUL character, which PostgreSQL's text cannot hold, is recorded with it escaped", () =>
      Effect.gen(function* () {
        const handler = Handler.make(Settlement, { run: () => Effect.fail(new Error("ledger said: bad\u0000byte")) })
        const { id, outcome } = yield* firstOutcome(handler)
        expect(outcome).toMatchObject({ _tag: "RetryScheduled", error: "ledger said: bad\\u0000byte" })
        expect(yield* jobRow(id)).toMatchObject({ status: "pending", attempts: 1, error: "ledger said: bad\\u0000byte" })
      }))

    it.scoped("a payload Schema that throws on a payload of ordinary depth is a bug, retried as one, not an invalid payload", () =>
      Effect.gen(function* () {
        let broken = false
        const Checked = JobDefinition.make(
          "settlement_calculation",
          Schema.Struct({
            contractId: Schema.String,
            amountCents: Schema.Int.pipe(Schema.filter((n) => {
              if (broken) throw new TypeError("Cannot read properties of undefined (reading 'has')") // a lookup table not loaded yet
              return n > 0
            }))
          })
        )
        const handler = Handler.make(Checked, { run: () => Effect.void })
        broken = true
        const { id, outcome } = yield* firstOutcome(handler)
        expect(outcome._tag).toBe("RetryScheduled")
        expect(yield* jobRow(id)).toMatchObject({ status: "pending", attempts: 1 })
        expect((yield* jobRow(id)).error).toContain("Cannot read properties of undefined")
      }))

    it.scoped("a transactional handler's SQL commits with the completion, and rolls back with a failure", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const settle = (failAfterWrite: boolean) =>
          Handler.make(Settlement, {
            transactional: true,
            run: (payload) =>
              Effect.gen(function* () {
                yield* sql`INSERT INTO settlements (contract_id, amount_cents) VALUES (${payload.contractId}, ${payload.amountCents})`
                if (failAfterWrite) return yield* Effect.fail(new Error("posting to the ledger failed"))
              })
          })
        yield* reset
        yield* sql`DELETE FROM settlements`
        const failed = yield* firstOutcome(settle(true))
        expect(failed.outcome._tag).toBe("RetryScheduled")
        expect(yield* sql`SELECT * FROM settlements`).toEqual([])

        const ok = yield* firstOutcome(settle(false))
        expect(ok.outcome._tag).toBe("Completed")
        expect(yield* sql`SELECT contract_id AS "contractId", amount_cents AS "amountCents" FROM settlements`).toEqual([{ contractId: "c-1", amountCents: 1250 }])
        expect(yield* auditEvents(ok.id)).toEqual(["job_started", "job_completed"])
      }))

    it.scoped("a transactional handler's transaction failing on its own is retried without asking its permanent predicate, which sees only the handler's own errors", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const asked: Array<unknown> = []
        const handler = Handler.make(Settlement, {
          transactional: true,
          // The handler succeeds, but leaves its transaction unable to record the run: skiplock's own
          // statement in it (commit_job_run) then fails.
          run: (payload) =>
            sql`SET LOCAL search_path = nowhere`.pipe(
              Effect.mapError(() => new ContractClosed({ contractId: payload.contractId }))
            ),
          // Typed for the handler's errors: anything but ContractClosed would be a surprise here.
          permanent: (error) => {
            asked.push(error)
            return error._tag !== "ContractClosed"
          }
        })
        const { id, outcome } = yield* firstOutcome(handler)
        expect(outcome).toMatchObject({ _tag: "RetryScheduled", error: expect.stringContaining("commit_job_run") })
        expect(asked).toEqual([])
        expect(yield* jobRow(id)).toMatchObject({ status: "pending", attempts: 1 })
      }))

    it.scoped("a timeout that comes while a transactional handler's COMMIT is on its way completes the job: its effects are in", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* reset
        yield* sql`DELETE FROM settlements`
        // A deferred trigger holds the handler's COMMIT for 2 s of real time, while the TestClock passes the deadline.
        yield* sql`CREATE OR REPLACE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(2); RETURN NULL; END $$`
        yield* sql`CREATE CONSTRAINT TRIGGER settlements_slow_commit AFTER INSERT ON settlements
                   DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()`
        yield* Effect.addFinalizer(() => Effect.orDie(sql`DROP TRIGGER settlements_slow_commit ON settlements`))
        let runs = 0
        const handler = Handler.make(Settlement, {
          transactional: true,
          timeout: "1 minute",
          run: (payload) =>
            Effect.suspend(() => {
              runs++
              return Effect.asVoid(sql`INSERT INTO settlements (contract_id, amount_cents) VALUES (${payload.contractId}, ${payload.amountCents})`)
            })
        })
        const fiber = yield* Effect.fork(firstOutcome(handler))
        yield* eventually(Effect.map(SqlClient.SqlClient.pipe(Effect.flatMap((sql) => sql<{ n: number }>`SELECT count(*)::int AS n FROM job_queue WHERE status = 'processing'`)), (rows) => rows[0]!.n === 1), "the job runs")
        yield* untilWatcherSleepsFor("1 minute")
        const committing = sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event = 'PgSleep' AND query = 'COMMIT'`
        yield* eventually(Effect.map(committing, (rows) => rows[0]!.n === 1), "the handler's COMMIT is on its way")
        yield* TestClock.adjust("1 minute")
        const { id, outcome } = yield* Fiber.join(fiber)
        // Before 0021 the attempt counted as timed out: a retry scheduled (a failed job on the last attempt).
        expect(outcome._tag).toBe("Completed")
        expect(runs).toBe(1)
        expect(yield* jobRow(id)).toMatchObject({ status: "completed", attempts: 1, error: null, lockedBy: null })
        expect(yield* jobRun(id)).toMatchObject({ status: "completed", idempotencyStatus: "completed" })
        expect(yield* sql`SELECT contract_id AS "contractId" FROM settlements`).toEqual([{ contractId: "c-1" }])
        expect(yield* auditEvents(id)).toEqual(["job_started", "job_completed"])
        const [entry] = yield* sql<{ details: { completedBy: string } }>`SELECT details FROM audit_logs WHERE job_id = ${id} AND event = 'job_completed'`
        expect(entry!.details.completedBy).toBe(
          `the run had committed before the attempt failed: HandlerTimeout: handler for "settlement_calculation" timed out after 60000 ms`
        )
      }))

    it.scoped("a transactional handler that lost its job before committing leaves no effects behind", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const { url } = yield* TestDatabase
        yield* sql`DELETE FROM settlements`
        const handler = Handler.make(Settlement, {
          transactional: true,
          run: (payload, job) =>
            Effect.gen(function* () {
              yield* sql`INSERT INTO settlements (contract_id, amount_cents) VALUES (${payload.contractId}, ${payload.amountCents})`
              // Meanwhile another worker rescues the job (simulated from a separate connection).
              yield* Effect.promise(async () => {
                const other = new pg.Client({ connectionString: url })
                await other.connect()
                await other.query("UPDATE job_queue SET locked_by = 'another-worker' WHERE id = $1", [job.jobId])
                await other.end()
              })
            })
        })
        const { outcome } = yield* firstOutcome(handler)
        expect(outcome._tag).toBe("LeaseLost")
        expect(yield* sql`SELECT * FROM settlements`).toEqual([])
      }))

    it.scoped("an attempt cut off by a lost database connection is released without counting it, and runs again after the backoff", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        let runs = 0
        const handler = Handler.make(Settlement, {
          transactional: true,
          // The handler's own connection is terminated, as by a restart or pg_terminate_backend.
          run: () => Effect.suspend(() => (++runs === 1 ? Effect.asVoid(sql`SELECT pg_terminate_backend(pg_backend_pid())`) : Effect.void))
        })
        const { id, outcome } = yield* firstOutcome(handler)
        const row = yield* jobRow(id)
        // A release, not a failed attempt: counted and logged as released, with when it runs again.
        expect(outcome).toMatchObject({ _tag: "Released", lostConnection: { runAt: row.runAt, error: row.error } })
        expect(row).toMatchObject({ status: "pending", attempts: 0 })
        expect(row.error).toContain("database connection lost")
        expect(yield* auditEvents(id)).toEqual(["job_started", "job_released"])
        const [release] = yield* sql<{ details: { reason: string } }>`SELECT details FROM audit_logs WHERE job_id = ${id} AND event = 'job_released'`
        expect(release!.details.reason).toBe("database connection lost")
        expect(row.runAt.getTime() - (yield* Clock.currentTimeMillis)).toBe(30_000)
      }))

    it.scoped("a lost connection that keeps coming back for one job counts after 10 releases; one the permanent predicate accepts fails at once", () =>
      Effect.gen(function* () {
        const { id } = yield* oneAttemptJob
        const outcomes: Array<Outcome> = []
        const worker = yield* Worker.make({ handlers: [Handler.make(Settlement, { run: warehouseDown })], listen: false, onOutcome: (_, outcome) => void outcomes.push(outcome) })
        yield* eventually(Effect.sync(() => outcomes.length === 1), "the first attempt")
        for (let release = 2; release <= MAX_UNCOUNTED_RELEASES + 1; release++) {
          yield* advance(worker, "30 seconds", "5 seconds")
          yield* eventually(Effect.sync(() => outcomes.length === release), `attempt ${release}`)
        }
        expect(outcomes.slice(0, MAX_UNCOUNTED_RELEASES).every((outcome) => outcome._tag === "Released" && outcome.lostConnection !== undefined)).toBe(true)
        expect(outcomes[MAX_UNCOUNTED_RELEASES]).toMatchObject({ _tag: "Failed" })
        const row = yield* jobRow(id)
        expect(row).toMatchObject({ status: "failed", attempts: 1 })
        expect(row.error).toContain("ECONNREFUSED 10.0.0.9:5432")
        expect(row.error).toContain(`counted as an attempt: the job was released ${MAX_UNCOUNTED_RELEASES} times for a lost database connection already, the first 300 s ago`)

        const permanent = yield* firstOutcome(Handler.make(Settlement, { run: warehouseDown, permanent: () => true }))
        expect(permanent.outcome._tag).toBe("Failed")
        expect(yield* jobRow(permanent.id)).toMatchObject({ status: "failed", attempts: 1 })
      }))

    /** A worker whose handler's own other database is down, with the given backoff; its outcomes, in order. */
    const warehouseWorker = (settings: { readonly pollInterval: Duration.DurationInput; readonly retryBackoff: Duration.DurationInput }) =>
      Effect.gen(function* () {
        const outcomes: Array<Outcome> = []
        const worker = yield* Worker.make({
          handlers: [Handler.make(Settlement, { run: warehouseDown })],
          listen: false,
          ...settings,
          onOutcome: (_, outcome) => void outcomes.push(outcome)
        })
        yield* eventually(Effect.sync(() => outcomes.length === 1), "the first attempt")
        return { worker, outcomes }
      })

    it.scoped("with a short backoff, a lost connection counts only once the first of 10 releases is 5 minutes old: one outage of dropped connections uses up no attempt", () =>
      Effect.gen(function* () {
        const { id } = yield* oneAttemptJob
        const { worker, outcomes } = yield* warehouseWorker({ pollInterval: "5 seconds", retryBackoff: "5 seconds" })
        // Fifteen attempts in 75 s: more than ten releases, all within the span.
        for (let release = 2; release <= MAX_UNCOUNTED_RELEASES + 5; release++) {
          yield* advance(worker, "5 seconds")
          yield* eventually(Effect.sync(() => outcomes.length === release), `attempt ${release}`)
        }
        expect(outcomes.every((outcome) => outcome._tag === "Released" && outcome.lostConnection !== undefined)).toBe(true)
        expect(yield* jobRow(id)).toMatchObject({ status: "pending", attempts: 0 })

        // Releases go on, one every 5 s, until the first is 5 minutes old: the attempt then, the 61st,
        // counts, and was the job's only one.
        yield* advance(worker, UNCOUNTED_RELEASE_SPAN, "5 seconds")
        yield* eventually(Effect.sync(() => outcomes.at(-1)?._tag === "Failed"), "the attempt after the span")
        expect(outcomes).toHaveLength(61)
        expect(outcomes.slice(0, -1).every((outcome) => outcome._tag === "Released")).toBe(true)
        const row = yield* jobRow(id)
        expect(row).toMatchObject({ status: "failed", attempts: 1 })
        expect(row.error).toContain("counted as an attempt: the job was released 60 times for a lost database connection already, the first 300 s ago")
      }))

    it.scoped("with no backoff at all, a lost connection counts after 100 releases, even within the 5 minutes", () =>
      Effect.gen(function* () {
        const { id } = yield* oneAttemptJob
        const { worker, outcomes } = yield* warehouseWorker({ pollInterval: "1 second", retryBackoff: 0 })
        // One release a second (each poll), so the 101st attempt comes 100 s after the first release.
        yield* advance(worker, "120 seconds", "1 second")
        yield* eventually(Effect.sync(() => outcomes.at(-1)?._tag === "Failed"), "the attempt after 100 releases")
        expect(outcomes).toHaveLength(UNCOUNTED_RELEASES_AT_MOST + 1)
        expect(outcomes.slice(0, -1).every((outcome) => outcome._tag === "Released")).toBe(true)
        const row = yield* jobRow(id)
        expect(row).toMatchObject({ status: "failed", attempts: 1 })
        expect(row.error).toContain(`counted as an attempt: the job was released ${UNCOUNTED_RELEASES_AT_MOST} times for a lost database connection already, the first 100 s ago`)
      }))

    it.scoped("a handler's own SQL error still counts as a failed attempt", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const handler = Handler.make(Settlement, { run: () => Effect.asVoid(sql`SELECT * FROM no_such_table`) })
        const { id, outcome } = yield* firstOutcome(handler)
        expect(outcome._tag).toBe("RetryScheduled")
        expect(yield* jobRow(id)).toMatchObject({ status: "pending", attempts: 1 })
        expect((yield* jobRow(id)).error).toContain("no_such_table")
      }))

    it.scoped("a constraint violation is recorded by its constraint, without the row's values (an IBAN stays out of the error)", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`CREATE TABLE IF NOT EXISTS mandates (iban text NOT NULL CONSTRAINT mandates_iban_german CHECK (iban LIKE 'DE%'), UNIQUE (iban))`
        yield* sql`TRUNCATE mandates`
        yield* sql`INSERT INTO mandates VALUES ('DE89370400440532013000')`
        const insert = (iban: string) => Handler.make(Settlement, { run: () => Effect.asVoid(sql`INSERT INTO mandates VALUES (${iban})`) })
        const check = yield* firstOutcome(insert("AT611904300234573201"))
        const checkError = (yield* jobRow(check.id)).error!
        expect(checkError).toContain("mandates_iban_german")
        expect(checkError).not.toContain("AT611904300234573201")
        const unique = yield* firstOutcome(insert("DE89370400440532013000"))
        const uniqueError = (yield* jobRow(unique.id)).error!
        expect(uniqueError).toContain("mandates_iban_key")
        expect(uniqueError).not.toContain("DE89370400440532013000")
        expect((yield* jobRun(unique.id)).lastError).toBe(uniqueError)
      }))

    it.scoped("a job whose job_runs row says completed is never run again", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        let runs = 0
        const handler = Handler.make(Settlement, { run: () => Effect.sync(() => runs++) })
        const first = yield* firstOutcome(handler)
        expect(runs).toBe(1)
        // An operator resets the job by hand; its run already committed.
        yield* sql`UPDATE job_queue SET status = 'pending' WHERE id = ${first.id}`
        const done = yield* Deferred.make<Outcome>()
        yield* Effect.scoped(
          Effect.zipRight(
            Worker.make({ handlers: [handler], listen: false, onOutcome: (_, outcome) => Deferred.unsafeDone(done, Effect.succeed(outcome)) }),
            Deferred.await(done)
          )
        )
        expect((yield* Deferred.await(done))._tag).toBe("Skipped")
        expect(runs).toBe(1)
        expect((yield* jobRow(first.id)).status).toBe("completed")
      }))

    it.scoped("the handler runs in a span of the job's stored trace, and gets the job context", () =>
      Effect.gen(function* () {
        const seen: Array<{ traceId: string; spanTrace: string; current: string }> = []
        const spans: Array<Tracer.Span> = []
        const handler = Handler.make(Settlement, {
          run: (_, job) =>
            Effect.gen(function* () {
              const span = yield* Effect.currentSpan
              const current = yield* CurrentJob
              seen.push({ traceId: job.traceId, spanTrace: span.traceId, current: current.jobId })
              spans.push(span)
            })
        })
        const { id } = yield* firstOutcome(handler)
        const run = yield* jobRun(id)
        expect(seen).toEqual([{ traceId: run.traceId, spanTrace: run.traceId, current: id }])
        // The job's span, ended with the job's outcome once it was recorded.
        expect(spans[0]!.name).toBe("skiplock.job settlement_calculation")
        expect(spans[0]!.status._tag).toBe("Ended")
      }))
  })
})
