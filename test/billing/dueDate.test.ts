// A billing run fixes its due date (the direct debit's collection date) when it starts, with its invoice
// date (billing 0020): every invoice of the run has it, however the organization's payment terms change
// while the run works or between a crashed attempt and its retry. It read the terms again in every chunk,
// and gave invoices of one run and one date two due dates. Found by a review. A run started before 0020
// (no due date stored) fixes it at its next chunk, from the terms then, and keeps it.
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { SkiplockTest } from "skiplock/testing"
import { makeIban } from "../../src/billing/iban.js"
import { billingRun, runBilling } from "../../src/billing/index.js"
import { JobQueue } from "skiplock"
import { billingKit, firstAttemptOf, invoicesOf } from "./support.js"

const ORG = "e0000000-0000-4000-8000-0000000000d1"
const MARCH = { billingPeriod: "2025-03", invoiceDate: "2025-04-01" }

describe("billing_run due date", () => {
  it.layer(billingKit, { timeout: 120_000 })((it) => {
    it.effect("is the same for every invoice of one run, though the payment terms change between its chunks", () =>
      Effect.gen(function* () {
        yield* SkiplockTest.reset
        const sql = yield* SqlClient.SqlClient
        yield* sql`INSERT INTO organizations (id, name, payment_terms_days) VALUES (${ORG}, 'Termine GmbH', 14)`
        const ibans = [1, 2, 3, 4].map((n) => makeIban("DE", `370400440532013${String(n).padStart(3, "0")}`))
        yield* sql`
          INSERT INTO customers (organization_id, customer_number, name, iban, mandate_reference, mandate_signed_on)
          SELECT ${ORG}, 'K-' || n, 'Kunde ' || n, (${ibans}::text[])[n], 'M-' || n, DATE '2025-01-01'
          FROM generate_series(1, 4) AS n`
        yield* sql`
          INSERT INTO contracts (organization_id, customer_id, description, monthly_net_cents, vat_rate_bp, starts_on)
          SELECT organization_id, id, 'Strom', 1000, 1900, '2025-01-01' FROM customers WHERE organization_id = ${ORG}`
        const { id: jobId } = yield* JobQueue.enqueueJob(billingRun, MARCH, { organizationId: ORG })
        const job = firstAttemptOf(jobId, ORG)
        // The organization's terms are changed to 30 days after the run's first chunk committed (an operator
        // editing master data while the run works; equally, between a crashed attempt and its retry).
        const run = yield* runBilling(MARCH, job, {
          chunkSize: 2,
          afterChunk: ({ chunk }) =>
            chunk === 1 ? Effect.orDie(sql`UPDATE organizations SET payment_terms_days = 30 WHERE id = ${ORG}`) : Effect.void
        })
        expect(run).toMatchObject({ status: "completed", invoicesCreated: 4 })
        const invoices = yield* invoicesOf(ORG)
        // One run, one invoice date (2025-04-01), so one due date.
        expect(invoices.map((invoice) => [invoice.customerNumber, invoice.invoiceDate, invoice.dueDate])).toEqual([
          ["K-1", "2025-04-01", "2025-04-15"],
          ["K-2", "2025-04-01", "2025-04-15"],
          ["K-3", "2025-04-01", "2025-04-15"],
          ["K-4", "2025-04-01", "2025-04-15"]
        ])
        const [stored] = yield* sql<{ dueDate: string }>`SELECT to_char(due_date, 'YYYY-MM-DD') AS "dueDate" FROM billing_runs WHERE job_id = ${jobId}`
        expect(stored!.dueDate).toBe("2025-04-15")
      }))

    it.effect("of a run started before billing 0020 is fixed at its next chunk, from the terms then, and kept", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`UPDATE organizations SET payment_terms_days = 14 WHERE id = ${ORG}`
        const APRIL = { billingPeriod: "2025-04", invoiceDate: "2025-05-02" }
        const { id: jobId } = yield* JobQueue.enqueueJob(billingRun, APRIL, { organizationId: ORG })
        const job = firstAttemptOf(jobId, ORG)
        // After its first chunk the run looks like one started before 0020 (no due date), and the terms change.
        const run = yield* runBilling(APRIL, job, {
          chunkSize: 2,
          afterChunk: ({ chunk }) =>
            chunk === 1
              ? Effect.orDie(Effect.zipRight(
                  sql`UPDATE billing_runs SET due_date = NULL WHERE job_id = ${jobId}`,
                  sql`UPDATE organizations SET payment_terms_days = 30 WHERE id = ${ORG}`
                ))
              : Effect.void
        })
        expect(run).toMatchObject({ status: "completed", invoicesCreated: 4, dueDate: "2025-06-01" })
        const april = (yield* invoicesOf(ORG)).filter((invoice) => invoice.invoiceDate === "2025-05-02")
        expect(april.map((invoice) => [invoice.customerNumber, invoice.dueDate])).toEqual([
          ["K-1", "2025-05-16"],
          ["K-2", "2025-05-16"],
          ["K-3", "2025-06-01"],
          ["K-4", "2025-06-01"]
        ])
      }))
  })
})
