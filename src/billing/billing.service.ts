/**
 * The `billing_run` job: bills one organization (the job's) for one month.
 *
 * A run works through the customers with contracts active in the month, in
 * customer-number order, in chunks of 500, one transaction per chunk: the
 * chunk's invoices, their lines, their numbers and the run's progress commit
 * together. A retry after a crash resumes after the last committed chunk.
 * No customer ever gets two live invoices for the same month: the run skips
 * customers that have one, and a unique index backs that up. A customer whose
 * SEPA mandate is signed after the due date (when the direct debit is
 * collected) is left out, counted and named in a warning: a later run for the
 * month bills it once the mandate is valid.
 *
 * This module uses only skiplock's public API, as any user's handler would.
 */
import { SqlClient } from "@effect/sql"
import type { SqlError } from "@effect/sql/SqlError"
import { Clock, Effect } from "effect"
import { randomUUID } from "node:crypto"
import { Audit, Handler, type JobContext, JobDefinition } from "../index.js"
import * as BillingRepo from "./BillingRepo.js"
import { addDays, germanDate, type Period, periodOf } from "./calendar.js"
import { type BillingRun, BillingRunPayload } from "./domain.js"
import { BillingRunRolledBack, InvalidBillingPeriod, InvoiceTooLarge, MAX_INVOICE_CENTS, UnknownOrganization } from "./errors.js"
import { draftInvoice, formatInvoiceNumber } from "./pricing.js"

/** The job type and its payload: `{ billingPeriod: "YYYY-MM", customerIds?, invoiceDate? }`. */
export const billingRun = JobDefinition.make("billing_run", BillingRunPayload)

export const DEFAULT_CHUNK_SIZE = 500

/** What a run reports after each committed chunk. */
export interface ChunkCommitted {
  readonly run: BillingRun
  /**
   * This run's chunks with customers so far, earlier attempts' included. When the
   * last chunk comes up empty, the final report repeats the previous number with `done`.
   */
  readonly chunk: number
  /** The run is complete with this chunk. */
  readonly done: boolean
}

export interface BillingRunOptions {
  /** Customers per transaction. Default 500. */
  readonly chunkSize?: number
  /** Runs after each committed chunk, outside its transaction (for progress reporting and tests). */
  readonly afterChunk?: (committed: ChunkCommitted) => Effect.Effect<void>
}

export type BillingRunError = UnknownOrganization | InvalidBillingPeriod | BillingRunRolledBack | InvoiceTooLarge | SqlError

/** Errors retrying cannot fix; a SqlError is not one of them, so the runtime retries it. */
export const isPermanentBillingError = (error: BillingRunError): boolean =>
  error._tag === "UnknownOrganization" || error._tag === "InvalidBillingPeriod" || error._tag === "BillingRunRolledBack" ||
  error._tag === "InvoiceTooLarge"

export const parseBillingPeriod = (input: string): Effect.Effect<Period, InvalidBillingPeriod> => {
  const period = periodOf(input)
  return period === undefined ? Effect.fail(new InvalidBillingPeriod({ input })) : Effect.succeed(period)
}

const now = Effect.map(Clock.currentTimeMillis, (ms) => new Date(ms))

const totals = (run: BillingRun) => ({
  runId: run.id,
  billingPeriod: run.billingPeriod,
  invoiceDate: run.invoiceDate,
  customersProcessed: run.customersProcessed,
  invoicesCreated: run.invoicesCreated,
  invoicesSkipped: run.invoicesSkipped,
  customersNothingOwed: run.customersNothingOwed,
  zeroLinesLeftOut: run.zeroLinesLeftOut,
  customersMandateNotYetValid: run.customersMandateNotYetValid,
  mandateNotYetValidCustomerNumbers: run.mandateNotYetValidCustomerNumbers,
  netTotalCents: run.netTotalCents,
  vatTotalCents: run.vatTotalCents,
  grossTotalCents: run.grossTotalCents,
  chunks: run.chunksCommitted
})

/** Says which customers the run left out for want of a mandate, and what bills them. */
const warnMandatesNotYetValid = (run: BillingRun, dueDate: string) => {
  const named = run.mandateNotYetValidCustomerNumbers
  const more = run.customersMandateNotYetValid - named.length
  return Effect.logWarning(
    `billing run ${run.id} for ${run.billingPeriod} left out ${run.customersMandateNotYetValid} customer(s) whose SEPA mandate is ` +
      `signed after the due date ${dueDate}, the day the direct debit is collected, so no mandate covers it: ` +
      `${named.join(", ")}${more > 0 ? ` and ${more} more` : ""}; check the dates on their mandates: once a mandate is valid, a run ` +
      `for ${run.billingPeriod} with a later invoiceDate bills its customer`
  ).pipe(
    Effect.annotateLogs({
      runId: run.id,
      customersMandateNotYetValid: run.customersMandateNotYetValid,
      customerNumbers: named.join(",")
    })
  )
}

/** Runs (or resumes) the billing run of one job. Returns the run as it ends. */
export const runBilling = (payload: BillingRunPayload, job: JobContext, options: BillingRunOptions = {}) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const audit = yield* Audit.Audit
    const repo = yield* BillingRepo.make
    const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE
    if (!Number.isInteger(chunkSize) || chunkSize < 1) return yield* Effect.dieMessage(`chunkSize must be a whole number of at least 1, got ${chunkSize}`)
    const period = yield* parseBillingPeriod(payload.billingPeriod)
    const auditEntry = (event: string, details: Record<string, unknown>) =>
      audit.record({ event, actor: job.workerId, organizationId: job.organizationId, jobId: job.jobId, traceId: job.traceId, details })

    // Find this job's run, or start it. The invoice date and the due date are fixed here, so every chunk and
    // every retry uses the same ones, whatever happens to the organization's payment terms meanwhile.
    const open = sql.withTransaction(
      Effect.gen(function* () {
        const organization = yield* repo.findOrganization(job.organizationId)
        if (organization === undefined) return yield* new UnknownOrganization({ organizationId: job.organizationId })
        const at = yield* now
        const invoiceDate = payload.invoiceDate ?? germanDate(at.getTime())
        const started = yield* repo.insertRun({
          id: randomUUID(),
          organizationId: job.organizationId,
          jobId: job.jobId,
          billingPeriod: period.period,
          invoiceDate,
          dueDate: addDays(invoiceDate, organization.paymentTermsDays),
          customerFilter: payload.customerIds ?? null,
          createdBy: job.createdBy,
          now: at
        })
        if (started !== undefined) {
          yield* auditEntry("billing_run_started", {
            runId: started.id,
            billingPeriod: started.billingPeriod,
            invoiceDate: started.invoiceDate,
            dueDate: started.dueDate,
            customerFilter: started.customerFilter?.length ?? null,
            chunkSize
          })
          return started
        }
        const run = (yield* repo.findRunByJob(job.jobId))!
        if (run.status === "rolled_back") return yield* new BillingRunRolledBack({ runId: run.id })
        if (run.status === "running") {
          yield* auditEntry("billing_run_resumed", { ...totals(run), attempt: job.attempt, cursor: run.cursor })
        }
        return run
      })
    )

    // One chunk, one transaction: lock, pick the next customers, invoice them, record the progress.
    const billChunk = (runId: string) =>
      sql.withTransaction(
        Effect.gen(function* () {
          const organization = yield* repo.lockOrganization(job.organizationId)
          if (organization === undefined) return yield* new UnknownOrganization({ organizationId: job.organizationId })
          const run = (yield* repo.lockRun(runId))!
          if (run.status === "rolled_back") return yield* new BillingRunRolledBack({ runId })
          // The direct debit's collection date, fixed with the run (a run started before billing 0020 fixes it now).
          const dueDate = run.dueDate ?? addDays(run.invoiceDate, organization.paymentTermsDays)
          // Completed by another attempt since this one opened it (its lease was lost meanwhile): that one warned.
          if (run.status === "completed") return { run, done: true, completedHere: false, dueDate }
          if (run.dueDate === null) yield* repo.fixDueDate(run.id, dueDate)
          const at = yield* now

          const candidates = yield* repo.nextCandidates({
            organizationId: run.organizationId,
            billingPeriod: run.billingPeriod,
            periodStart: period.start,
            periodEnd: period.end,
            dueDate,
            cursor: run.cursor,
            customerFilter: run.customerFilter,
            limit: chunkSize
          })
          const toBill = candidates.filter((candidate) => !candidate.alreadyInvoiced)
          const contracts = toBill.length === 0
            ? []
            : yield* repo.activeContracts(run.organizationId, toBill.map((c) => c.customerId), period.start, period.end)
          const contractsOf = new Map<string, Array<BillingRepo.ContractRow>>()
          for (const contract of contracts) {
            const list = contractsOf.get(contract.customerId)
            if (list === undefined) contractsOf.set(contract.customerId, [contract])
            else list.push(contract)
          }
          const priced = toBill.flatMap((customer) => {
            const draft = draftInvoice(contractsOf.get(customer.customerId) ?? [], period)
            return draft === undefined ? [] : [{ customer, draft }]
          })
          // Nothing owed (every line came to 0,00 €): no invoice, so it takes no number and asks no direct debit of 0,00 €.
          const owed = priced.filter(({ draft }) => draft.lines.length > 0)
          // A mandate signed after the collection date does not cover it: no invoice, no number, so a later run can bill them.
          const drafts = owed.filter(({ customer }) => !customer.mandateSignedAfterDueDate)
          const mandateNotYetValid = owed.filter(({ customer }) => customer.mandateSignedAfterDueDate)
          // Said here, by customer, instead of as the database's "out of range for type integer" on every attempt.
          const tooLarge = drafts.find(({ draft }) => draft.grossCents > MAX_INVOICE_CENTS)
          if (tooLarge !== undefined) {
            return yield* new InvoiceTooLarge({
              customerNumber: tooLarge.customer.customerNumber,
              billingPeriod: run.billingPeriod,
              grossCents: tooLarge.draft.grossCents
            })
          }

          if (drafts.length > 0) {
            const year = Number(run.invoiceDate.slice(0, 4))
            const first = yield* repo.takeInvoiceNumbers(run.organizationId, year, drafts.length)
            const invoices = drafts.map(({ customer, draft }, index) => ({
              id: randomUUID(),
              customerId: customer.customerId,
              invoiceNumber: formatInvoiceNumber(organization.invoiceNumberPrefix, year, first + index),
              numberSequence: first + index,
              serviceStart: draft.serviceStart,
              serviceEnd: draft.serviceEnd,
              netCents: draft.netCents,
              vatCents: draft.vatCents,
              grossCents: draft.grossCents,
              iban: customer.iban,
              mandateReference: customer.mandateReference
            }))
            yield* repo.insertInvoices({
              organizationId: run.organizationId,
              runId,
              billingPeriod: run.billingPeriod,
              year,
              invoiceDate: run.invoiceDate,
              dueDate,
              now: at
            }, invoices)
            yield* repo.insertInvoiceLines(
              run.organizationId,
              drafts.flatMap(({ draft }, index) => draft.lines.map((line) => ({ ...line, invoiceId: invoices[index]!.id })))
            )
          }

          const done = candidates.length < chunkSize
          let updated = run
          if (candidates.length > 0) {
            const sum = (pick: (d: (typeof drafts)[number]["draft"]) => number) => drafts.reduce((total, { draft }) => total + pick(draft), 0)
            updated = yield* repo.recordChunk(runId, {
              cursor: candidates[candidates.length - 1]!.customerNumber,
              customersProcessed: candidates.length,
              invoicesCreated: drafts.length,
              invoicesSkipped: candidates.length - priced.length,
              customersNothingOwed: priced.length - owed.length,
              mandateNotYetValid: mandateNotYetValid.map(({ customer }) => customer.customerNumber),
              zeroLinesLeftOut: priced.reduce((total, { draft }) => total + draft.zeroLinesLeftOut, 0),
              netCents: sum((d) => d.netCents),
              vatCents: sum((d) => d.vatCents),
              grossCents: sum((d) => d.grossCents)
            }, at)
          }
          if (done) {
            updated = yield* repo.completeRun(runId, at)
            yield* auditEntry("billing_run_completed", totals(updated))
          }
          return { run: updated, done, completedHere: done, dueDate }
        })
      ).pipe(Effect.withSpan("billing.chunk", { attributes: { runId } }))

    let run: BillingRun = yield* open
    let done = run.status === "completed"
    while (!done) {
      const committed = yield* billChunk(run.id)
      run = committed.run
      done = committed.done
      // After the commit, so that a chunk rolled back names no one.
      if (committed.completedHere && run.customersMandateNotYetValid > 0) yield* warnMandatesNotYetValid(run, committed.dueDate)
      if (options.afterChunk !== undefined) yield* options.afterChunk({ run, chunk: run.chunksCommitted, done })
    }
    return run
  }).pipe(
    Effect.withSpan("billing.run", { attributes: { organizationId: job.organizationId, billingPeriod: payload.billingPeriod } }),
    Effect.annotateLogs({ billingPeriod: payload.billingPeriod })
  )

/** The `billing_run` handler, with options (chunk size, progress hook). */
export const makeBillingRunHandler = (options: BillingRunOptions = {}) => {
  const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE
  if (!Number.isInteger(chunkSize) || chunkSize < 1) throw new RangeError(`chunkSize must be a whole number of at least 1, got ${chunkSize}`)
  return Handler.make(billingRun, {
    run: (payload, job) => runBilling(payload, job, options),
    permanent: isPermanentBillingError
  })
}

/** The `billing_run` handler: chunks of 500 customers. It needs `SqlClient` and `Audit`. */
export const billingRunHandler = makeBillingRunHandler()
