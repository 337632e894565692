/**
 * The billing domain's Schemas: what a billing run job carries, and the master
 * data (organizations, customers with SEPA mandates, contracts) as it must be
 * before it is stored. Money is integer cents; VAT rates are basis points.
 */
import { Schema } from "effect"
import { isCalendarDate, PERIOD_FORMAT, shiftMonth } from "./calendar.js"
import { creditorIdProblem, ibanProblem, maskIban } from "./iban.js"

/** A calendar date, ISO "YYYY-MM-DD", that exists. */
export const IsoDate = Schema.String.pipe(
  Schema.filter((value) => isCalendarDate(value) || `expected an existing date as YYYY-MM-DD, got "${value}"`),
  Schema.annotations({ identifier: "IsoDate" })
)

/** A billing period: one calendar month, "YYYY-MM". */
export const BillingPeriod = Schema.String.pipe(
  Schema.filter((value) => PERIOD_FORMAT.test(value) || `expected a month as YYYY-MM (e.g. 2025-03), got "${value}"`),
  Schema.annotations({ identifier: "BillingPeriod" })
)

/** An IBAN in electronic format (no spaces, upper case) whose check digits are right. */
export const Iban = Schema.String.pipe(
  Schema.filter((value) => {
    const problem = ibanProblem(value)
    return problem === undefined || `invalid IBAN "${maskIban(value)}": ${problem}`
  }),
  Schema.brand("Iban"),
  Schema.annotations({ identifier: "Iban" })
)
export type Iban = typeof Iban.Type

/** A BIC (8 or 11 characters). Optional in SEPA, kept when the customer gave one. */
export const Bic = Schema.String.pipe(
  Schema.pattern(/^[A-Z]{6}[A-Z0-9]{2}([A-Z0-9]{3})?$/, { message: () => "a BIC is 8 or 11 upper-case letters and digits" })
)

/** A SEPA mandate reference: up to 35 characters from SEPA's character set. */
// Unique per organization whatever its case (billing migration 0013), which the database checks; no
// '/' at either end and no '//' (EPC's rule for identifiers, billing migration 0016).
export const MandateReference = Schema.String.pipe(
  Schema.pattern(/^(?!.*\/\/)[A-Za-z0-9+?:().,'-](?:[A-Za-z0-9+?/:().,' -]{0,33}[A-Za-z0-9+?:().,'-])?$/, {
    message: () =>
      "a mandate reference is 1 to 35 of A-Z a-z 0-9 + ? / : ( ) . , ' - and space, not beginning or ending with a space or '/', " +
      "and without '//'"
  })
)

/** Whole euro cents. */
export const Cents = Schema.Int.pipe(Schema.between(0, 2_000_000_000))

/** A VAT rate in basis points: 1900 is 19 %, 700 is 7 %. */
export const VatRateBp = Schema.Int.pipe(Schema.between(0, 10_000))

/**
 * The `billing_run` job's payload. The job's organization comes from the job itself. A key it does not know is
 * refused, not dropped (a Struct's default): a misspelt `customerIds` would bill every customer of the
 * organization, and a misspelt `invoiceDate` date the invoices today, each invoice taking a number for good.
 */
export const BillingRunPayload = Schema.Struct({
  billingPeriod: BillingPeriod,
  /** Bill only these customers (ids); default: every customer of the organization. */
  customerIds: Schema.optional(Schema.NonEmptyArray(Schema.UUID).pipe(Schema.maxItems(10_000))),
  /** The invoices' date; default: today in Germany when the run starts. It also picks the number year. */
  invoiceDate: Schema.optional(IsoDate.pipe(Schema.filter((date) => /^2\d{3}-/.test(date) || "the invoice date must lie in the years 2000 to 2999")))
}).annotations({ parseOptions: { onExcessProperty: "error" } }).pipe(
  // A typo in the year (2009 for 2025) dated every invoice years off and took that year's numbers for good: a
  // given date must lie from a month before the period to six months after it (§14 Abs. 2 UStG: an invoice is
  // issued within six months of the service). Left out, the invoices are dated the day the run starts.
  Schema.filter(({ billingPeriod, invoiceDate }) => {
    if (invoiceDate === undefined) return true
    const from = `${shiftMonth(billingPeriod, -1)}-01`
    const before = `${shiftMonth(billingPeriod, 7)}-01`
    return (invoiceDate >= from && invoiceDate < before) ||
      `the invoice date ${invoiceDate} is too far from the billing period ${billingPeriod}: give one from ${from} to the end of ` +
        `${shiftMonth(billingPeriod, 6)} (a month before the period to six months after it), or leave it out to date the invoices today`
  })
)
export type BillingRunPayload = typeof BillingRunPayload.Type

export const NewOrganization = Schema.Struct({
  id: Schema.UUID,
  name: Schema.NonEmptyTrimmedString,
  paymentTermsDays: Schema.Int.pipe(Schema.between(0, 180)),
  invoiceNumberPrefix: Schema.String.pipe(Schema.pattern(/^[A-Z0-9]{1,10}$/)),
  sepaCreditorId: Schema.optional(Schema.String.pipe(Schema.filter((id) => creditorIdProblem(id) ?? true)))
})
export type NewOrganization = typeof NewOrganization.Type

export const NewCustomer = Schema.Struct({
  customerNumber: Schema.NonEmptyTrimmedString.pipe(Schema.maxLength(40)),
  name: Schema.NonEmptyTrimmedString,
  email: Schema.optional(Schema.String.pipe(Schema.pattern(/^[^@\s]+@[^@\s]+\.[^@\s]+$/))),
  iban: Iban,
  bic: Schema.optional(Bic),
  mandateReference: MandateReference,
  mandateSignedOn: IsoDate
})
export type NewCustomer = typeof NewCustomer.Type

export const NewContract = Schema.Struct({
  /** The customer's number within the organization. */
  customerNumber: Schema.NonEmptyTrimmedString,
  description: Schema.NonEmptyTrimmedString,
  monthlyNetCents: Cents.pipe(Schema.positive()),
  vatRateBp: VatRateBp,
  startsOn: IsoDate,
  /** Inclusive; absent: until cancelled. */
  endsOn: Schema.optional(IsoDate)
}).pipe(
  Schema.filter((contract) => contract.endsOn === undefined || contract.endsOn >= contract.startsOn || "a contract cannot end before it starts")
)
export type NewContract = typeof NewContract.Type

/** What an operator gives to roll a billing run back. */
export const RollbackRequest = Schema.Struct({
  runId: Schema.UUID.annotations({ message: () => "must be the id of a billing run (a UUID, billing_runs.id)" }),
  reason: Schema.String.pipe(
    Schema.filter((reason) => reason.trim() !== "" || "must say why the run is rolled back"),
    Schema.maxLength(1000, { message: () => "must be at most 1000 characters" })
  ),
  /** Who does it: a user's UUID, or a name such as `cli:alice`. */
  actor: Schema.String.pipe(
    Schema.filter((actor) => actor.trim() !== "" || "must name who rolls the run back"),
    Schema.maxLength(200, { message: () => "must be at most 200 characters" })
  )
})
export type RollbackRequest = typeof RollbackRequest.Encoded

/** What a billing run has done so far (the `billing_runs` row). */
export interface BillingRun {
  readonly id: string
  readonly organizationId: string
  readonly jobId: string
  readonly billingPeriod: string
  readonly invoiceDate: string
  /** The direct debit's collection date, fixed when the run starts (null for a run started before billing 0020, until its next chunk). */
  readonly dueDate: string | null
  readonly customerFilter: ReadonlyArray<string> | null
  readonly status: "running" | "completed" | "rolled_back"
  /** The last customer number of the last committed chunk. */
  readonly cursor: string | null
  readonly chunksCommitted: number
  readonly customersProcessed: number
  readonly invoicesCreated: number
  /** Customers that already had a live invoice for the period (an earlier run): left alone. */
  readonly invoicesSkipped: number
  /** Customers whose month came to 0,00 € (every line rounded to nothing): no invoice, no number. */
  readonly customersNothingOwed: number
  /** Lines of 0,00 € left out, of those customers and of invoices with other lines. */
  readonly zeroLinesLeftOut: number
  /**
   * Customers whose SEPA mandate is signed after the run's due date (the direct debit's collection date):
   * no invoice, no number; a later run for the period bills them once the mandate is valid.
   */
  readonly customersMandateNotYetValid: number
  /** The first 20 of their customer numbers, in customer-number order. */
  readonly mandateNotYetValidCustomerNumbers: ReadonlyArray<string>
  readonly netTotalCents: number
  readonly vatTotalCents: number
  readonly grossTotalCents: number
}
