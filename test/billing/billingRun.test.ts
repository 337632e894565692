// The billing_run job against a real database, tested with skiplock/testing as
// a user's handler tests would be: the invoices it creates, its idempotency,
// its recovery after a crash, gapless invoice numbers with several
// organizations billed at once, and customers left out until their SEPA
// mandate covers the due date. Jobs are enqueued through the kit's JobQueue
// and run by `SkiplockTest.drain`; the tests that need jobs running at the same
// time (or a worker shut down mid-run) start a Worker on the kit's database.
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Cause, Clock, Deferred, Effect, HashMap, Logger } from "effect"
import { Audit, JobQueue } from "skiplock"
import { SkiplockTest, TEST_WORKER_ID } from "skiplock/testing"
import { makeIban } from "../../src/billing/iban.js"
import { billingMigrations, billingRun, makeBillingRunHandler, runBilling, seedDemo } from "../../src/billing/index.js"
import {
  asExpected,
  auditOfJob,
  billingKit,
  expectedInvoices,
  firstAttemptOf,
  invoicesOf,
  jobOf,
  outcomesByJob,
  runAndInterruptAfterFirstChunk,
  runJobsConcurrently,
  runOfJob
} from "./support.js"

const ORG_MAIN = "a0000000-0000-4000-8000-000000000001"
const ORG_TWICE = "a0000000-0000-4000-8000-000000000002"
const ORG_CRASHED = "a0000000-0000-4000-8000-000000000003"
const ORG_UNINTERRUPTED = "a0000000-0000-4000-8000-000000000004"
const ORG_EAST = "a0000000-0000-4000-8000-000000000005"
const ORG_WEST = "a0000000-0000-4000-8000-000000000006"
const ORG_SAME = "a0000000-0000-4000-8000-000000000007"
const ORG_FILTERED = "a0000000-0000-4000-8000-000000000008"
const ORG_TOO_LARGE = "a0000000-0000-4000-8000-000000000009"
const ORG_CENTS = "a0000000-0000-4000-8000-00000000000a"
const ORG_STRICT = "a0000000-0000-4000-8000-00000000000b"
const ORG_MANDATES = "a0000000-0000-4000-8000-00000000000c"
const ORG_MANDATE_LATER = "a0000000-0000-4000-8000-00000000000d"
const ORG_FAR_END = "a0000000-0000-4000-8000-00000000000e"
const ORG_MANDATE_RACE = "a0000000-0000-4000-8000-00000000000f"
const ORG_UNKNOWN = "a0000000-0000-4000-8000-0000000000ff"

const MARCH = { billingPeriod: "2025-03", invoiceDate: "2025-04-01" }

const seed = (organizationId: string, customers: number, period: string) =>
  seedDemo({ organizationId, customers, period, print: false, name: `Test ${organizationId.slice(-2)}` })

/** Enqueues a billing run through the layer's JobQueue, as the application does; returns the job id. */
const enqueue = (organizationId: string, payload: typeof billingRun.payload.Type) =>
  Effect.map(JobQueue.enqueueJob(billingRun, payload, { organizationId }), (job) => job.id)

const numberSequences = (organizationId: string) =>
  Effect.map(invoicesOf(organizationId), (invoices) => invoices.map((invoice) => invoice.numberSequence))

const range = (n: number) => Array.from({ length: n }, (_, i) => i + 1)

/**
 * An organization with 14 days' payment terms and customers K-1, K-2, … whose mandates are signed on the
 * dates given, in that order, each with a contract of 10,00 € a month since January 2025 (11,90 € with VAT).
 */
const customersSignedOn = (organizationId: string, signedOn: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    yield* sql`INSERT INTO organizations (id, name, payment_terms_days) VALUES (${organizationId}, 'Mandat GmbH', 14)`
    const ibans = signedOn.map((_, i) => makeIban("DE", `370400440532013${String(i + 1).padStart(3, "0")}`))
    const customers = yield* sql<{ id: string; number: string }>`
      INSERT INTO customers (organization_id, customer_number, name, iban, mandate_reference, mandate_signed_on)
      SELECT ${organizationId}, 'K-' || n, 'Kunde ' || n, (${ibans}::text[])[n], 'M-' || n, (${signedOn}::date[])[n]
      FROM generate_series(1, ${signedOn.length}) AS n
      RETURNING id, customer_number AS number`
    yield* sql`
      INSERT INTO contracts (organization_id, customer_id, description, monthly_net_cents, vat_rate_bp, starts_on)
      SELECT organization_id, id, 'Strom', 1000, 1900, '2025-01-01' FROM customers WHERE organization_id = ${organizationId}`
    return customers
  })

/** Runs `effect`, keeping the warnings it logs with their annotations. */
const keepingWarnings = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const warnings: Array<{ message: string; annotations: Record<string, unknown> }> = []
    const keep = Logger.make(({ annotations, logLevel, message }) => {
      if (logLevel._tag !== "Warning") return
      warnings.push({ message: String(Array.isArray(message) ? message[0] : message), annotations: Object.fromEntries(HashMap.toEntries(annotations)) })
    })
    const result = yield* effect.pipe(Effect.provide(Logger.add(keep)))
    return { result, warnings }
  })

/** Drains the kit, keeping the warnings logged meanwhile with their annotations. */
const drainKeepingWarnings = keepingWarnings(SkiplockTest.drain())

// What must match between two runs over the same data: everything but ids.
const comparable = (organizationId: string) =>
  Effect.map(invoicesOf(organizationId), (invoices) =>
    invoices.map(({ lines, runJobId: _, ...invoice }) => ({ ...invoice, lines: lines.map(({ contractId: _, ...line }) => line) }))
  )

describe("billing_run", () => {
  it.layer(billingKit, { timeout: 120_000 })((it) => {
    it.effect("bills a seeded organization exactly as an independent calculation does", () =>
      Effect.gen(function* () {
        yield* SkiplockTest.reset
        const seeded = yield* seed(ORG_MAIN, 300, "2025-03")
        const jobId = yield* enqueue(ORG_MAIN, MARCH)
        yield* SkiplockTest.assertEnqueued({ jobType: billingRun, organizationId: ORG_MAIN, payload: MARCH, status: "pending", count: 1 })

        const result = yield* SkiplockTest.drain()
        expect(outcomesByJob(result), result.summary).toEqual({ [jobId]: ["Completed"] })

        const expected = yield* expectedInvoices(ORG_MAIN, "2025-03")
        // The fixture covers the cases that matter, or the comparison below proves little.
        const lines = expected.flatMap((invoice) => invoice.lines)
        expect(expected.length).toBeGreaterThan(200)
        expect(expected.length).toBeLessThan(seeded.customers)
        expect(lines.filter((line) => line.days < 31).length).toBeGreaterThan(20)
        expect(lines.filter((line) => line.vatRateBp === 700).length).toBeGreaterThan(20)
        expect(lines.filter((line) => line.vatRateBp === 1900).length).toBeGreaterThan(200)

        const invoices = yield* invoicesOf(ORG_MAIN)
        expect(asExpected(invoices)).toEqual(expected)
        // Numbered in customer order, gapless from 1, dated and due by the organization's terms (14 days).
        expect(invoices.map((invoice) => invoice.numberSequence)).toEqual(range(expected.length))
        expect(invoices[0]!.invoiceNumber).toBe("SWM-2025-00001")
        expect(invoices.at(-1)!.invoiceNumber).toBe(`SWM-2025-${String(expected.length).padStart(5, "0")}`)
        for (const invoice of invoices) {
          expect(invoice).toMatchObject({
            status: "open",
            numberYear: 2025,
            invoiceDate: "2025-04-01",
            dueDate: "2025-04-15"
          })
        }
        // The service period is each invoice's own (compared above): customers who joined or left mid-month are among them.
        expect(invoices.filter((invoice) => invoice.serviceStart !== "2025-03-01" || invoice.serviceEnd !== "2025-03-31").length).toBeGreaterThan(5)

        const sum = (pick: (invoice: (typeof expected)[number]) => number) => expected.reduce((total, invoice) => total + pick(invoice), 0)
        const run = yield* runOfJob(jobId)
        expect(run).toMatchObject({
          status: "completed",
          customersProcessed: expected.length,
          invoicesCreated: expected.length,
          invoicesSkipped: 0,
          netTotalCents: sum((invoice) => invoice.netCents),
          vatTotalCents: sum((invoice) => invoice.vatCents),
          grossTotalCents: sum((invoice) => invoice.grossCents)
        })

        const trail = yield* auditOfJob(jobId)
        expect(trail.map((entry) => entry.event)).toEqual(["job_started", "billing_run_started", "billing_run_completed", "job_completed"])
        expect(trail[1]!.details).toMatchObject({ runId: run!.id, billingPeriod: "2025-03", invoiceDate: "2025-04-01" })
        expect(trail[2]!.details).toMatchObject({
          runId: run!.id,
          invoicesCreated: expected.length,
          netTotalCents: run!.netTotalCents,
          vatTotalCents: run!.vatTotalCents,
          grossTotalCents: run!.grossTotalCents
        })
        expect(trail[2]!.organizationId).toBe(ORG_MAIN)
        // The run's own entries name the worker that ran the job: the kit's.
        expect(trail.slice(1, 3).map((entry) => entry.actor)).toEqual([TEST_WORKER_ID, TEST_WORKER_ID])
      }))

    it.effect("billing the same period twice, one run after the other, creates no second invoice", () =>
      Effect.gen(function* () {
        yield* SkiplockTest.reset
        yield* seed(ORG_TWICE, 80, "2025-03")
        const first = yield* enqueue(ORG_TWICE, MARCH)
        const firstDrain = yield* SkiplockTest.drain()
        expect(outcomesByJob(firstDrain), firstDrain.summary).toEqual({ [first]: ["Completed"] })
        const before = yield* invoicesOf(ORG_TWICE)
        expect(before.length).toBeGreaterThan(50)

        const second = yield* enqueue(ORG_TWICE, MARCH)
        const secondDrain = yield* SkiplockTest.drain()
        expect(outcomesByJob(secondDrain), secondDrain.summary).toEqual({ [second]: ["Completed"] })
        expect(yield* invoicesOf(ORG_TWICE)).toEqual(before)
        expect(yield* runOfJob(second)).toMatchObject({
          status: "completed",
          customersProcessed: before.length,
          invoicesCreated: 0,
          invoicesSkipped: before.length,
          netTotalCents: 0,
          grossTotalCents: 0
        })
        // Both runs were real jobs of the organization, for the same period.
        yield* SkiplockTest.assertEnqueued({ jobType: billingRun, organizationId: ORG_TWICE, payload: MARCH, status: "completed", count: 2 })
      }))

    it.effect("billing the same period twice at the same time bills each customer once", () =>
      Effect.gen(function* () {
        yield* SkiplockTest.reset
        // Two runs of one organization at once (a Worker with two slots), in small chunks: they take
        // turns, and together bill each customer once. Each run waits after its first chunk until the
        // other has committed one too, so they truly overlap.
        yield* seed(ORG_SAME, 120, "2025-03")
        const a = yield* enqueue(ORG_SAME, MARCH)
        const b = yield* enqueue(ORG_SAME, MARCH)
        const committed: Record<string, Deferred.Deferred<void>> = { [a]: yield* Deferred.make<void>(), [b]: yield* Deferred.make<void>() }
        const small = makeBillingRunHandler({
          chunkSize: 7,
          afterChunk: ({ chunk, run }) => {
            if (chunk !== 1) return Effect.void
            const other = run.jobId === a ? b : a
            return Effect.zipRight(Deferred.succeed(committed[run.jobId]!, undefined), Deferred.await(committed[other]!))
          }
        })
        const outcomes = yield* runJobsConcurrently(small, [a, b], { concurrency: 2 })
        expect(outcomes.map((o) => o._tag)).toEqual(["Completed", "Completed"])
        const expected = yield* expectedInvoices(ORG_SAME, "2025-03")
        const invoices = yield* invoicesOf(ORG_SAME)
        expect(invoices.map((invoice) => invoice.customerNumber).sort()).toEqual(expected.map((invoice) => invoice.customerNumber))
        expect(invoices.map((invoice) => invoice.numberSequence)).toEqual(range(expected.length))
        const [runA, runB] = [(yield* runOfJob(a))!, (yield* runOfJob(b))!]
        expect(runA.invoicesCreated + runB.invoicesCreated).toBe(expected.length)
        expect(runA.invoicesCreated + runA.invoicesSkipped).toBe(expected.length)
        expect(runB.invoicesCreated + runB.invoicesSkipped).toBe(expected.length)
      }))

    it.effect("two organizations billed at the same time each get gapless numbers", () =>
      Effect.gen(function* () {
        yield* SkiplockTest.reset
        yield* seed(ORG_EAST, 150, "2024-02")
        yield* seed(ORG_WEST, 120, "2024-02")
        // Each run waits after its first chunk until the other has committed one too: they truly overlap,
        // which needs two jobs running at once: a Worker with two slots.
        const committed: Record<string, Deferred.Deferred<void>> = {
          [ORG_EAST]: yield* Deferred.make<void>(),
          [ORG_WEST]: yield* Deferred.make<void>()
        }
        const handler = makeBillingRunHandler({
          chunkSize: 20,
          afterChunk: ({ chunk, run }) => {
            if (chunk !== 1) return Effect.void
            const other = run.organizationId === ORG_EAST ? ORG_WEST : ORG_EAST
            return Effect.zipRight(Deferred.succeed(committed[run.organizationId]!, undefined), Deferred.await(committed[other]!))
          }
        })
        const payload = { billingPeriod: "2024-02", invoiceDate: "2024-03-01" }
        const jobs = [yield* enqueue(ORG_EAST, payload), yield* enqueue(ORG_WEST, payload)]
        const outcomes = yield* runJobsConcurrently(handler, jobs, { concurrency: 2 })
        expect(outcomes.map((o) => o._tag)).toEqual(["Completed", "Completed"])

        for (const org of [ORG_EAST, ORG_WEST]) {
          const expected = yield* expectedInvoices(org, "2024-02")
          const invoices = yield* invoicesOf(org)
          expect(asExpected(invoices)).toEqual(expected)
          expect(yield* numberSequences(org)).toEqual(range(expected.length))
          expect(new Set(invoices.map((invoice) => invoice.invoiceNumber)).size).toBe(expected.length)
          const sql = yield* SqlClient.SqlClient
          const [counter] = yield* sql<{ lastNumber: number }>`
            SELECT last_number AS "lastNumber" FROM invoice_number_counters WHERE organization_id = ${org} AND year = 2024`
          expect(counter!.lastNumber).toBe(expected.length)
        }
      }))

    it.effect("bills only the customers the payload names", () =>
      Effect.gen(function* () {
        yield* SkiplockTest.reset
        const org = ORG_FILTERED
        yield* seed(org, 40, "2025-03")
        const expected = yield* expectedInvoices(org, "2025-03")
        const sql = yield* SqlClient.SqlClient
        const chosen = expected.slice(3, 6).map((invoice) => invoice.customerNumber)
        const ids = yield* sql<{ id: string }>`
          SELECT id FROM customers WHERE organization_id = ${org} AND customer_number = ANY (${chosen}::text[])`
        const customerIds: readonly [string, ...Array<string>] = [ids[0]!.id, ...ids.slice(1).map((row) => row.id)]
        const jobId = yield* enqueue(org, { ...MARCH, customerIds })
        yield* SkiplockTest.assertEnqueued({ jobType: billingRun, organizationId: org, payload: { customerIds }, count: 1 })
        const result = yield* SkiplockTest.drain()
        expect(outcomesByJob(result), result.summary).toEqual({ [jobId]: ["Completed"] })
        const invoices = yield* invoicesOf(org)
        expect(asExpected(invoices)).toEqual(expected.slice(3, 6))
        expect(invoices.map((invoice) => invoice.numberSequence)).toEqual([1, 2, 3])
        expect(yield* runOfJob(jobId)).toMatchObject({ status: "completed", invoicesCreated: 3, customersProcessed: 3 })
      }))

    it.effect("a payload key the billing run does not know is refused at enqueue, and fails a job inserted by SQL, billing no one", () =>
      Effect.gen(function* () {
        yield* SkiplockTest.reset
        const org = ORG_STRICT
        yield* seed(org, 3, "2025-03")
        const sql = yield* SqlClient.SqlClient
        const [customer] = yield* sql<{ id: string }>`SELECT id FROM customers WHERE organization_id = ${org} LIMIT 1`
        // customerId for customerIds: dropped, it would bill every customer of the organization.
        const typo = { billingPeriod: "2025-03", customerId: [customer!.id] }
        const refused = yield* Effect.flip(JobQueue.enqueue({ organizationId: org, jobType: "billing_run", payload: typo }))
        expect(refused.message).toMatch(/^invalid payload for job type "billing_run": .*\["customerId"\][\s\S]*is unexpected/)
        const [inserted] = yield* sql<{ id: string }>`
          INSERT INTO job_queue (organization_id, job_type, payload, run_at)
          VALUES (${org}, 'billing_run', ${JSON.stringify(typo)}::jsonb, ${new Date(yield* Clock.currentTimeMillis)}) RETURNING id`
        const result = yield* SkiplockTest.drain()
        expect(outcomesByJob(result), result.summary).toEqual({ [inserted!.id]: ["Failed"] })
        expect(yield* invoicesOf(org)).toEqual([])
      }))

    it.effect("an invoice larger than an invoice holds fails the run at once, naming the customer; fixed, the retried job bills everyone", () =>
      Effect.gen(function* () {
        yield* SkiplockTest.reset
        const org = ORG_TOO_LARGE
        yield* seed(org, 5, "2025-03")
        const sql = yield* SqlClient.SqlClient
        // A monthly amount entered in cents where euros were meant: within what a contract allows, but 19 % VAT
        // on 20.000.000,00 € makes an invoice of 23.800.000,00 €, more than an invoice's integer cents hold.
        const [wrong] = yield* sql<{ id: string; monthlyNetCents: number; customerNumber: string }>`
          UPDATE contracts c SET monthly_net_cents = 2000000000, vat_rate_bp = 1900, starts_on = '2024-01-01', ends_on = NULL
          FROM customers cu
          WHERE c.id = (SELECT c2.id FROM contracts c2 JOIN customers cu2 ON cu2.id = c2.customer_id
                        WHERE c2.organization_id = ${org} ORDER BY cu2.customer_number DESC, c2.id LIMIT 1)
            AND cu.id = c.customer_id
          RETURNING c.id, cu.customer_number AS "customerNumber"`
        const jobId = yield* enqueue(org, MARCH)
        const result = yield* SkiplockTest.drain({ maxAdvance: "1 hour" })
        expect(outcomesByJob(result), result.summary).toEqual({ [jobId]: ["Failed"] })
        expect((yield* jobOf(jobId)).error).toBe(
          `InvoiceTooLarge: the invoice of customer ${wrong!.customerNumber} for 2025-03 comes to 23.800.000,00 €, more than an invoice holds ` +
            "(21.474.836,47 €): check the monthly amounts of its contracts, then retry the job"
        )
        expect(yield* invoicesOf(org)).toEqual([])
        // The contract corrected and the job retried, the run bills every customer once.
        yield* sql`UPDATE contracts SET monthly_net_cents = 2000000 WHERE id = ${wrong!.id}`
        const expected = yield* expectedInvoices(org, "2025-03")
        yield* sql`SELECT * FROM requeue_failed_job(${jobId}, 'cli:test', NULL, ${new Date(yield* Clock.currentTimeMillis)})`
        const retried = yield* SkiplockTest.drain()
        expect(outcomesByJob(retried), retried.summary).toEqual({ [jobId]: ["Completed"] })
        expect(asExpected(yield* invoicesOf(org))).toEqual(expected)
      }))

    it.effect("a month that comes to 0,00 € is not invoiced: no number used, counted on the run; the next month is", () =>
      Effect.gen(function* () {
        yield* SkiplockTest.reset
        const sql = yield* SqlClient.SqlClient
        const org = ORG_CENTS
        yield* sql`INSERT INTO organizations (id, name) VALUES (${org}, 'Cent GmbH')`
        const customers = yield* sql<{ id: string; number: string }>`
          INSERT INTO customers (organization_id, customer_number, name, iban, mandate_reference, mandate_signed_on)
          SELECT ${org}, 'K-' || n, 'Kunde ' || n, (${[1, 2, 3].map((n) => makeIban("DE", `37040044053201300${n}`))}::text[])[n], 'M-' || n, '2025-01-01'
          FROM generate_series(1, 3) AS n
          RETURNING id, customer_number AS number`
        const id = (number: string) => customers.find((customer) => customer.number === number)!.id
        // 15 cents a month from March's last day: 15 × 1/31 = 0.48 cents, 0,00 € for March. K-3 has it beside a real one.
        yield* sql`
          INSERT INTO contracts (organization_id, customer_id, description, monthly_net_cents, vat_rate_bp, starts_on)
          VALUES (${org}, ${id("K-1")}, 'Zählermiete', 15, 1900, '2025-03-31'),
                 (${org}, ${id("K-2")}, 'Strom', 1000, 1900, '2025-01-01'),
                 (${org}, ${id("K-3")}, 'Strom', 1000, 1900, '2025-01-01'),
                 (${org}, ${id("K-3")}, 'Zählermiete', 15, 1900, '2025-03-31')`

        const march = yield* enqueue(org, MARCH)
        const drained = yield* SkiplockTest.drain()
        expect(outcomesByJob(drained), drained.summary).toEqual({ [march]: ["Completed"] })
        const invoices = yield* invoicesOf(org)
        expect(invoices.map(({ customerNumber, invoiceNumber, grossCents, lines }) => ({
          customerNumber, invoiceNumber, grossCents, lines: lines.map(({ position, description, grossCents }) => ({ position, description, grossCents }))
        }))).toEqual([
          { customerNumber: "K-2", invoiceNumber: "RE-2025-00001", grossCents: 1190, lines: [{ position: 1, description: "Strom", grossCents: 1190 }] },
          { customerNumber: "K-3", invoiceNumber: "RE-2025-00002", grossCents: 1190, lines: [{ position: 1, description: "Strom", grossCents: 1190 }] }
        ])
        expect(asExpected(invoices)).toEqual(yield* expectedInvoices(org, "2025-03"))
        const run = yield* runOfJob(march)
        expect(run).toMatchObject({
          customersProcessed: 3, invoicesCreated: 2, invoicesSkipped: 0, customersNothingOwed: 1, zeroLinesLeftOut: 2, grossTotalCents: 2380
        })
        expect((yield* auditOfJob(march)).find((entry) => entry.event === "billing_run_completed")!.details)
          .toMatchObject({ invoicesCreated: 2, customersNothingOwed: 1, zeroLinesLeftOut: 2 })

        // April, a whole month: 15 cents + 3 cents VAT are owed, and the numbers go on without a gap.
        const april = yield* enqueue(org, { billingPeriod: "2025-04", invoiceDate: "2025-05-01" })
        expect(outcomesByJob(yield* SkiplockTest.drain())).toEqual({ [april]: ["Completed"] })
        const all = yield* invoicesOf(org)
        expect(all.map(({ customerNumber, invoiceNumber, grossCents }) => [customerNumber, invoiceNumber, grossCents])).toEqual([
          ["K-2", "RE-2025-00001", 1190], ["K-3", "RE-2025-00002", 1190],
          ["K-1", "RE-2025-00003", 18], ["K-2", "RE-2025-00004", 1190], ["K-3", "RE-2025-00005", 1208]
        ])
        expect(yield* runOfJob(april)).toMatchObject({ invoicesCreated: 3, customersNothingOwed: 0, zeroLinesLeftOut: 0 })

        // Nor can a row written by hand issue 0,00 €.
        const refusal = (statement: Effect.Effect<unknown, unknown>) =>
          statement.pipe(Effect.flip, Effect.map((error) => String((error as { cause?: { message?: string } }).cause?.message)))
        expect(yield* refusal(sql`
          INSERT INTO invoices (organization_id, billing_run_id, customer_id, billing_period, invoice_number, number_year,
                                number_sequence, invoice_date, due_date, service_start, service_end, net_cents, vat_cents,
                                gross_cents, iban, mandate_reference, created_at)
          SELECT organization_id, billing_run_id, customer_id, '2025-02', 'RE-2025-00006', number_year, 6, invoice_date, due_date,
                 service_start, service_end, 0, 0, 0, iban, mandate_reference, created_at
          FROM invoices WHERE organization_id = ${org} AND invoice_number = 'RE-2025-00001'`)).toBe("an invoice of 0,00 € is not issued: nothing is owed")
        expect(yield* refusal(sql`
          INSERT INTO invoice_lines (organization_id, invoice_id, position, contract_id, description, service_start, service_end,
                                     days_billed, days_in_period, monthly_net_cents, net_cents, vat_rate_bp, vat_cents, gross_cents)
          SELECT organization_id, invoice_id, 2, contract_id, description, service_start, service_end, 1, days_in_period,
                 monthly_net_cents, 0, vat_rate_bp, 0, 0
          FROM invoice_lines WHERE invoice_id = (SELECT id FROM invoices WHERE organization_id = ${org} AND invoice_number = 'RE-2025-00001')`))
          .toBe("an invoice line of 0,00 € is not issued: nothing is owed")

        // Nor an invoice without lines, nor one whose number the counter has not given out (billing 0015): a gap
        // in the sequence, or the counter's next number taken so that every later run fails on it.
        const copyOfFirst = (number: number) => sql`
          INSERT INTO invoices (organization_id, billing_run_id, customer_id, billing_period, invoice_number, number_year,
                                number_sequence, invoice_date, due_date, service_start, service_end, net_cents, vat_cents,
                                gross_cents, iban, mandate_reference, created_at)
          SELECT organization_id, billing_run_id, customer_id, ${`2024-${String(number % 12 + 1).padStart(2, "0")}`}, ${`RE-2025-${String(number).padStart(5, "0")}`}, number_year,
                 ${number}, invoice_date, due_date, service_start, service_end, net_cents, vat_cents, gross_cents, iban, mandate_reference, created_at
          FROM invoices WHERE organization_id = ${org} AND invoice_number = 'RE-2025-00001'
          RETURNING id`
        expect(yield* refusal(copyOfFirst(6))).toBe("invoice RE-2025-00006 has no lines: an invoice is issued with its lines, by a billing run")
        const withLines = (number: number) =>
          sql.withTransaction(Effect.flatMap(copyOfFirst(number), ([invoice]) => sql`
            INSERT INTO invoice_lines (organization_id, invoice_id, position, contract_id, description, service_start, service_end,
                                       days_billed, days_in_period, monthly_net_cents, net_cents, vat_rate_bp, vat_cents, gross_cents)
            SELECT organization_id, ${invoice!.id}, position, contract_id, description, service_start, service_end, days_billed, days_in_period,
                   monthly_net_cents, net_cents, vat_rate_bp, vat_cents, gross_cents
            FROM invoice_lines WHERE invoice_id = (SELECT id FROM invoices WHERE organization_id = ${org} AND invoice_number = 'RE-2025-00001')`))
        // Refused at COMMIT, which @effect/sql reports as a defect.
        const refusedAtCommit = (statement: Effect.Effect<unknown, unknown>) =>
          statement.pipe(Effect.sandbox, Effect.flip, Effect.map((cause) => String((Cause.squash(cause) as { cause?: { message?: string } }).cause?.message)))
        expect(yield* refusedAtCommit(withLines(6))).toBe(
          "invoice RE-2025-00006 takes number 6 of 2025, which the counter has not given out (last given out: 5): numbers come from invoice_number_counters, without gaps"
        )
        expect(yield* refusedAtCommit(withLines(9999))).toContain("takes number 9999 of 2025")
      }))

    it.effect("a customer whose mandate is signed after the due date is left out: no invoice, no number, counted and named", () =>
      Effect.gen(function* () {
        yield* SkiplockTest.reset
        const org = ORG_MANDATES
        // Invoiced on 2025-04-01 with 14 days' terms: the direct debit is collected on 2025-04-15. The
        // last is a year mistyped past 9999, which sorts before 2025 as text.
        yield* customersSignedOn(org, ["2025-03-01", "2025-04-16", "2025-04-15", "2025-09-30", "2025-04-14", "10000-04-14"])
        const jobId = yield* enqueue(org, MARCH)
        const { result, warnings } = yield* drainKeepingWarnings
        expect(outcomesByJob(result), result.summary).toEqual({ [jobId]: ["Completed"] })

        // Signed before or on the due date: invoiced, numbered without a gap where the others were left out.
        const invoices = yield* invoicesOf(org)
        expect(invoices.map(({ customerNumber, invoiceNumber, dueDate }) => [customerNumber, invoiceNumber, dueDate])).toEqual([
          ["K-1", "RE-2025-00001", "2025-04-15"], ["K-3", "RE-2025-00002", "2025-04-15"], ["K-5", "RE-2025-00003", "2025-04-15"]
        ])
        const sql = yield* SqlClient.SqlClient
        const [counter] = yield* sql<{ lastNumber: number }>`
          SELECT last_number AS "lastNumber" FROM invoice_number_counters WHERE organization_id = ${org} AND year = 2025`
        expect(counter!.lastNumber).toBe(3)

        const run = yield* runOfJob(jobId)
        expect(run).toMatchObject({
          status: "completed", customersProcessed: 6, invoicesCreated: 3, invoicesSkipped: 0, customersNothingOwed: 0,
          customersMandateNotYetValid: 3, mandateNotYetValidCustomerNumbers: ["K-2", "K-4", "K-6"], grossTotalCents: 3 * 1190
        })
        expect((yield* auditOfJob(jobId)).find((entry) => entry.event === "billing_run_completed")!.details)
          .toMatchObject({ invoicesCreated: 3, customersMandateNotYetValid: 3, mandateNotYetValidCustomerNumbers: ["K-2", "K-4", "K-6"] })
        const leftOut = warnings.filter((warning) => warning.message.includes("SEPA mandate"))
        expect(leftOut).toHaveLength(1)
        expect(leftOut[0]!.message).toBe(
          `billing run ${run!.id} for 2025-03 left out 3 customer(s) whose SEPA mandate is signed after the due date 2025-04-15, the day ` +
            "the direct debit is collected, so no mandate covers it: K-2, K-4, K-6; check the dates on their mandates: once a mandate is " +
            "valid, a run for 2025-03 with a later invoiceDate bills its customer"
        )
        expect(leftOut[0]!.annotations).toMatchObject({ runId: run!.id, customersMandateNotYetValid: 3, customerNumbers: "K-2,K-4,K-6" })

        // Nor does the database issue one, written by hand (or by a worker of the version before): here
        // in one statement with an invoice for K-1, whose mandate covers it; neither is issued.
        const refused = yield* sql`
          INSERT INTO invoices (organization_id, billing_run_id, customer_id, billing_period, invoice_number, number_year,
                                number_sequence, invoice_date, due_date, service_start, service_end, net_cents, vat_cents,
                                gross_cents, iban, mandate_reference, created_at)
          SELECT i.organization_id, i.billing_run_id, c.id, '2025-02', 'RE-2025-0000' || (3 + v.n), i.number_year, 3 + v.n,
                 i.invoice_date, i.due_date, i.service_start, i.service_end, i.net_cents, i.vat_cents, i.gross_cents, c.iban,
                 c.mandate_reference, i.created_at
          FROM invoices i
          CROSS JOIN (VALUES (1, 'K-1'), (2, 'K-2')) AS v(n, number)
          JOIN customers c ON c.organization_id = i.organization_id AND c.customer_number = v.number
          WHERE i.organization_id = ${org} AND i.invoice_number = 'RE-2025-00001'`.pipe(Effect.flip)
        expect(String((refused as { cause?: { message?: string } }).cause?.message)).toBe(
          "invoice RE-2025-00005 is due on 2025-04-15 (the day its direct debit is collected), before customer K-2's SEPA mandate " +
            "was signed (2025-04-16): no mandate covers it"
        )
        expect(yield* sql`SELECT 1 FROM invoices WHERE organization_id = ${org} AND billing_period = '2025-02'`).toHaveLength(0)
      }))

    it.effect("a run another attempt completes while this one is between chunks is warned about once, by the attempt that completed it", () =>
      Effect.gen(function* () {
        yield* SkiplockTest.reset
        const org = ORG_MANDATE_RACE
        yield* customersSignedOn(org, ["2025-03-01", "2025-04-16", "2025-03-01", "2025-03-01", "2025-03-01"])
        const jobId = yield* enqueue(org, MARCH)
        const job = firstAttemptOf(jobId, org)
        // Attempt 1 lost its lease after its first chunk: attempt 2 resumes the run and completes it
        // before attempt 1 looks at the run again (here: from attempt 1's hook after that chunk).
        const services = yield* Effect.context<SqlClient.SqlClient | Audit.Audit>()
        const secondAttempt = runBilling(MARCH, { ...job, attempt: 2 }, { chunkSize: 2 }).pipe(Effect.orDie, Effect.provide(services))
        const { result: run, warnings } = yield* keepingWarnings(
          runBilling(MARCH, job, { chunkSize: 2, afterChunk: ({ chunk }) => (chunk === 1 ? Effect.asVoid(secondAttempt) : Effect.void) })
        )
        expect(run).toMatchObject({ status: "completed", invoicesCreated: 4, customersMandateNotYetValid: 1 })
        expect(warnings.filter((warning) => warning.message.includes("SEPA mandate")).map((warning) => warning.annotations["customerNumbers"]))
          .toEqual(["K-2"])
      }))

    it.effect("a customer left out for its mandate is billed by a later run for the month once the due date reaches the signing date", () =>
      Effect.gen(function* () {
        yield* SkiplockTest.reset
        const org = ORG_MANDATE_LATER
        const customers = yield* customersSignedOn(org, ["2025-03-01", "2025-04-20"])
        const k2 = customers.find((customer) => customer.number === "K-2")!.id
        const march = yield* enqueue(org, MARCH)
        expect(outcomesByJob(yield* SkiplockTest.drain())).toEqual({ [march]: ["Completed"] })
        expect(yield* runOfJob(march)).toMatchObject({ invoicesCreated: 1, customersMandateNotYetValid: 1, mandateNotYetValidCustomerNumbers: ["K-2"] })

        // Dated 2025-04-05, due 2025-04-19: still a day before the mandate. Dated a day later, due on the day it was signed.
        const tooEarly = yield* enqueue(org, { billingPeriod: "2025-03", invoiceDate: "2025-04-05", customerIds: [k2] })
        const onTheDay = yield* enqueue(org, { billingPeriod: "2025-03", invoiceDate: "2025-04-06", customerIds: [k2] })
        expect(outcomesByJob(yield* SkiplockTest.drain())).toEqual({ [tooEarly]: ["Completed"], [onTheDay]: ["Completed"] })
        expect(yield* runOfJob(tooEarly)).toMatchObject({ invoicesCreated: 0, customersMandateNotYetValid: 1 })
        expect(yield* runOfJob(onTheDay)).toMatchObject({
          invoicesCreated: 1, customersMandateNotYetValid: 0, mandateNotYetValidCustomerNumbers: [], grossTotalCents: 1190
        })
        const invoices = yield* invoicesOf(org)
        expect(invoices.map(({ customerNumber, invoiceNumber, invoiceDate, dueDate, runJobId }) => [customerNumber, invoiceNumber, invoiceDate, dueDate, runJobId]))
          .toEqual([
            ["K-1", "RE-2025-00001", "2025-04-01", "2025-04-15", march],
            ["K-2", "RE-2025-00002", "2025-04-06", "2025-04-20", onTheDay]
          ])
      }))

    it.effect("a contract whose end date is past the year 9999 (a mistyped year) is billed as running on", () =>
      Effect.gen(function* () {
        yield* SkiplockTest.reset
        const org = ORG_FAR_END
        yield* customersSignedOn(org, ["2025-01-01"])
        const sql = yield* SqlClient.SqlClient
        yield* sql`UPDATE contracts SET ends_on = '10000-01-31' WHERE organization_id = ${org}`
        const jobId = yield* enqueue(org, MARCH)
        const result = yield* SkiplockTest.drain()
        expect(outcomesByJob(result), result.summary).toEqual({ [jobId]: ["Completed"] })
        expect(yield* runOfJob(jobId)).toMatchObject({ invoicesCreated: 1, grossTotalCents: 1190 })
      }))

    it.effect("an unknown organization or an invalid period fails the job at once, without retries", () =>
      Effect.gen(function* () {
        yield* SkiplockTest.reset
        const unknown = yield* enqueue(ORG_UNKNOWN, MARCH)
        const sql = yield* SqlClient.SqlClient
        // The runbook's raw SQL insert bypasses the enqueue-time Schema check. Its run_at is the Clock's
        // time (the database's now() would lie ahead of the TestClock).
        const [invalid] = yield* sql<{ id: string }>`
          INSERT INTO job_queue (organization_id, job_type, payload, run_at)
          VALUES (${ORG_MAIN}, 'billing_run', '{"billingPeriod": "2025-13"}'::jsonb, ${new Date(yield* Clock.currentTimeMillis)})
          RETURNING id`
        // Even with an hour to spare for retries, each job gets one attempt, which fails it for good.
        const result = yield* SkiplockTest.drain({ maxAdvance: "1 hour" })
        expect(outcomesByJob(result), result.summary).toEqual({ [unknown]: ["Failed"], [invalid!.id]: ["Failed"] })
        expect(result.waiting).toEqual([])
        expect(yield* jobOf(unknown)).toMatchObject({ status: "failed", attempts: 1 })
        expect((yield* jobOf(unknown)).error).toContain("unknown organization a0000000-0000-4000-8000-0000000000ff")
        expect(yield* jobOf(invalid!.id)).toMatchObject({ status: "failed", attempts: 1 })
        expect((yield* jobOf(invalid!.id)).error).toContain("2025-13")
        expect(yield* runOfJob(unknown)).toBeUndefined()

        // Enqueueing through the queue rejects the period before any job exists.
        const rejected = yield* Effect.flip(enqueue(ORG_MAIN, { billingPeriod: "2025-3" }))
        expect(rejected._tag).toBe("InvalidPayload")
        yield* SkiplockTest.assertNotEnqueued({ jobType: "billing_run", payload: { billingPeriod: "2025-3" } })
        expect(yield* SkiplockTest.enqueued({ jobType: "billing_run" })).toHaveLength(2)
      }))
  })

  // The crash test runs its job in chunks of 50, and `drain` runs the layer's handlers: this block's
  // layer registers the 50-customer handler, so that the drain resumes the crashed job with it.
  const chunked = (afterChunk?: Effect.Effect<void>) =>
    makeBillingRunHandler({ chunkSize: 50, ...(afterChunk ? { afterChunk: () => afterChunk } : {}) })

  it.layer(SkiplockTest.layer({ handlers: [chunked()], migrations: [billingMigrations] }), { timeout: 120_000 })((it) => {
    it.effect("a run interrupted after its first chunk resumes there and ends exactly like an uninterrupted run", () =>
      Effect.gen(function* () {
        yield* SkiplockTest.reset
        // Two organizations with the same generated data: one billed in one go, one interrupted.
        yield* seed(ORG_UNINTERRUPTED, 230, "2025-06")
        yield* seed(ORG_CRASHED, 230, "2025-06")
        const payload = { billingPeriod: "2025-06", invoiceDate: "2025-07-01" }
        // Every seventh customer's mandate signed after the due date (2025-07-15), in the first chunk and after it:
        // the resumed run counts each once, and keeps the same first numbers.
        const sql = yield* SqlClient.SqlClient
        const signedLate = yield* sql<{ number: string }>`
          UPDATE customers c SET mandate_signed_on = '2025-07-16'
          FROM (SELECT id, row_number() OVER (PARTITION BY organization_id ORDER BY customer_number) AS n FROM customers
                WHERE organization_id IN (${ORG_UNINTERRUPTED}, ${ORG_CRASHED})) AS numbered
          WHERE c.id = numbered.id AND numbered.n % 7 = 0
          RETURNING c.customer_number AS number`
        const owing = (yield* expectedInvoices(ORG_CRASHED, "2025-06")).map((invoice) => invoice.customerNumber)
        const leftOut = owing.filter((number) => signedLate.some((late) => late.number === number))
        expect(leftOut.length).toBeGreaterThan(20)

        const reference = yield* enqueue(ORG_UNINTERRUPTED, payload)
        const referenceDrain = yield* SkiplockTest.drain()
        expect(outcomesByJob(referenceDrain), referenceDrain.summary).toEqual({ [reference]: ["Completed"] })

        // The crash: a Worker on the kit's database runs the job and is shut down after its first chunk.
        const jobId = yield* enqueue(ORG_CRASHED, payload)
        yield* runAndInterruptAfterFirstChunk(chunked, jobId)
        // The job went back to the queue; its first chunk is committed and recorded, nothing after it.
        expect(yield* jobOf(jobId)).toMatchObject({ status: "pending", attempts: 0 })
        const halfway = (yield* runOfJob(jobId))!
        expect(halfway).toMatchObject({ status: "running", chunksCommitted: 1, customersProcessed: 50 })
        expect(halfway.cursor).not.toBeNull()
        expect(halfway.customersMandateNotYetValid).toBe(leftOut.filter((number) => number <= halfway.cursor!).length)
        expect(halfway.customersMandateNotYetValid).toBeGreaterThan(0)
        const afterFirstChunk = yield* invoicesOf(ORG_CRASHED)
        expect(afterFirstChunk.length).toBe(halfway.invoicesCreated)
        expect(afterFirstChunk.length).toBeGreaterThan(40)

        // The retry: the kit claims the released job and the run resumes after its cursor.
        const result = yield* SkiplockTest.drain()
        expect(outcomesByJob(result), result.summary).toEqual({ [jobId]: ["Completed"] })
        expect(result.attempts.map((attempt) => attempt.attempt)).toEqual([1])
        expect(yield* comparable(ORG_CRASHED)).toEqual(yield* comparable(ORG_UNINTERRUPTED))
        const { id: _a, ...resumed } = (yield* runOfJob(jobId))!
        const { id: _b, ...uninterrupted } = (yield* runOfJob(reference))!
        expect(resumed).toEqual(uninterrupted)
        expect(resumed).toMatchObject({ customersMandateNotYetValid: leftOut.length, mandateNotYetValidCustomerNumbers: leftOut.slice(0, 20) })
        // The invoices of the first chunk were kept, not made again.
        const final = yield* invoicesOf(ORG_CRASHED)
        expect(final.slice(0, afterFirstChunk.length)).toEqual(afterFirstChunk)
        expect(final.map((invoice) => invoice.customerNumber)).toEqual(owing.filter((number) => !leftOut.includes(number)))
        expect((yield* auditOfJob(jobId)).map((entry) => entry.event)).toEqual([
          "job_started", "billing_run_started", "job_released",
          "job_started", "billing_run_resumed", "billing_run_completed", "job_completed"
        ])
      }))
  })
})
