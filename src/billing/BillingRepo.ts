/**
 * The SQL of billing runs, invoices and invoice numbers, in one place. Every
 * query joins the caller's transaction; times come from the caller's Clock.
 * Dates travel as ISO strings (pg would turn them into local-midnight Dates)
 * and bigint totals as text, converted here.
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"
import type { BillingRun } from "./domain.js"
import type { InvoiceLineDraft } from "./pricing.js"

export interface OrganizationSettings {
  readonly id: string
  readonly name: string
  readonly paymentTermsDays: number
  readonly invoiceNumberPrefix: string
}

/** A customer with at least one contract active in the period. */
export interface Candidate {
  readonly customerId: string
  readonly customerNumber: string
  readonly iban: string
  readonly mandateReference: string
  /** Its mandate is signed after the run's due date: a direct debit due then has no mandate to be collected under. */
  readonly mandateSignedAfterDueDate: boolean
  /** It already has a live (not cancelled) invoice for the period. */
  readonly alreadyInvoiced: boolean
}

export interface ContractRow {
  readonly contractId: string
  readonly customerId: string
  readonly description: string
  readonly monthlyNetCents: number
  readonly vatRateBp: number
  readonly startsOn: string
  readonly endsOn: string | null
}

export interface NewInvoiceRow {
  readonly id: string
  readonly customerId: string
  readonly invoiceNumber: string
  readonly numberSequence: number
  /** The span of the invoice's lines, not the whole month (0005's comment on the columns says otherwise; 0011 corrects it). */
  readonly serviceStart: string
  readonly serviceEnd: string
  readonly netCents: number
  readonly vatCents: number
  readonly grossCents: number
  readonly iban: string
  readonly mandateReference: string
}

/** A priced line of a draft, on its way into invoice_lines. */
export interface NewInvoiceLineRow extends InvoiceLineDraft {
  readonly invoiceId: string
}

export interface ChunkProgress {
  readonly cursor: string
  readonly customersProcessed: number
  readonly invoicesCreated: number
  readonly invoicesSkipped: number
  readonly customersNothingOwed: number
  /** The customer numbers of the chunk's customers left out because their mandate is signed after the due date. */
  readonly mandateNotYetValid: ReadonlyArray<string>
  readonly zeroLinesLeftOut: number
  readonly netCents: number
  readonly vatCents: number
  readonly grossCents: number
}

/** The run's invoices that block a rollback, after locking all of them. */
export interface RollbackCheck {
  readonly invoices: number
  readonly exported: number
  readonly paid: number
  readonly examples: ReadonlyArray<string>
}

export interface CancelledInvoices {
  readonly count: number
  readonly netCents: number
  readonly vatCents: number
  readonly grossCents: number
  readonly firstNumber: string | null
  readonly lastNumber: string | null
  /** How many runs of consecutive numbers the cancelled ones form: 1 when they are contiguous. */
  readonly numberRanges: number
  /** Numbers between the first and the last that belong to other runs (their chunks took turns with this run's). */
  readonly otherRunsNumbersInRange: number
}

/** How many of the customer numbers left out for their mandate a run keeps: the first, in customer-number order. */
const MANDATE_NOT_YET_VALID_NUMBERS_KEPT = 20

interface RunRow extends Omit<BillingRun, "netTotalCents" | "vatTotalCents" | "grossTotalCents"> {
  readonly netTotalCents: string
  readonly vatTotalCents: string
  readonly grossTotalCents: string
  readonly rolledBackAt: Date | null
  readonly rolledBackBy: string | null
}

export interface StoredBillingRun extends BillingRun {
  readonly rolledBackAt: Date | null
  readonly rolledBackBy: string | null
}

const safeNumber = (text: string): number => {
  const value = Number(text)
  if (!Number.isSafeInteger(value)) throw new RangeError(`amount ${text} is beyond the safe integer range`)
  return value
}

const toRun = (row: RunRow): StoredBillingRun => ({
  ...row,
  netTotalCents: safeNumber(row.netTotalCents),
  vatTotalCents: safeNumber(row.vatTotalCents),
  grossTotalCents: safeNumber(row.grossTotalCents)
})

export const make = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient

  const runColumns = sql`
    id, organization_id AS "organizationId", job_id AS "jobId", billing_period AS "billingPeriod",
    to_char(invoice_date, 'YYYY-MM-DD') AS "invoiceDate", to_char(due_date, 'YYYY-MM-DD') AS "dueDate",
    customer_filter AS "customerFilter", status, cursor,
    chunks_committed AS "chunksCommitted", customers_processed AS "customersProcessed",
    invoices_created AS "invoicesCreated", invoices_skipped AS "invoicesSkipped",
    customers_nothing_owed AS "customersNothingOwed", zero_lines_left_out AS "zeroLinesLeftOut",
    customers_mandate_not_yet_valid AS "customersMandateNotYetValid",
    mandate_not_yet_valid_customer_numbers AS "mandateNotYetValidCustomerNumbers",
    net_total_cents::text AS "netTotalCents", vat_total_cents::text AS "vatTotalCents",
    gross_total_cents::text AS "grossTotalCents", rolled_back_at AS "rolledBackAt", rolled_back_by AS "rolledBackBy"`

  const oneRun = (rows: ReadonlyArray<RunRow>) => (rows[0] === undefined ? undefined : toRun(rows[0]))

  return {
    /** The organization's billing settings, or undefined when it does not exist. */
    findOrganization: (organizationId: string) =>
      sql<OrganizationSettings>`
        SELECT id, name, payment_terms_days AS "paymentTermsDays", invoice_number_prefix AS "invoiceNumberPrefix"
        FROM organizations WHERE id = ${organizationId}`.pipe(Effect.map((rows) => rows[0])),

    /**
     * The same, locking the organization's row until the transaction ends: the
     * chunks of its billing runs take turns (other organizations' runs do not
     * wait). NO KEY UPDATE leaves inserts of its customers and contracts free.
     */
    lockOrganization: (organizationId: string) =>
      sql<OrganizationSettings>`
        SELECT id, name, payment_terms_days AS "paymentTermsDays", invoice_number_prefix AS "invoiceNumberPrefix"
        FROM organizations WHERE id = ${organizationId} FOR NO KEY UPDATE`.pipe(Effect.map((rows) => rows[0])),

    /** Creates the job's run; undefined when the job already has one (an earlier attempt made it). */
    insertRun: (run: {
      readonly id: string
      readonly organizationId: string
      readonly jobId: string
      readonly billingPeriod: string
      readonly invoiceDate: string
      readonly dueDate: string
      readonly customerFilter: ReadonlyArray<string> | null
      readonly createdBy: string | null
      readonly now: Date
    }) =>
      sql<RunRow>`
        INSERT INTO billing_runs (id, organization_id, job_id, billing_period, invoice_date, due_date, customer_filter,
                                  created_by, started_at, updated_at)
        VALUES (${run.id}, ${run.organizationId}, ${run.jobId}, ${run.billingPeriod}, ${run.invoiceDate}::date, ${run.dueDate}::date,
                ${run.customerFilter}::uuid[], ${run.createdBy}, ${run.now}, ${run.now})
        ON CONFLICT (job_id) DO NOTHING
        RETURNING ${runColumns}`.pipe(Effect.map(oneRun)),

    findRunByJob: (jobId: string) =>
      sql<RunRow>`SELECT ${runColumns} FROM billing_runs WHERE job_id = ${jobId}`.pipe(Effect.map(oneRun)),

    findRun: (runId: string) =>
      sql<RunRow>`SELECT ${runColumns} FROM billing_runs WHERE id = ${runId}`.pipe(Effect.map(oneRun)),

    /** Fixes the due date of a run started before billing 0020 (in its chunk's transaction, the run locked). */
    fixDueDate: (runId: string, dueDate: string) =>
      sql`UPDATE billing_runs SET due_date = ${dueDate}::date WHERE id = ${runId} AND due_date IS NULL`.pipe(Effect.asVoid),

    /** The run, locked until the transaction ends (a chunk and a rollback never overlap). */
    lockRun: (runId: string) =>
      sql<RunRow>`SELECT ${runColumns} FROM billing_runs WHERE id = ${runId} FOR UPDATE`.pipe(Effect.map(oneRun)),

    /**
     * The next customers after the cursor, in customer-number order, that have
     * a contract active in the period: the next chunk.
     */
    nextCandidates: (query: {
      readonly organizationId: string
      readonly billingPeriod: string
      readonly periodStart: string
      readonly periodEnd: string
      /** The run's due date, the direct debit's collection date (ISO). */
      readonly dueDate: string
      readonly cursor: string | null
      readonly customerFilter: ReadonlyArray<string> | null
      readonly limit: number
    }) =>
      sql<Candidate>`
        SELECT c.id AS "customerId", c.customer_number AS "customerNumber", c.iban,
               c.mandate_reference AS "mandateReference",
               -- Compared as dates here, not as text in the service: a year past 9999 sorts wrong as text.
               c.mandate_signed_on > ${query.dueDate}::date AS "mandateSignedAfterDueDate",
               EXISTS (SELECT 1 FROM invoices i
                       WHERE i.organization_id = c.organization_id AND i.customer_id = c.id
                         AND i.billing_period = ${query.billingPeriod} AND i.status <> 'cancelled') AS "alreadyInvoiced"
        FROM customers c
        WHERE c.organization_id = ${query.organizationId}
          AND (${query.cursor}::text IS NULL OR c.customer_number > ${query.cursor})
          AND (${query.customerFilter}::uuid[] IS NULL OR c.id = ANY (${query.customerFilter}::uuid[]))
          AND EXISTS (SELECT 1 FROM contracts k
                      WHERE k.organization_id = c.organization_id AND k.customer_id = c.id
                        AND k.starts_on <= ${query.periodEnd}::date
                        AND (k.ends_on IS NULL OR k.ends_on >= ${query.periodStart}::date))
        ORDER BY c.customer_number
        LIMIT ${query.limit}`,

    /** The contracts of these customers that are active in the period. */
    activeContracts: (organizationId: string, customerIds: ReadonlyArray<string>, periodStart: string, periodEnd: string) =>
      sql<ContractRow>`
        SELECT id AS "contractId", customer_id AS "customerId", description, monthly_net_cents AS "monthlyNetCents",
               vat_rate_bp AS "vatRateBp", to_char(starts_on, 'YYYY-MM-DD') AS "startsOn",
               -- An end past 9999 (a mistyped year, which the column takes) would not be YYYY-MM-DD:
               -- for any period it is the same as the last day of 9999. A start that late bills nothing.
               to_char(LEAST(ends_on, DATE '9999-12-31'), 'YYYY-MM-DD') AS "endsOn"
        FROM contracts
        WHERE organization_id = ${organizationId} AND customer_id = ANY (${customerIds}::uuid[])
          AND starts_on <= ${periodEnd}::date AND (ends_on IS NULL OR ends_on >= ${periodStart}::date)`,

    /**
     * Takes the next `count` invoice numbers of the organization's year and
     * returns the first. The counter row stays locked until the transaction
     * ends; a rollback returns the numbers, so the sequence has no gaps.
     */
    takeInvoiceNumbers: (organizationId: string, year: number, count: number) =>
      sql<{ first: number }>`
        INSERT INTO invoice_number_counters AS n (organization_id, year, last_number)
        VALUES (${organizationId}, ${year}, ${count})
        ON CONFLICT (organization_id, year) DO UPDATE SET last_number = n.last_number + excluded.last_number
        RETURNING n.last_number - ${count} + 1 AS first`.pipe(Effect.map((rows) => rows[0]!.first)),

    insertInvoices: (run: {
      readonly organizationId: string
      readonly runId: string
      readonly billingPeriod: string
      readonly year: number
      readonly invoiceDate: string
      readonly dueDate: string
      readonly now: Date
    }, invoices: ReadonlyArray<NewInvoiceRow>) =>
      sql`
        INSERT INTO invoices (id, organization_id, billing_run_id, customer_id, billing_period, invoice_number,
                              number_year, number_sequence, invoice_date, due_date, service_start, service_end,
                              net_cents, vat_cents, gross_cents, iban, mandate_reference, status, created_at)
        SELECT v.id, ${run.organizationId}, ${run.runId}, v.customer_id, ${run.billingPeriod}, v.invoice_number,
               ${run.year}, v.number_sequence, ${run.invoiceDate}::date, ${run.dueDate}::date,
               v.service_start, v.service_end,
               v.net_cents, v.vat_cents, v.gross_cents, v.iban, v.mandate_reference, 'open', ${run.now}
        FROM unnest(${invoices.map((i) => i.id)}::uuid[], ${invoices.map((i) => i.customerId)}::uuid[],
                    ${invoices.map((i) => i.invoiceNumber)}::text[], ${invoices.map((i) => i.numberSequence)}::int[],
                    ${invoices.map((i) => i.serviceStart)}::date[], ${invoices.map((i) => i.serviceEnd)}::date[],
                    ${invoices.map((i) => i.netCents)}::int[], ${invoices.map((i) => i.vatCents)}::int[],
                    ${invoices.map((i) => i.grossCents)}::int[], ${invoices.map((i) => i.iban)}::text[],
                    ${invoices.map((i) => i.mandateReference)}::text[])
             AS v(id, customer_id, invoice_number, number_sequence, service_start, service_end, net_cents, vat_cents, gross_cents,
                  iban, mandate_reference)`.pipe(
        Effect.asVoid
      ),

    insertInvoiceLines: (organizationId: string, lines: ReadonlyArray<NewInvoiceLineRow>) =>
      sql`
        INSERT INTO invoice_lines (organization_id, invoice_id, position, contract_id, description, service_start,
                                   service_end, days_billed, days_in_period, monthly_net_cents, net_cents,
                                   vat_rate_bp, vat_cents, gross_cents)
        SELECT ${organizationId}, v.invoice_id, v.position, v.contract_id, v.description, v.service_start,
               v.service_end, v.days_billed, v.days_in_period, v.monthly_net_cents, v.net_cents,
               v.vat_rate_bp, v.vat_cents, v.gross_cents
        FROM unnest(${lines.map((l) => l.invoiceId)}::uuid[], ${lines.map((l) => l.position)}::int[],
                    ${lines.map((l) => l.contractId)}::uuid[], ${lines.map((l) => l.description)}::text[],
                    ${lines.map((l) => l.serviceStart)}::date[], ${lines.map((l) => l.serviceEnd)}::date[],
                    ${lines.map((l) => l.daysBilled)}::int[], ${lines.map((l) => l.daysInPeriod)}::int[],
                    ${lines.map((l) => l.monthlyNetCents)}::int[], ${lines.map((l) => l.netCents)}::int[],
                    ${lines.map((l) => l.vatRateBp)}::int[], ${lines.map((l) => l.vatCents)}::int[],
                    ${lines.map((l) => l.grossCents)}::int[])
             AS v(invoice_id, position, contract_id, description, service_start, service_end, days_billed,
                  days_in_period, monthly_net_cents, net_cents, vat_rate_bp, vat_cents, gross_cents)`.pipe(Effect.asVoid),

    /** Adds a committed chunk to the run's progress, and moves its cursor. */
    recordChunk: (runId: string, chunk: ChunkProgress, now: Date) =>
      sql<RunRow>`
        UPDATE billing_runs
        SET cursor = ${chunk.cursor}, chunks_committed = chunks_committed + 1,
            customers_processed = customers_processed + ${chunk.customersProcessed},
            invoices_created = invoices_created + ${chunk.invoicesCreated},
            invoices_skipped = invoices_skipped + ${chunk.invoicesSkipped},
            customers_nothing_owed = customers_nothing_owed + ${chunk.customersNothingOwed},
            zero_lines_left_out = zero_lines_left_out + ${chunk.zeroLinesLeftOut},
            customers_mandate_not_yet_valid = customers_mandate_not_yet_valid + ${chunk.mandateNotYetValid.length},
            mandate_not_yet_valid_customer_numbers =
              (mandate_not_yet_valid_customer_numbers || ${chunk.mandateNotYetValid}::text[])[1:${MANDATE_NOT_YET_VALID_NUMBERS_KEPT}],
            net_total_cents = net_total_cents + ${chunk.netCents},
            vat_total_cents = vat_total_cents + ${chunk.vatCents},
            gross_total_cents = gross_total_cents + ${chunk.grossCents},
            updated_at = ${now}
        WHERE id = ${runId}
        RETURNING ${runColumns}`.pipe(Effect.map((rows) => toRun(rows[0]!))),

    completeRun: (runId: string, now: Date) =>
      sql<RunRow>`
        UPDATE billing_runs SET status = 'completed', finished_at = ${now}, updated_at = ${now}
        WHERE id = ${runId}
        RETURNING ${runColumns}`.pipe(Effect.map((rows) => toRun(rows[0]!))),

    /** The transaction's lock_timeout and statement_timeout as set, to put back after `limitWaits`. */
    waitLimits: sql<{ lockTimeout: string; statementTimeout: string }>`
      SELECT current_setting('lock_timeout') AS "lockTimeout", current_setting('statement_timeout') AS "statementTimeout"`.pipe(
      Effect.map((rows) => rows[0]!)
    ),

    /**
     * Lets each of the transaction's next statements run for at most `millis`, however many lock waits it
     * makes (statement_timeout): lock_timeout bounds each wait by itself, and locking several rows held by
     * different sessions, or a row locked again while waited for, waits more than once.
     */
    limitWaits: (millis: number) =>
      sql`SELECT set_config('lock_timeout', ${`${millis}ms`}, true), set_config('statement_timeout', ${`${millis}ms`}, true)`.pipe(
        Effect.asVoid
      ),

    // Both: a lock_timeout left at what was left of the deadline (1 ms, say) would fail the rest of the rollback,
    // or of a caller's transaction around it, on any lock wait, as if the run were locked.
    restoreWaitLimits: (limits: { readonly lockTimeout: string; readonly statementTimeout: string }) =>
      sql`SELECT set_config('lock_timeout', ${limits.lockTimeout}, true), set_config('statement_timeout', ${limits.statementTimeout}, true)`.pipe(
        Effect.asVoid
      ),

    /** Locks all of the run's invoices and counts those exported to SEPA or paid. */
    checkRollback: (runId: string) =>
      sql<{ invoices: number; exported: number; paid: number; examples: ReadonlyArray<string> | null }>`
        SELECT count(*)::int AS invoices,
               -- Each invoice counted once: one exported and already paid (paid_at booked, its status not moved on) is paid.
               count(*) FILTER (WHERE (status = 'exported' OR exported_at IS NOT NULL) AND status <> 'paid' AND paid_at IS NULL)::int AS exported,
               count(*) FILTER (WHERE status = 'paid' OR paid_at IS NOT NULL)::int AS paid,
               (array_agg(invoice_number ORDER BY number_year, number_sequence)
                  FILTER (WHERE status IN ('exported', 'paid') OR exported_at IS NOT NULL OR paid_at IS NOT NULL))[1:5] AS examples
        FROM (SELECT status, exported_at, paid_at, invoice_number, number_year, number_sequence
              FROM invoices WHERE billing_run_id = ${runId} FOR UPDATE) AS locked`.pipe(
        Effect.map((rows): RollbackCheck => ({ ...rows[0]!, examples: rows[0]!.examples ?? [] }))
      ),

    /** The other runs of this run's organization and period that still have invoices not cancelled. */
    otherRunsWithLiveInvoices: (runId: string) =>
      sql<{ runId: string; status: string; invoices: number }>`
        SELECT other.id AS "runId", other.status, count(*)::int AS invoices
        FROM billing_runs this
        JOIN billing_runs other ON other.organization_id = this.organization_id AND other.billing_period = this.billing_period AND other.id <> this.id
        JOIN invoices i ON i.billing_run_id = other.id AND i.status <> 'cancelled'
        WHERE this.id = ${runId}
        GROUP BY other.id, other.status, other.started_at
        ORDER BY other.started_at`,

    /**
     * Cancels the run's open invoices; their numbers stay used. Says whether their numbers are one range:
     * the chunks of the organization's runs take turns, so another run's numbers may lie between them.
     */
    cancelInvoices: (runId: string, reason: string, now: Date) =>
      sql<{
        count: number
        netCents: string | null
        vatCents: string | null
        grossCents: string | null
        firstNumber: string | null
        lastNumber: string | null
        numberRanges: number
        otherRunsNumbersInRange: number
      }>`
        WITH cancelled AS (
          UPDATE invoices SET status = 'cancelled', cancelled_at = ${now}, cancellation_reason = ${reason}
          WHERE billing_run_id = ${runId} AND status = 'open'
          RETURNING invoice_number, number_year, number_sequence, net_cents, vat_cents, gross_cents
        ),
        -- A number starts a range unless the one before it in its year was cancelled too.
        starts AS (
          SELECT number_sequence - 1 IS DISTINCT FROM lag(number_sequence) OVER (PARTITION BY number_year ORDER BY number_sequence)
                 AS starts_range
          FROM cancelled
        ),
        summary AS (
          SELECT count(*)::int AS count,
                 sum(net_cents)::text AS "netCents", sum(vat_cents)::text AS "vatCents", sum(gross_cents)::text AS "grossCents",
                 (array_agg(invoice_number ORDER BY number_year, number_sequence))[1] AS "firstNumber",
                 (array_agg(invoice_number ORDER BY number_year DESC, number_sequence DESC))[1] AS "lastNumber",
                 min(array[number_year, number_sequence]) AS first_key, max(array[number_year, number_sequence]) AS last_key
          FROM cancelled
        )
        SELECT s.count, s."netCents", s."vatCents", s."grossCents", s."firstNumber", s."lastNumber",
               (SELECT count(*) FILTER (WHERE starts_range)::int FROM starts) AS "numberRanges",
               (SELECT count(*)::int FROM invoices o
                WHERE o.organization_id = (SELECT organization_id FROM billing_runs WHERE id = ${runId})
                  AND o.billing_run_id <> ${runId}
                  -- As a row comparison, not arrays: the organization's number index can serve it.
                  AND (o.number_year, o.number_sequence) BETWEEN (s.first_key[1], s.first_key[2]) AND (s.last_key[1], s.last_key[2]))
                 AS "otherRunsNumbersInRange"
        FROM summary s`.pipe(
        Effect.map(([row]): CancelledInvoices => ({
          count: row!.count,
          netCents: safeNumber(row!.netCents ?? "0"),
          vatCents: safeNumber(row!.vatCents ?? "0"),
          grossCents: safeNumber(row!.grossCents ?? "0"),
          firstNumber: row!.firstNumber,
          lastNumber: row!.lastNumber,
          numberRanges: row!.numberRanges,
          otherRunsNumbersInRange: row!.otherRunsNumbersInRange
        }))
      ),

    markRolledBack: (runId: string, actor: string, reason: string, now: Date) =>
      sql`
        UPDATE billing_runs
        SET status = 'rolled_back', rolled_back_at = ${now}, rolled_back_by = ${actor}, rollback_reason = ${reason},
            updated_at = ${now}
        WHERE id = ${runId}`.pipe(Effect.asVoid)
  }
})

export type BillingRepo = Effect.Effect.Success<typeof make>
