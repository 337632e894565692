/**
 * Rolling a billing run back (docs/ROLLBACK_PLAYBOOK.md): allowed only while
 * none of its invoices is exported to SEPA or paid. In one transaction it
 * cancels the run's invoices (never deletes them: their numbers stay used),
 * marks the run rolled back and writes an audit entry naming actor and reason.
 * A refusal changes nothing but is audited too, so the trail shows every attempt.
 */
import { SqlClient } from "@effect/sql"
import { Clock, Duration, Effect, ParseResult, Schema } from "effect"
import { Audit, Db } from "../index.js"
import * as BillingRepo from "./BillingRepo.js"
import { RollbackRequest } from "./domain.js"
import {
  BillingRunAlreadyRolledBack,
  BillingRunLocked,
  BillingRunNotFound,
  InvalidRollbackRequest,
  RollbackForbidden
} from "./errors.js"

export interface RollbackResult {
  readonly runId: string
  readonly organizationId: string
  readonly jobId: string
  readonly billingPeriod: string
  /** The run's status before the rollback: `completed`, or `running` for a run that stopped half-way. */
  readonly previousStatus: string
  readonly invoicesCancelled: number
  readonly netCents: number
  readonly vatCents: number
  readonly grossCents: number
  /** The lowest and the highest cancelled number: other runs' numbers may lie between (`otherRunsNumbersInRange`). */
  readonly firstInvoiceNumber: string | null
  readonly lastInvoiceNumber: string | null
  /** How many runs of consecutive numbers the cancelled invoices form: 1 when first … last are all this run's. */
  readonly invoiceNumberRanges: number
  /**
   * Numbers between the first and the last that belong to other runs and were not cancelled by this rollback
   * (the organization's runs of other periods, billed at the same time, took turns chunk by chunk).
   * `cancelledNumbersQuery` lists exactly the cancelled ones.
   */
  readonly otherRunsNumbersInRange: number
  /** The SQL that lists exactly this run's invoice numbers, for the operator who tells customers which are void. */
  readonly cancelledNumbersQuery: string
  readonly rolledBackAt: Date
  /**
   * Other runs of the same organization and period whose invoices are still live (a run that stopped
   * half-way and a second job that billed the rest): billing the month again skips their customers.
   */
  readonly otherRunsWithInvoices: ReadonlyArray<{ readonly runId: string; readonly status: string; readonly invoices: number }>
}

export interface RollbackOptions {
  /**
   * How long to wait for the run and its invoices in all, which a chunk of the run's job holds while it commits
   * (well under a second for the default 500 customers) and an operator's session may hold. Default 30 s.
   */
  readonly lockTimeout?: Duration.DurationInput
}

/** How long recording a refusal may wait for a lock: it takes no row lock, so only a table lock could hold it up. */
const REFUSAL_LOCK_TIMEOUT_MILLIS = 1_000

// Real time, not the Clock's: the database's lock waits take real time, and a test moving the TestClock on
// while a rollback waits must not use up its wait.
const liveClock = Clock.make()

const decodeRequest = (request: RollbackRequest) =>
  Schema.decodeUnknown(RollbackRequest, { errors: "all" })(request).pipe(
    Effect.mapError((error) =>
      new InvalidRollbackRequest({
        reason: ParseResult.ArrayFormatter.formatErrorSync(error).map((issue) => `${issue.path.join(".")} ${issue.message}`).join("; ")
      })
    )
  )

/** The SQL that lists exactly the run's invoice numbers (a rollback cancels all of them). */
export const cancelledNumbersQuery = (runId: string): string =>
  `SELECT invoice_number FROM invoices WHERE billing_run_id = '${runId}' ORDER BY number_year, number_sequence;`

/** Rolls back one billing run, or refuses with a tagged error that says why. */
export const rollbackBillingRun = (request: RollbackRequest, options: RollbackOptions = {}) =>
  Effect.gen(function* () {
    const lockTimeoutMillis = Duration.toMillis(Duration.decode(options.lockTimeout ?? "30 seconds"))
    const { runId, reason, actor } = yield* decodeRequest(request)
    const sql = yield* SqlClient.SqlClient
    const audit = yield* Audit.Audit
    const repo = yield* BillingRepo.make
    // One deadline for all of the rollback's lock waits: lock_timeout bounds each wait by itself, so waiting
    // for the run and then for its invoices took up to twice the timeout. Each locking statement gets what is left.
    const deadline = (yield* liveClock.currentTimeMillis) + lockTimeoutMillis
    const beforeDeadline = <A, E, R>(statement: Effect.Effect<A, E, R>) =>
      Effect.flatMap(liveClock.currentTimeMillis, (now) => repo.limitWaits(Math.max(1, Math.ceil(deadline - now)))).pipe(
        Effect.zipRight(statement)
      )
    const rollback = sql.withTransaction(
      Effect.gen(function* () {
        const waitLimits = yield* repo.waitLimits
        // Locks the run: a chunk of its job cannot commit halfway through this.
        const run = yield* beforeDeadline(repo.lockRun(runId))
        if (run === undefined) return yield* new BillingRunNotFound({ runId })
        if (run.status === "rolled_back") {
          return yield* new BillingRunAlreadyRolledBack({
            runId,
            organizationId: run.organizationId,
            jobId: run.jobId,
            rolledBackAt: run.rolledBackAt!,
            rolledBackBy: run.rolledBackBy!
          })
        }
        // Locks its invoices: none can be exported between this check and the cancellation.
        const check = yield* beforeDeadline(repo.checkRollback(runId))
        yield* repo.restoreWaitLimits(waitLimits)
        if (check.exported > 0 || check.paid > 0) {
          return yield* new RollbackForbidden({
            runId,
            organizationId: run.organizationId,
            jobId: run.jobId,
            billingPeriod: run.billingPeriod,
            exported: check.exported,
            paid: check.paid,
            examples: check.examples
          })
        }
        // Read once the locks are held: the cancellation is not dated before a chunk that committed meanwhile.
        const at = new Date(yield* Clock.currentTimeMillis)
        const cancelled = yield* repo.cancelInvoices(runId, reason, at)
        yield* repo.markRolledBack(runId, actor, reason, at)
        const otherRunsWithInvoices = yield* repo.otherRunsWithLiveInvoices(runId)
        const result: RollbackResult = {
          runId,
          organizationId: run.organizationId,
          jobId: run.jobId,
          billingPeriod: run.billingPeriod,
          previousStatus: run.status,
          invoicesCancelled: cancelled.count,
          netCents: cancelled.netCents,
          vatCents: cancelled.vatCents,
          grossCents: cancelled.grossCents,
          firstInvoiceNumber: cancelled.firstNumber,
          lastInvoiceNumber: cancelled.lastNumber,
          invoiceNumberRanges: cancelled.numberRanges,
          otherRunsNumbersInRange: cancelled.otherRunsNumbersInRange,
          cancelledNumbersQuery: cancelledNumbersQuery(runId),
          rolledBackAt: at,
          otherRunsWithInvoices
        }
        yield* audit.record({
          event: "billing_run_rolled_back",
          actor,
          organizationId: run.organizationId,
          jobId: run.jobId,
          // The result itself, less what the entry's own columns hold; rolledBackAt is the entry's time.
          details: (({ organizationId: _org, jobId: _job, rolledBackAt: _at, ...details }) => ({ ...details, reason }))(result)
        })
        return result
      })
    )

    // The refusal is recorded after the transaction rolled back, so it is all that remains of the attempt.
    const recordRefusal = (error: RollbackForbidden | BillingRunAlreadyRolledBack) =>
      audit.record({
        event: "billing_run_rollback_refused",
        actor,
        organizationId: error.organizationId,
        jobId: error.jobId,
        details: error._tag === "RollbackForbidden"
          ? { runId, reason, refusal: error._tag, exported: error.exported, paid: error.paid, examples: error.examples }
          : { runId, reason, refusal: error._tag, rolledBackAt: error.rolledBackAt.toISOString(), rolledBackBy: error.rolledBackBy }
      })

    // The run is read without locking it and audit_logs takes inserts while rows are locked, so this does not
    // wait for the session that held the run; the lock timeout only bounds a table lock (a schema change).
    const recordLocked = (error: BillingRunLocked) =>
      sql.withTransaction(
        Effect.gen(function* () {
          yield* Db.withLockTimeout(sql, REFUSAL_LOCK_TIMEOUT_MILLIS)
          const run = yield* repo.findRun(runId)
          yield* audit.record({
            event: "billing_run_rollback_refused",
            actor,
            organizationId: run?.organizationId ?? null,
            jobId: run?.jobId ?? null,
            details: { runId, reason, refusal: error._tag, waitedMillis: error.waitedMillis }
          })
        })
      )

    return yield* rollback.pipe(
      // A statement cancelled before the deadline was cancelled by someone (pg_cancel_backend), not timed out.
      Effect.catchIf(
        (error) => Db.isLockTimeout(error) || Db.isStatementCancelled(error),
        (error) =>
          Effect.flatMap(liveClock.currentTimeMillis, (now) =>
            Effect.fail(Db.isLockTimeout(error) || now >= deadline ? new BillingRunLocked({ runId, waitedMillis: lockTimeoutMillis }) : error)
          )
      ),
      Effect.tapError((error) =>
        error._tag === "RollbackForbidden" || error._tag === "BillingRunAlreadyRolledBack"
          ? recordRefusal(error)
          : error._tag === "BillingRunLocked"
          ? recordLocked(error)
          : Effect.void
      )
    )
  }).pipe(Effect.withSpan("billing.rollback", { attributes: { runId: request.runId } }))
