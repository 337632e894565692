// Test support for the billing module: the testing kit's layer with the billing
// handler and migrations, a real Worker for the tests that need concurrent
// workers, reading the results, and an expectation computed independently of
// the production pricing code.
import { SqlClient } from "@effect/sql"
import type { PgClient } from "@effect/sql-pg"
import { Deferred, Effect, Exit, Scope, TestServices } from "effect"
import { copyFile, mkdir, mkdtemp, readdir, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { type Handler, type Outcome, Worker } from "skiplock"
import { type DrainResult, SkiplockTest, TEST_WORKER_ID } from "skiplock/testing"
import { billingMigrations, billingRun, billingRunHandler } from "../../src/billing/index.js"
import type { JobContext } from "../../src/JobContext.js"
import { Db, Migrator } from "../../src/index.js"
import { acquireTestDatabase } from "../../src/testing/TestDatabase.js"

/** The JobContext of attempt 1 of a billing_run job run by the kit's worker id (runBilling called directly). */
export const firstAttemptOf = (jobId: string, organizationId: string): JobContext => ({
  jobId, jobType: billingRun.jobType, organizationId, attempt: 1, maxAttempts: 3, traceId: "0".repeat(32),
  idempotencyKey: jobId, createdBy: null, workerId: TEST_WORKER_ID
})

/**
 * A fresh database with the core and billing migrations, on the TestClock, with
 * the kit (`drain` runs `billing_run` jobs with the production handler), a
 * JobQueue and Audit. Shared by a block's tests (`it.layer`): start each with
 * `SkiplockTest.reset`.
 */
export const billingKit = SkiplockTest.layer({ handlers: [billingRunHandler], migrations: [billingMigrations] })

// The billing migrations before number `first` (scoped), in a folder named like the real set, so that the
// real set applies the rest later.
const billingSetBefore = (first: number) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const folder = join(await mkdtemp(join(tmpdir(), "skiplock-billing-")), "billing")
      await mkdir(folder)
      for (const file of await readdir(billingMigrations)) {
        if (file.endsWith(".sql") && Number(file.slice(0, 4)) < first) await copyFile(join(billingMigrations, file), join(folder, file))
      }
      return folder
    }),
    (folder) => Effect.promise(() => rm(join(folder, ".."), { recursive: true, force: true }))
  )

/**
 * Runs `effect` against a fresh database deployed before billing migration `first` (the core migrations
 * and the billing ones before it), as a database of an earlier version: the effect applies the rest.
 */
export const beforeBillingMigration = <A, E>(first: number, effect: Effect.Effect<A, E, SqlClient.SqlClient | PgClient.PgClient>) =>
  Effect.gen(function* () {
    const before = yield* billingSetBefore(first)
    const { url } = yield* acquireTestDatabase({ migrations: [Migrator.coreMigrations, before] })
    return yield* Effect.provide(effect, Db.layer({ url }))
  })

/**
 * Each job the drain saw, by id, with the outcomes of the attempts it ran
 * (a job still waiting afterwards shows up with none).
 */
export const outcomesByJob = (result: DrainResult): Record<string, ReadonlyArray<Outcome["_tag"]>> =>
  Object.fromEntries(result.jobs.map((drained) => [drained.job.id, drained.attempts.map((attempt) => attempt.outcome._tag)]))

const terminal = (outcome: Outcome | undefined) =>
  outcome !== undefined && (outcome._tag === "Completed" || outcome._tag === "Skipped" || outcome._tag === "Failed")

/** Waits in real time (the TestClock does not move while the database works). */
export const withinRealTime = <A, E, R>(effect: Effect.Effect<A, E, R>, what: string, seconds = 60) =>
  Effect.raceFirst(
    effect,
    TestServices.provideLive(Effect.sleep(`${seconds} seconds`)).pipe(Effect.zipRight(Effect.dieMessage(`timed out waiting until ${what}`)))
  )

/**
 * For tests that need jobs running at the same time: starts a worker (on the
 * kit's database and TestClock) with the handler, waits until each of the jobs
 * has a final outcome (completed, skipped, failed), stops the worker and
 * returns the outcomes.
 */
export const runJobsConcurrently = <R>(
  handler: Handler.Handler<string, any, any, R>,
  jobIds: ReadonlyArray<string>,
  options: { readonly concurrency: number }
) =>
  Effect.scoped(
    Effect.gen(function* () {
      const outcomes = new Map<string, Outcome>()
      const done = yield* Deferred.make<void>()
      yield* Worker.make({
        handlers: [handler],
        listen: false,
        concurrency: options.concurrency,
        onOutcome: (job, outcome) => {
          outcomes.set(job.id, outcome)
          if (jobIds.every((id) => terminal(outcomes.get(id)))) Deferred.unsafeDone(done, Exit.void)
        }
      })
      yield* withinRealTime(Deferred.await(done), `jobs ${jobIds.join(", ")} finished`)
      return jobIds.map((id) => outcomes.get(id)!)
    })
  )

/**
 * Starts a worker (on the kit's database) whose handler stops forever after its
 * first committed chunk, waits until that chunk is committed, then shuts the
 * worker down without waiting: the job's fiber is interrupted mid-run, as in a crash.
 */
export const runAndInterruptAfterFirstChunk = <R>(
  makeHandler: (afterFirstChunk: Effect.Effect<void>) => Handler.Handler<string, any, any, R>,
  jobId: string
) =>
  Effect.gen(function* () {
    const firstChunk = yield* Deferred.make<void>()
    const scope = yield* Scope.make()
    yield* Worker.make({
      handlers: [makeHandler(Effect.zipRight(Deferred.succeed(firstChunk, undefined), Effect.never))],
      listen: false,
      shutdownTimeout: 0
    }).pipe(Scope.extend(scope))
    yield* withinRealTime(Deferred.await(firstChunk), `the first chunk of job ${jobId} committed`)
    yield* Scope.close(scope, Exit.void)
  })

export interface InvoiceRow {
  readonly customerNumber: string
  readonly invoiceNumber: string
  readonly numberYear: number
  readonly numberSequence: number
  readonly status: string
  readonly invoiceDate: string
  readonly dueDate: string
  readonly serviceStart: string
  readonly serviceEnd: string
  readonly netCents: number
  readonly vatCents: number
  readonly grossCents: number
  readonly runJobId: string
  /** In invoice order (position). */
  readonly lines: ReadonlyArray<{
    readonly position: number
    readonly description: string
    readonly contractId: string
    readonly days: number
    readonly netCents: number
    readonly vatRateBp: number
    readonly vatCents: number
    readonly grossCents: number
  }>
}

/** The organization's invoices with their lines, by number. */
export const invoicesOf = (organizationId: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<InvoiceRow>`
      SELECT c.customer_number AS "customerNumber", i.invoice_number AS "invoiceNumber", i.number_year AS "numberYear",
             i.number_sequence AS "numberSequence", i.status, to_char(i.invoice_date, 'YYYY-MM-DD') AS "invoiceDate",
             to_char(i.due_date, 'YYYY-MM-DD') AS "dueDate", to_char(i.service_start, 'YYYY-MM-DD') AS "serviceStart",
             to_char(i.service_end, 'YYYY-MM-DD') AS "serviceEnd", i.net_cents AS "netCents", i.vat_cents AS "vatCents",
             i.gross_cents AS "grossCents", r.job_id AS "runJobId",
             (SELECT coalesce(jsonb_agg(jsonb_build_object('position', l.position, 'description', l.description,
                                                           'contractId', l.contract_id, 'days', l.days_billed,
                                                           'netCents', l.net_cents, 'vatRateBp', l.vat_rate_bp,
                                                           'vatCents', l.vat_cents, 'grossCents', l.gross_cents)
                                        ORDER BY l.position), '[]'::jsonb)
              FROM invoice_lines l WHERE l.invoice_id = i.id) AS lines
      FROM invoices i
      JOIN customers c ON c.id = i.customer_id
      JOIN billing_runs r ON r.id = i.billing_run_id
      WHERE i.organization_id = ${organizationId}
      ORDER BY i.number_year, i.number_sequence`
  )

export interface RunRow {
  readonly id: string
  readonly status: string
  readonly cursor: string | null
  readonly chunksCommitted: number
  readonly customersProcessed: number
  readonly invoicesCreated: number
  readonly invoicesSkipped: number
  readonly customersNothingOwed: number
  readonly zeroLinesLeftOut: number
  readonly customersMandateNotYetValid: number
  readonly mandateNotYetValidCustomerNumbers: ReadonlyArray<string>
  readonly netTotalCents: number
  readonly vatTotalCents: number
  readonly grossTotalCents: number
  readonly rolledBackBy: string | null
  readonly rollbackReason: string | null
}

export const runOfJob = (jobId: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<RunRow>`
      SELECT id, status, cursor, chunks_committed AS "chunksCommitted", customers_processed AS "customersProcessed",
             invoices_created AS "invoicesCreated", invoices_skipped AS "invoicesSkipped",
             customers_nothing_owed AS "customersNothingOwed", zero_lines_left_out AS "zeroLinesLeftOut",
             customers_mandate_not_yet_valid AS "customersMandateNotYetValid",
             mandate_not_yet_valid_customer_numbers AS "mandateNotYetValidCustomerNumbers",
             net_total_cents::int AS "netTotalCents", vat_total_cents::int AS "vatTotalCents",
             gross_total_cents::int AS "grossTotalCents", rolled_back_by AS "rolledBackBy", rollback_reason AS "rollbackReason"
      FROM billing_runs WHERE job_id = ${jobId}`
  ).pipe(Effect.map((rows) => rows[0]))

export const jobOf = (jobId: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ status: string; attempts: number; error: string | null }>`SELECT status, attempts, error FROM job_queue WHERE id = ${jobId}`
  ).pipe(Effect.map((rows) => rows[0]!))

export interface AuditRow {
  readonly event: string
  readonly actor: string
  readonly organizationId: string | null
  readonly details: Record<string, unknown>
}

export const auditOfJob = (jobId: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<AuditRow>`SELECT event, actor, organization_id AS "organizationId", details FROM audit_logs WHERE job_id = ${jobId} ORDER BY id`
  )

/** The invoices in the shape of `expectedInvoices`, to compare with it. */
export const asExpected = (invoices: ReadonlyArray<InvoiceRow>): ReadonlyArray<ExpectedInvoice> =>
  invoices
    .map(({ customerNumber, serviceStart, serviceEnd, netCents, vatCents, grossCents, lines }) => ({
      customerNumber,
      serviceStart,
      serviceEnd,
      netCents,
      vatCents,
      grossCents,
      lines: lines
        .map(({ contractId, days, netCents, vatRateBp, vatCents, grossCents }) => ({ contractId, days, netCents, vatRateBp, vatCents, grossCents }))
        .sort((a, b) => (a.contractId < b.contractId ? -1 : 1))
    }))
    .sort((a, b) => (a.customerNumber < b.customerNumber ? -1 : 1))

// ---- The independent expectation -------------------------------------------------------------
// Deliberately not the production code: it walks the month day by day with Date objects and
// rounds with Math.round on the exact quotient, where production uses day numbers and integer
// half-up division. Only the spreading of a rate's VAT over its lines follows production's rule
// as stated (largest remainders, the earlier line on a tie): it is a rule to agree on, not a sum.

export interface ExpectedInvoice {
  readonly customerNumber: string
  /** The first and the last day of the month on which any of the customer's contracts is active. */
  readonly serviceStart: string
  readonly serviceEnd: string
  readonly netCents: number
  readonly vatCents: number
  readonly grossCents: number
  readonly lines: ReadonlyArray<{ contractId: string; days: number; netCents: number; vatRateBp: number; vatCents: number; grossCents: number }>
}

export const expectedInvoices = (organizationId: string, period: string) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const contracts = yield* sql<{
      customerNumber: string
      contractId: string
      description: string
      monthlyNetCents: number
      vatRateBp: number
      startsOn: string
      endsOn: string | null
    }>`
      SELECT c.customer_number AS "customerNumber", k.id AS "contractId", k.description, k.monthly_net_cents AS "monthlyNetCents",
             k.vat_rate_bp AS "vatRateBp", to_char(k.starts_on, 'YYYY-MM-DD') AS "startsOn",
             to_char(k.ends_on, 'YYYY-MM-DD') AS "endsOn"
      FROM contracts k JOIN customers c ON c.id = k.customer_id
      WHERE k.organization_id = ${organizationId}`
    const [year, month] = period.split("-").map(Number) as [number, number]
    const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate()
    const days = Array.from({ length: daysInMonth }, (_, i) => new Date(Date.UTC(year, month - 1, i + 1)).toISOString().slice(0, 10))
    // A line before its VAT, with what orders it on the invoice (start date, description, contract id).
    type Priced = Omit<ExpectedInvoice["lines"][number], "vatCents" | "grossCents"> & { readonly order: string }
    const byCustomer = new Map<string, Array<Priced>>()
    const activeDays = new Map<string, Set<string>>()
    for (const contract of contracts) {
      const activeOn = days.filter((day) => contract.startsOn <= day && (contract.endsOn === null || day <= contract.endsOn))
      const active = activeOn.length
      if (active === 0) continue
      const netCents = Math.round((contract.monthlyNetCents * active) / daysInMonth)
      // A line of 0,00 € is not issued, nor an invoice without lines.
      if (netCents === 0) continue
      activeDays.set(contract.customerNumber, new Set([...(activeDays.get(contract.customerNumber) ?? []), ...activeOn]))
      const lines = byCustomer.get(contract.customerNumber) ?? []
      const order = [contract.startsOn, contract.description, contract.contractId].join("\u0000")
      lines.push({ contractId: contract.contractId, days: active, netCents, vatRateBp: contract.vatRateBp, order })
      byCustomer.set(contract.customerNumber, lines)
    }
    // VAT per rate on the invoice's net at that rate, half up; each line its share rounded down, and the cents
    // left to the lines with the largest remainders, the earlier line on the invoice first.
    const withVat = (priced: ReadonlyArray<Priced>): Array<ExpectedInvoice["lines"][number]> => {
      const inOrder = [...priced].sort((a, b) => (a.order < b.order ? -1 : a.order > b.order ? 1 : 0))
      const vat = new Map<Priced, number>()
      for (const rate of new Set(inOrder.map((line) => line.vatRateBp))) {
        const atRate = inOrder.filter((line) => line.vatRateBp === rate)
        const total = Math.round((atRate.reduce((sum, line) => sum + line.netCents, 0) * rate) / 10_000)
        for (const line of atRate) vat.set(line, Math.floor((line.netCents * rate) / 10_000))
        const left = total - atRate.reduce((sum, line) => sum + vat.get(line)!, 0)
        const byRemainder = atRate
          .map((line, position) => ({ line, position, remainder: (line.netCents * rate) % 10_000 }))
          .sort((a, b) => b.remainder - a.remainder || a.position - b.position)
        for (const { line } of byRemainder.slice(0, left)) vat.set(line, vat.get(line)! + 1)
      }
      return inOrder.map((line) => {
        const vatCents = vat.get(line)!
        return { contractId: line.contractId, days: line.days, netCents: line.netCents, vatRateBp: line.vatRateBp, vatCents, grossCents: line.netCents + vatCents }
      })
    }
    return [...byCustomer.entries()]
      .map(([customerNumber, priced]): ExpectedInvoice => {
        const lines = withVat(priced)
        const netCents = lines.reduce((sum, line) => sum + line.netCents, 0)
        const vatCents = lines.reduce((sum, line) => sum + line.vatCents, 0)
        const onDays = days.filter((day) => activeDays.get(customerNumber)!.has(day))
        return {
          customerNumber,
          serviceStart: onDays[0]!,
          serviceEnd: onDays.at(-1)!,
          netCents,
          vatCents,
          grossCents: netCents + vatCents,
          lines: [...lines].sort((a, b) => (a.contractId < b.contractId ? -1 : 1))
        }
      })
      .sort((a, b) => (a.customerNumber < b.customerNumber ? -1 : 1))
  })
