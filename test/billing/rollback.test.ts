// Rolling back a billing run (docs/ROLLBACK_PLAYBOOK.md): allowed while none
// of its invoices is exported or paid, refused otherwise; both audited. The
// runs are billed with skiplock/testing (enqueue, then `SkiplockTest.drain`).
import { Command } from "@effect/cli"
import { NodeContext } from "@effect/platform-node"
import { SqlClient } from "@effect/sql"
import { describe, expect, it, vi } from "@effect/vitest"
import { Clock, Deferred, Effect, Fiber, TestClock, TestServices } from "effect"
import { Audit, JobQueue } from "skiplock"
import { SkiplockTest } from "skiplock/testing"
import { billingCommand, billingRun, makeBillingRunHandler, rollbackBillingRun, RollbackForbidden, seedDemo } from "../../src/billing/index.js"
import type { BillingRunPayload } from "../../src/billing/domain.js"
import { eventually } from "../support/live.js"
import { billingKit, invoicesOf, jobOf, outcomesByJob, runOfJob, withinRealTime } from "./support.js"

const ACTOR = "7d9f3a52-1c4b-4e8a-9f0d-2b6c8e1a4f37"
const PERIOD = { billingPeriod: "2025-03", invoiceDate: "2025-04-01" }
const ROLLBACK_TIME = Date.parse("2025-04-03T09:30:00Z")

/** Seeds an organization and bills March 2025 for it; returns the job id and run id. */
const billedOrganization = (organizationId: string, customers = 40) =>
  Effect.gen(function* () {
    yield* seedDemo({ organizationId, customers, period: "2025-03", print: false })
    const { id: jobId } = yield* JobQueue.enqueueJob(billingRun, PERIOD, { organizationId })
    const result = yield* SkiplockTest.drain()
    expect(outcomesByJob(result), result.summary).toEqual({ [jobId]: ["Completed"] })
    const run = (yield* runOfJob(jobId))!
    expect(run.status).toBe("completed")
    return { jobId, runId: run.id, invoices: run.invoicesCreated }
  })

/** Bills the first chunk (20 customers) of a run, then stops its worker: the job is pending again, its run running. */
const billFirstChunkOnly = (organizationId: string, payload: BillingRunPayload) =>
  Effect.gen(function* () {
    const firstChunk = yield* Deferred.make<void>()
    const stopsAfterOneChunk = makeBillingRunHandler({
      chunkSize: 20,
      afterChunk: ({ chunk }) => (chunk === 1 ? Effect.zipRight(Deferred.succeed(firstChunk, undefined), Effect.never) : Effect.void)
    })
    const attempt = yield* Effect.fork(SkiplockTest.runJob(stopsAfterOneChunk, payload, { organizationId }))
    yield* withinRealTime(Deferred.await(firstChunk), "the run's first chunk committed")
    yield* Fiber.interrupt(attempt)
    const [job] = yield* SkiplockTest.assertEnqueued({ jobType: billingRun, organizationId, count: 1 })
    return job!
  })

const trailOf = (jobId: string) =>
  Effect.flatMap(Audit.Audit, (audit) => audit.trail(jobId)).pipe(
    Effect.map((entries) => entries.map(({ event, actor, details }) => ({ event, actor, details })))
  )

describe("RollbackForbidden", () => {
  it("counts the blocking invoices in words that agree with the count, and leaves out a count of none", () => {
    const refusal = (exported: number, paid: number) =>
      new RollbackForbidden({ runId: "r", organizationId: "o", jobId: "j", billingPeriod: "2025-03", exported, paid, examples: ["SWM-2025-00003"] }).message
    expect(refusal(1, 0)).toContain("must not be rolled back: 1 of its invoices is exported to SEPA (SWM-2025-00003).")
    expect(refusal(0, 1)).toContain("must not be rolled back: 1 of its invoices is paid (SWM-2025-00003).")
    expect(refusal(0, 3)).toContain("must not be rolled back: 3 of its invoices are paid (SWM-2025-00003, …).")
    expect(refusal(1, 2)).toContain("must not be rolled back: 1 of its invoices is exported to SEPA and 2 are paid (SWM-2025-00003, …).")
  })
})

describe("rollbackBillingRun", () => {
  it.layer(billingKit, { timeout: 120_000 })((it) => {
    it.effect("cancels the run's invoices, keeps their numbers, marks the run and audits actor and reason", () =>
      Effect.gen(function* () {
        yield* SkiplockTest.reset
        const org = "b0000000-0000-4000-8000-000000000001"
        const { jobId, runId, invoices } = yield* billedOrganization(org)
        const before = yield* invoicesOf(org)
        yield* TestClock.setTime(ROLLBACK_TIME)

        const result = yield* rollbackBillingRun({ runId, reason: "Preise für März falsch importiert", actor: ACTOR })
        expect(result).toMatchObject({
          runId,
          previousStatus: "completed",
          invoicesCancelled: invoices,
          netCents: before.reduce((sum, invoice) => sum + invoice.netCents, 0),
          grossCents: before.reduce((sum, invoice) => sum + invoice.grossCents, 0),
          firstInvoiceNumber: "SWM-2025-00001",
          lastInvoiceNumber: `SWM-2025-${String(invoices).padStart(5, "0")}`,
          invoiceNumberRanges: 1,
          otherRunsNumbersInRange: 0
        })

        // Cancelled, not deleted: the same invoices with the same numbers.
        const after = yield* invoicesOf(org)
        expect(after.map(({ status: _, ...invoice }) => invoice)).toEqual(before.map(({ status: _, ...invoice }) => invoice))
        expect(new Set(after.map((invoice) => invoice.status))).toEqual(new Set(["cancelled"]))
        const sql = yield* SqlClient.SqlClient
        const [cancellation] = yield* sql<{ reasons: ReadonlyArray<string>; at: ReadonlyArray<Date> }>`
          SELECT array_agg(DISTINCT cancellation_reason) AS reasons, array_agg(DISTINCT cancelled_at) AS at
          FROM invoices WHERE organization_id = ${org}`
        expect(cancellation!.reasons).toEqual(["Preise für März falsch importiert"])
        expect(cancellation!.at.map((date) => date.getTime())).toEqual([ROLLBACK_TIME])
        expect(yield* runOfJob(jobId)).toMatchObject({
          status: "rolled_back",
          rolledBackBy: ACTOR,
          rollbackReason: "Preise für März falsch importiert"
        })

        // The run's audit trail tells the whole story, ending with who rolled it back and why.
        const trail = yield* trailOf(jobId)
        expect(trail.map((entry) => entry.event)).toEqual([
          "job_started", "billing_run_started", "billing_run_completed", "job_completed", "billing_run_rolled_back"
        ])
        expect(trail.at(-1)).toMatchObject({
          actor: ACTOR,
          details: { runId, reason: "Preise für März falsch importiert", invoicesCancelled: invoices, previousStatus: "completed" }
        })

        // The period can be billed again; the new invoices continue the sequence.
        const { id: again } = yield* JobQueue.enqueueJob(billingRun, PERIOD, { organizationId: org })
        const rebilling = yield* SkiplockTest.drain()
        expect(outcomesByJob(rebilling), rebilling.summary).toEqual({ [again]: ["Completed"] })
        const rebilled = (yield* invoicesOf(org)).filter((invoice) => invoice.status === "open")
        expect(rebilled.map((invoice) => invoice.numberSequence)).toEqual(Array.from({ length: invoices }, (_, i) => invoices + i + 1))
      }))

    it.effect("refuses when an invoice is exported to SEPA or paid, changes nothing, and audits the refusal", () =>
      Effect.gen(function* () {
        yield* SkiplockTest.reset
        const org = "b0000000-0000-4000-8000-000000000002"
        const { jobId, runId } = yield* billedOrganization(org)
        const sql = yield* SqlClient.SqlClient
        yield* sql`UPDATE invoices SET status = 'exported', exported_at = ${new Date(ROLLBACK_TIME)}
                   WHERE organization_id = ${org} AND number_sequence IN (3, 4)`
        yield* sql`UPDATE invoices SET status = 'paid', exported_at = ${new Date(ROLLBACK_TIME)}, paid_at = ${new Date(ROLLBACK_TIME)}
                   WHERE organization_id = ${org} AND number_sequence = 7`
        // Exported, and its payment booked without moving its status on: paid, counted once (it was counted as both).
        yield* sql`UPDATE invoices SET status = 'exported', exported_at = ${new Date(ROLLBACK_TIME)}, paid_at = ${new Date(ROLLBACK_TIME)}
                   WHERE organization_id = ${org} AND number_sequence = 8`
        const before = yield* invoicesOf(org)

        const refusal = yield* Effect.flip(rollbackBillingRun({ runId, reason: "Kunde hat widersprochen", actor: ACTOR }))
        expect(refusal).toMatchObject({
          _tag: "RollbackForbidden",
          runId,
          exported: 2,
          paid: 2,
          examples: ["SWM-2025-00003", "SWM-2025-00004", "SWM-2025-00007", "SWM-2025-00008"]
        })
        expect(refusal.message).toBe(
          `billing run ${runId} (2025-03) must not be rolled back: 2 of its invoices are exported to SEPA and 2 are paid ` +
            "(SWM-2025-00003, SWM-2025-00004, SWM-2025-00007, SWM-2025-00008). Nothing was changed. Correct those invoices with credit notes: see docs/ROLLBACK_PLAYBOOK.md"
        )

        expect(yield* invoicesOf(org)).toEqual(before)
        expect(new Set(before.filter((invoice) => ![3, 4, 7, 8].includes(invoice.numberSequence)).map((invoice) => invoice.status))).toEqual(new Set(["open"]))
        expect(yield* runOfJob(jobId)).toMatchObject({ status: "completed", rolledBackBy: null })
        const trail = yield* trailOf(jobId)
        expect(trail.map((entry) => entry.event)).toEqual([
          "job_started", "billing_run_started", "billing_run_completed", "job_completed", "billing_run_rollback_refused"
        ])
        expect(trail.at(-1)).toMatchObject({
          actor: ACTOR,
          details: { runId, reason: "Kunde hat widersprochen", refusal: "RollbackForbidden", exported: 2, paid: 2 }
        })
      }))

    it.effect("inside a caller's transaction, a rollback leaves its lock_timeout and statement_timeout as they were", () =>
      Effect.gen(function* () {
        yield* SkiplockTest.reset
        const sql = yield* SqlClient.SqlClient
        const org = "b0000000-0000-4000-8000-000000000019"
        const { runId } = yield* billedOrganization(org, 5)
        const settings = yield* sql.withTransaction(
          Effect.gen(function* () {
            yield* sql`SELECT set_config('lock_timeout', '7s', true), set_config('statement_timeout', '9s', true)`
            yield* rollbackBillingRun({ runId, reason: "Testlauf", actor: ACTOR })
            return yield* sql<{ lockTimeout: string; statementTimeout: string }>`
              SELECT current_setting('lock_timeout') AS "lockTimeout", current_setting('statement_timeout') AS "statementTimeout"`
          })
        )
        expect(settings).toEqual([{ lockTimeout: "7s", statementTimeout: "9s" }])
      }))

    it.effect("refuses a second rollback, an unknown run, and a request without a reason", () =>
      Effect.gen(function* () {
        yield* SkiplockTest.reset
        const org = "b0000000-0000-4000-8000-000000000003"
        const { jobId, runId } = yield* billedOrganization(org, 10)
        yield* rollbackBillingRun({ runId, reason: "Testlauf", actor: ACTOR })
        const second = yield* Effect.flip(rollbackBillingRun({ runId, reason: "noch einmal", actor: "cli:ops" }))
        expect(second).toMatchObject({ _tag: "BillingRunAlreadyRolledBack", rolledBackBy: ACTOR })
        expect((yield* trailOf(jobId)).at(-1)).toMatchObject({
          event: "billing_run_rollback_refused",
          actor: "cli:ops",
          details: { refusal: "BillingRunAlreadyRolledBack", reason: "noch einmal" }
        })

        const unknown = yield* Effect.flip(rollbackBillingRun({ runId: "b0000000-0000-4000-8000-0000000000ff", reason: "x", actor: ACTOR }))
        expect(unknown._tag).toBe("BillingRunNotFound")
        const blank = yield* Effect.flip(rollbackBillingRun({ runId, reason: "   ", actor: ACTOR }))
        expect(blank).toMatchObject({ _tag: "InvalidRollbackRequest", message: "invalid rollback request: reason must say why the run is rolled back" })
        const notAnId = yield* Effect.flip(rollbackBillingRun({ runId: "42", reason: "x", actor: ACTOR }))
        expect(notAnId._tag).toBe("InvalidRollbackRequest")
      }))

    it.effect("a run rolled back while its job is half-way stops that job instead of billing on", () =>
      Effect.gen(function* () {
        yield* SkiplockTest.reset
        const org = "b0000000-0000-4000-8000-000000000004"
        yield* seedDemo({ organizationId: org, customers: 60, period: "2025-03", print: false })
        const firstChunk = yield* Deferred.make<void>()
        const gate = yield* Deferred.make<void>()
        const handler = makeBillingRunHandler({
          chunkSize: 20,
          afterChunk: ({ chunk }) => (chunk === 1 ? Effect.zipRight(Deferred.succeed(firstChunk, undefined), Deferred.await(gate)) : Effect.void)
        })
        // One attempt of the job, in a fiber of its own; it holds after its first chunk until the gate opens.
        const attempt = yield* Effect.fork(SkiplockTest.runJob(handler, PERIOD, { organizationId: org }))
        yield* withinRealTime(Deferred.await(firstChunk), "the first chunk committed")
        const [job] = yield* SkiplockTest.assertEnqueued({ jobType: billingRun, organizationId: org, status: "processing", count: 1 })
        const jobId = job!.id

        const result = yield* rollbackBillingRun({ runId: (yield* runOfJob(jobId))!.id, reason: "falscher Zeitraum", actor: ACTOR })
        expect(result.previousStatus).toBe("running")
        yield* Deferred.succeed(gate, undefined)
        const { jobId: ranJobId, outcome } = yield* Fiber.join(attempt)

        expect(ranJobId).toBe(jobId)
        expect(outcome._tag).toBe("Failed")
        expect(yield* jobOf(jobId)).toMatchObject({ status: "failed", attempts: 1 })
        expect((yield* jobOf(jobId)).error).toContain("was rolled back")
        const invoices = yield* invoicesOf(org)
        expect(invoices.length).toBe(result.invoicesCancelled)
        expect(new Set(invoices.map((invoice) => invoice.status))).toEqual(new Set(["cancelled"]))
        // As docs/ROLLBACK_PLAYBOOK.md says: the rollback, then the job's own failure.
        expect((yield* trailOf(jobId)).map((entry) => entry.event)).toEqual(["job_started", "billing_run_started", "billing_run_rolled_back", "job_failed"])
      }))

    it.effect("a period billed by two runs: rolling back one names the other, whose invoices stay live", () =>
      Effect.gen(function* () {
        yield* SkiplockTest.reset
        const org = "b0000000-0000-4000-8000-000000000006"
        yield* seedDemo({ organizationId: org, customers: 60, period: "2025-03", print: false })
        // Run A stops after its first chunk (its worker stopped: the job goes back to pending, the run stays running).
        const jobA = yield* billFirstChunkOnly(org, PERIOD)
        const runA = (yield* runOfJob(jobA.id))!
        // A second job bills the rest of the month (playbook, section 7).
        const runB = yield* SkiplockTest.runJob(makeBillingRunHandler(), PERIOD, { organizationId: org })
        expect(runB.outcome._tag).toBe("Completed")
        const runBId = (yield* runOfJob(runB.jobId))!.id

        const result = yield* rollbackBillingRun({ runId: runBId, reason: "Preise falsch", actor: ACTOR })
        expect(result.otherRunsWithInvoices).toEqual([{ runId: runA.id, status: "running", invoices: runA.invoicesCreated }])
        expect(runA.invoicesCreated).toBeGreaterThan(0)
      }))

    it.effect("runs of two periods whose chunks took turns: the rollback says its numbers are not one range, and how to list them", () =>
      Effect.gen(function* () {
        yield* SkiplockTest.reset
        const org = "b0000000-0000-4000-8000-00000000000a"
        yield* seedDemo({ organizationId: org, customers: 60, period: "2025-04", print: false })
        const april = { billingPeriod: "2025-04", invoiceDate: "2025-05-02" }
        const may = { billingPeriod: "2025-05", invoiceDate: "2025-06-02" }
        // April's run stops after its first chunk, May's bills in between, then April's job resumes:
        // April's numbers come before and after May's, as when both are enqueued together.
        const aprilJob = yield* billFirstChunkOnly(org, april)
        const mayRun = yield* SkiplockTest.runJob(makeBillingRunHandler(), may, { organizationId: org })
        expect(mayRun.outcome._tag).toBe("Completed")
        const resumed = yield* SkiplockTest.drain()
        expect(outcomesByJob(resumed), resumed.summary).toEqual({ [aprilJob.id]: ["Completed"] })
        const aprilRun = (yield* runOfJob(aprilJob.id))!
        const mayInvoices = (yield* runOfJob(mayRun.jobId))!.invoicesCreated
        const numbers = (yield* invoicesOf(org)).map((invoice) => ({ number: invoice.invoiceNumber, job: invoice.runJobId }))
        const aprilNumbers = numbers.filter(({ job }) => job === aprilJob.id).map(({ number }) => number)
        expect(numbers.slice(0, 20).every(({ job }) => job === aprilJob.id)).toBe(true)
        expect(mayInvoices).toBeGreaterThan(0)

        const cli = Command.run(billingCommand, { name: "skiplock", version: "test" })
        const printed: Array<string> = []
        const spy = vi.spyOn(console, "log").mockImplementation((...args: Array<unknown>) => void printed.push(args.join(" ")))
        yield* Effect.addFinalizer(() => Effect.sync(() => spy.mockRestore()))
        yield* cli(["node", "skiplock", "rollback", aprilRun.id, "--reason", "April falsch", "--actor", ACTOR]).pipe(Effect.provide(NodeContext.layer))

        const query = `SELECT invoice_number FROM invoices WHERE billing_run_id = '${aprilRun.id}' ORDER BY number_year, number_sequence;`
        const output = printed.join("\n")
        expect(output).toContain(
          `Cancelled ${aprilRun.invoicesCreated} invoice(s) between ${aprilNumbers[0]} and ${aprilNumbers.at(-1)}, `
        )
        expect(output).toContain(
          `Not one range: ${mayInvoices} number(s) between them belong to other runs, not cancelled by this rollback (the cancelled ones form 2 ranges). ` +
            `Exactly the cancelled numbers:\n    ${query}`
        )
        // The audit entry says the same; and the query lists exactly the cancelled numbers.
        expect((yield* trailOf(aprilJob.id)).at(-1)).toMatchObject({
          event: "billing_run_rolled_back",
          details: {
            invoicesCancelled: aprilRun.invoicesCreated,
            firstInvoiceNumber: aprilNumbers[0],
            lastInvoiceNumber: aprilNumbers.at(-1),
            invoiceNumberRanges: 2,
            otherRunsNumbersInRange: mayInvoices,
            cancelledNumbersQuery: query
          }
        })
        const sql = yield* SqlClient.SqlClient
        const listed = yield* sql.unsafe<{ invoice_number: string }>(query)
        expect(listed.map((row) => row.invoice_number)).toEqual(aprilNumbers)
        const statuses = (yield* invoicesOf(org)).filter((invoice) => invoice.status === "cancelled").map((invoice) => invoice.invoiceNumber)
        expect(statuses).toEqual(aprilNumbers)
      }).pipe(Effect.scoped))

    it.effect("a rollback waits for the run's lock only so long, then fails saying why, changes nothing, and audits the refusal", () =>
      Effect.gen(function* () {
        yield* SkiplockTest.reset
        const org = "b0000000-0000-4000-8000-000000000007"
        const { jobId, runId } = yield* billedOrganization(org, 10)
        const sql = yield* SqlClient.SqlClient
        // An operator's session holds the run's row.
        const held = yield* sql.reserve
        yield* held.executeRaw("BEGIN", [])
        yield* held.execute("SELECT id FROM billing_runs WHERE id = $1 FOR UPDATE", [runId], undefined)
        const error = yield* Effect.flip(rollbackBillingRun({ runId, reason: "Test", actor: ACTOR }, { lockTimeout: "1 second" }))
        expect(error).toMatchObject({ _tag: "BillingRunLocked", runId })
        expect(error.message).toContain(`cannot roll back billing run ${runId}: another session held the run or its invoices for 1 s`)
        // Recorded while the other session still holds the run: the entry does not wait for that lock.
        expect((yield* trailOf(jobId)).at(-1)).toMatchObject({
          event: "billing_run_rollback_refused",
          actor: ACTOR,
          details: { runId, reason: "Test", refusal: "BillingRunLocked", waitedMillis: 1000 }
        })
        yield* held.executeRaw("ROLLBACK", [])
        expect(new Set((yield* invoicesOf(org)).map((invoice) => invoice.status))).toEqual(new Set(["open"]))

        // A rollback that waited for the lock is dated when it got it, not when it was asked for: never
        // before a chunk that committed meanwhile.
        yield* held.executeRaw("BEGIN", [])
        yield* held.execute("SELECT id FROM billing_runs WHERE id = $1 FOR UPDATE", [runId], undefined)
        const waiting = yield* Effect.fork(rollbackBillingRun({ runId, reason: "Test", actor: ACTOR }))
        const waitsForLock = sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%billing_runs%FOR UPDATE%'`
        yield* eventually(Effect.map(waitsForLock, ([row]) => row!.n > 0), "the rollback waits for the run's lock")
        const asked = yield* Clock.currentTimeMillis
        yield* TestClock.adjust("1 minute")
        yield* held.executeRaw("ROLLBACK", [])
        const result = yield* Fiber.join(waiting)
        expect(result.rolledBackAt.getTime()).toBe(asked + 60_000)
      }).pipe(Effect.scoped))

    it.effect("a rollback waits for locks at most its lock timeout in all, however many sessions hold the run and its invoices", () =>
      Effect.gen(function* () {
        yield* SkiplockTest.reset
        const org = "b0000000-0000-4000-8000-000000000009"
        const { jobId, runId } = yield* billedOrganization(org, 10)
        const sql = yield* SqlClient.SqlClient
        const liveNow = TestServices.provideLive(Clock.currentTimeMillis)
        const hold = (statement: string, params: ReadonlyArray<unknown>) =>
          Effect.gen(function* () {
            const session = yield* sql.reserve
            yield* session.executeRaw("BEGIN", [])
            yield* session.execute(statement, params, undefined)
            return session
          })
        const releaseAfter = (session: { executeRaw: (sql: string, params: ReadonlyArray<unknown>) => Effect.Effect<unknown, unknown> }, millis: number) =>
          Effect.forkScoped(TestServices.provideLive(Effect.sleep(millis)).pipe(Effect.zipRight(Effect.orDie(session.executeRaw("ROLLBACK", [])))))
        /** How long (real time) a rollback with a 2 s lock timeout took to give up. */
        const givingUp = Effect.gen(function* () {
          const started = yield* liveNow
          const error = yield* Effect.flip(rollbackBillingRun({ runId, reason: "Test", actor: ACTOR }, { lockTimeout: "2 seconds" }))
          expect(error).toMatchObject({ _tag: "BillingRunLocked", waitedMillis: 2000 })
          return (yield* liveNow) - started
        })

        // One session holds the run for 1.5 s, another the invoices for longer: the run's wait counts against the invoices'.
        const run = yield* hold("SELECT id FROM billing_runs WHERE id = $1 FOR UPDATE", [runId])
        const invoices = yield* hold("SELECT id FROM invoices WHERE billing_run_id = $1 FOR UPDATE", [runId])
        yield* releaseAfter(run, 1500)
        const waited = yield* givingUp
        expect(waited).toBeGreaterThanOrEqual(1900)
        expect(waited).toBeLessThan(2700)
        yield* invoices.executeRaw("ROLLBACK", [])

        // Two sessions hold different invoices, the one met first letting go after 1.5 s: one statement, two waits.
        const last = yield* hold(
          "SELECT id FROM invoices WHERE billing_run_id = $1 AND number_sequence = (SELECT max(number_sequence) FROM invoices WHERE billing_run_id = $1) FOR UPDATE",
          [runId]
        )
        const others = yield* hold(
          "SELECT id FROM invoices WHERE billing_run_id = $1 AND number_sequence < (SELECT max(number_sequence) FROM invoices WHERE billing_run_id = $1) FOR UPDATE",
          [runId]
        )
        yield* releaseAfter(others, 1500)
        const waitedTwice = yield* givingUp
        expect(waitedTwice).toBeGreaterThanOrEqual(1900)
        expect(waitedTwice).toBeLessThan(2700)
        yield* last.executeRaw("ROLLBACK", [])

        // Cancelled by hand before its time is up (pg_cancel_backend): a database error, not a lock given up.
        const again = yield* hold("SELECT id FROM billing_runs WHERE id = $1 FOR UPDATE", [runId])
        const waiting = yield* Effect.fork(rollbackBillingRun({ runId, reason: "Test", actor: ACTOR }))
        const waiter = sql<{ pid: number }>`SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%billing_runs%FOR UPDATE%'`
        yield* eventually(Effect.map(waiter, (rows) => rows.length > 0), "the rollback waits for the run's lock")
        yield* sql`SELECT pg_cancel_backend(${(yield* waiter)[0]!.pid})`
        expect(yield* Effect.flip(Fiber.join(waiting))).toMatchObject({ _tag: "SqlError" })
        yield* again.executeRaw("ROLLBACK", [])

        expect(new Set((yield* invoicesOf(org)).map((invoice) => invoice.status))).toEqual(new Set(["open"]))
        expect((yield* trailOf(jobId)).filter((entry) => entry.event === "billing_run_rollback_refused")).toHaveLength(2)
      }).pipe(Effect.scoped))

    it.effect("the database keeps issued invoices as issued: no DELETE, no TRUNCATE, no rewrite; only the status moves on", () =>
      Effect.gen(function* () {
        yield* SkiplockTest.reset
        const org = "b0000000-0000-4000-8000-000000000008"
        yield* billedOrganization(org, 10)
        const sql = yield* SqlClient.SqlClient
        const refusal = <A, E, R>(statement: Effect.Effect<A, E, R>) =>
          Effect.map(Effect.flip(sql.withTransaction(statement)), (error) => String((error as { cause?: { message?: string } }).cause?.message))
        const [invoice] = yield* sql<{ id: string }>`SELECT id FROM invoices WHERE organization_id = ${org} ORDER BY number_sequence LIMIT 1`
        const id = invoice!.id
        expect(yield* refusal(sql`DELETE FROM invoices WHERE id = ${id}`)).toBe("rows of invoices are never deleted: cancel the invoice instead")
        expect(yield* refusal(sql`TRUNCATE invoices CASCADE`)).toBe("rows of invoices are never deleted: cancel the invoice instead")
        expect(yield* refusal(sql`TRUNCATE invoice_lines`)).toBe("rows of invoice_lines are never deleted: cancel the invoice instead")
        for (const rewrite of [sql`UPDATE invoices SET net_cents = 1, vat_cents = 0, gross_cents = 1 WHERE id = ${id}`,
                               sql`UPDATE invoices SET invoice_number = 'SWM-2025-99999' WHERE id = ${id}`,
                               sql`UPDATE invoices SET iban = 'DE89370400440532013000' WHERE id = ${id}`]) {
          expect(yield* refusal(rewrite)).toBe("an issued invoice is never changed (invoices): only its status moves on (exported, paid, cancelled)")
        }
        expect(yield* refusal(sql`UPDATE invoice_lines SET description = 'x' WHERE invoice_id = ${id}`)).toBe(
          "an issued invoice is never changed (invoice_lines): only its status moves on (exported, paid, cancelled)"
        )
        yield* sql`UPDATE invoices SET status = 'exported', exported_at = now() WHERE id = ${id}`
        yield* sql`UPDATE invoices SET status = 'paid', paid_at = now() WHERE id = ${id}`
        expect((yield* invoicesOf(org)).filter((row) => row.status === "paid")).toHaveLength(1)
        // Never back (that would erase the payment, or bring a cancelled invoice back), and what is recorded stays.
        const [{ number }] = yield* sql<{ number: string }>`SELECT invoice_number AS number FROM invoices WHERE id = ${id}`
        expect(yield* refusal(sql`UPDATE invoices SET status = 'open', paid_at = NULL WHERE id = ${id}`)).toBe(
          `invoice ${number} is paid: its status never moves back to open`
        )
        expect(yield* refusal(sql`UPDATE invoices SET paid_at = NULL WHERE id = ${id}`)).toBe(
          `invoice ${number}: when it was exported, paid or cancelled, and why, stays as recorded`
        )
        yield* sql`UPDATE invoices SET status = 'cancelled', cancelled_at = now(), cancellation_reason = 'Storno' WHERE id = ${id}`
        expect(yield* refusal(sql`UPDATE invoices SET status = 'open', cancelled_at = NULL, cancellation_reason = NULL WHERE id = ${id}`)).toBe(
          `invoice ${number} is cancelled: its status never moves back to open`
        )
        // A line added to an issued invoice: refused when its transaction commits, here the statement's own
        // (as from psql), because the lines no longer add up.
        const [other] = yield* sql<{ id: string; number: string; net: number; vat: number }>`
          SELECT id, invoice_number AS number, net_cents AS net, vat_cents AS vat FROM invoices
          WHERE organization_id = ${org} AND status = 'open' ORDER BY number_sequence LIMIT 1`
        const added = yield* Effect.flip(sql`
          INSERT INTO invoice_lines (organization_id, invoice_id, position, contract_id, description, service_start, service_end,
                                     days_billed, days_in_period, monthly_net_cents, net_cents, vat_rate_bp, vat_cents, gross_cents)
          SELECT organization_id, invoice_id, 99, contract_id, 'Nachtrag', service_start, service_end,
                 days_billed, days_in_period, monthly_net_cents, 1000, 1900, 190, 1190
          FROM invoice_lines WHERE invoice_id = ${other!.id} LIMIT 1`)
        expect(String((added.cause as { message?: string }).message)).toBe(
          `invoice ${other!.number} says net ${other!.net} and VAT ${other!.vat} cents, its lines add up to net ${other!.net + 1000} and VAT ${other!.vat + 190}: lines come only with their invoice`
        )
        expect(yield* sql`SELECT 1 FROM invoice_lines WHERE invoice_id = ${other!.id} AND position = 99`).toEqual([])
      }))

    it.effect("`billing rollback` prints what it did, and fails with the refusal's message", () =>
      Effect.gen(function* () {
        yield* SkiplockTest.reset
        const org = "b0000000-0000-4000-8000-000000000005"
        const { runId } = yield* billedOrganization(org, 10)
        const cli = Command.run(billingCommand, { name: "skiplock", version: "test" })
        const printed: Array<string> = []
        const spy = vi.spyOn(console, "log").mockImplementation((...args: Array<unknown>) => void printed.push(args.join(" ")))
        yield* Effect.addFinalizer(() => Effect.sync(() => spy.mockRestore()))

        yield* cli(["node", "skiplock", "rollback", runId, "--reason", "Demo zurücksetzen", "--actor", ACTOR]).pipe(Effect.provide(NodeContext.layer))
        expect(printed.join("\n")).toContain(`Billing run ${runId} (2025-03) is rolled back.`)
        expect(printed.join("\n")).toMatch(/Cancelled \d+ invoice\(s\) SWM-2025-00001 … SWM-2025-\d{5}, [\d.]+,\d{2} € gross/)

        // Without --actor, the OS user is the actor.
        const error = yield* Effect.flip(cli(["node", "skiplock", "rollback", runId, "--reason", "nochmal"]).pipe(Effect.provide(NodeContext.layer)))
        expect(error).toMatchObject({ _tag: "BillingRunAlreadyRolledBack" })
        expect((error as { message: string }).message).toContain("already rolled back")
      }).pipe(Effect.scoped))
  })
})
