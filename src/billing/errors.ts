/**
 * The billing module's errors. Each message says what is wrong and what to do.
 * Database failures stay `SqlError`: the runtime retries a billing run on them.
 */
import { Data } from "effect"
import { formatEuro } from "./money.js"

/** The job's organization has no row in `organizations`. Retrying cannot help. */
export class UnknownOrganization extends Data.TaggedError("UnknownOrganization")<{
  readonly organizationId: string
}> {
  override get message() {
    return `unknown organization ${this.organizationId}: it has no row in organizations`
  }
}

/** A billing period that is not a month written "YYYY-MM". Retrying cannot help. */
export class InvalidBillingPeriod extends Data.TaggedError("InvalidBillingPeriod")<{
  readonly input: string
}> {
  override get message() {
    return `invalid billing period "${this.input}": expected a month as YYYY-MM, e.g. 2025-03`
  }
}

/** A run was rolled back while its job still had attempts left: the job stops instead of billing again. */
export class BillingRunRolledBack extends Data.TaggedError("BillingRunRolledBack")<{
  readonly runId: string
}> {
  override get message() {
    return `billing run ${this.runId} was rolled back; enqueue a new billing_run job to bill the period again`
  }
}

/**
 * A customer's invoice for the month comes to more than an invoice's amounts hold (integer cents:
 * 21.474.836,47 €): almost certainly a contract's monthly amount entered wrong. Retrying cannot help;
 * the run stops before that customer's chunk, with the chunks before it kept.
 */
export class InvoiceTooLarge extends Data.TaggedError("InvoiceTooLarge")<{
  readonly customerNumber: string
  readonly billingPeriod: string
  readonly grossCents: number
}> {
  override get message() {
    return `the invoice of customer ${this.customerNumber} for ${this.billingPeriod} comes to ${formatEuro(this.grossCents)}, ` +
      `more than an invoice holds (${formatEuro(MAX_INVOICE_CENTS)}): check the monthly amounts of its contracts, then retry the job`
  }
}

/** The largest amount an invoice or invoice line holds, in cents (the columns are PostgreSQL integers). */
export const MAX_INVOICE_CENTS = 2_147_483_647

/** No billing run has this id. */
export class BillingRunNotFound extends Data.TaggedError("BillingRunNotFound")<{
  readonly runId: string
}> {
  override get message() {
    return `no billing run with id ${this.runId} (see billing_runs.id)`
  }
}

/** The rollback request is incomplete (a run id that is not a UUID, no reason, no actor). */
export class InvalidRollbackRequest extends Data.TaggedError("InvalidRollbackRequest")<{
  readonly reason: string
}> {
  override get message() {
    return `invalid rollback request: ${this.reason}`
  }
}

/** The run was rolled back before; its invoices are already cancelled. */
export class BillingRunAlreadyRolledBack extends Data.TaggedError("BillingRunAlreadyRolledBack")<{
  readonly runId: string
  readonly organizationId: string
  readonly jobId: string
  readonly rolledBackAt: Date
  readonly rolledBackBy: string
}> {
  override get message() {
    return `billing run ${this.runId} was already rolled back at ${this.rolledBackAt.toISOString()} by ${this.rolledBackBy}; nothing to do`
  }
}

/** Another session held the run or its invoices for longer than a rollback waits. */
export class BillingRunLocked extends Data.TaggedError("BillingRunLocked")<{
  readonly runId: string
  readonly waitedMillis: number
}> {
  override get message() {
    return `cannot roll back billing run ${this.runId}: another session held the run or its invoices for ${this.waitedMillis / 1000} s ` +
      "(a chunk of its job takes far less; an open psql transaction, or a SEPA export?); nothing was changed. " +
      "End that session's transaction and run the command again"
  }
}

/**
 * Some of the run's invoices were exported to SEPA or paid: money moved, so the
 * run must not be rolled back. Correct it with credit notes instead.
 */
export class RollbackForbidden extends Data.TaggedError("RollbackForbidden")<{
  readonly runId: string
  readonly organizationId: string
  readonly jobId: string
  readonly billingPeriod: string
  readonly exported: number
  readonly paid: number
  /** A few of the blocking invoice numbers, for the operator. */
  readonly examples: ReadonlyArray<string>
}> {
  override get message() {
    // "1 of its invoices is exported to SEPA", "2 of its invoices are exported to SEPA and 1 is paid": no "0 are".
    const counts = [[this.exported, "exported to SEPA"], [this.paid, "paid"]] as const
    const blocking = counts.filter(([count]) => count > 0).map(([count, what], i) =>
      `${count}${i === 0 ? " of its invoices" : ""} ${count === 1 ? "is" : "are"} ${what}`
    )
    return `billing run ${this.runId} (${this.billingPeriod}) must not be rolled back: ${blocking.join(" and ")} ` +
      `(${this.examples.join(", ")}${this.exported + this.paid > this.examples.length ? ", …" : ""}). ` +
      `Nothing was changed. Correct those invoices with credit notes: see docs/ROLLBACK_PLAYBOOK.md`
  }
}

/** Demo seed options out of range. */
export class InvalidSeedOptions extends Data.TaggedError("InvalidSeedOptions")<{
  readonly reason: string
}> {
  override get message() {
    return `invalid demo seed options: ${this.reason}`
  }
}
