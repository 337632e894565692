// The billing_run job, run through a real worker against a real database:
// the invoices it creates, its idempotency, its recovery after a crash, and
// gapless invoice numbers with several organizations billed at once.
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Clock, Deferred, Effect } from "effect"
import { billingRunHandler, makeBillingRunHandler, seedDemo } from "../../src/billing/index.js"
import {
  asExpected,
  auditOfJob,
  BillingDatabase,
  enqueueBillingRun,
  expectedInvoices,
  invoicesOf,
  jobOf,
  runAndInterruptAfterFirstChunk,
  runJobs,
  runOfJob
} from "./support.js"

const ORG_MAIN = "a0000000-0000-4000-8000-000000000001"
const ORG_TWICE = "a0000000-0000-4000-8000-000000000002"
const ORG_CRASHED = "a0000000-0000-4000-8000-000000000003"
const ORG_UNINTERRUPTED = "a0000000-0000-4000-8000-000000000004"
const ORG_EAST = "a0000000-0000-4000-8000-000000000005"
const ORG_WEST = "a0000000-0000-4000-8000-000000000006"
const ORG_SAME = "a0000000-0000-4000-8000-000000000007"

const seed = (organizationId: string, customers: number, period: string) =>
  seedDemo({ organizationId, customers, period, print: false, name: `Test ${organizationId.slice(-2)}` })

const numberSequences = (organizationId: string) =>
  Effect.map(invoicesOf(organizationId), (invoices) => invoices.map((invoice) => invoice.numberSequence))

const range = (n: number) => Array.from({ length: n }, (_, i) => i + 1)

// What must match between two runs over the same data: everything but ids.
const comparable = (organizationId: string) =>
  Effect.map(invoicesOf(organizationId), (invoices) =>
    invoices.map(({ lines, runJobId: _, ...invoice }) => ({ ...invoice, lines: lines.map(({ contractId: _, ...line }) => line) }))
  )

describe("billing_run", () => {
  it.layer(BillingDatabase, { timeout: 120_000 })((it) => {
    it.effect("bills a seeded organization exactly as an independent calculation does", () =>
      Effect.gen(function* () {
        const seeded = yield* seed(ORG_MAIN, 300, "2025-03")
        const jobId = yield* enqueueBillingRun(ORG_MAIN, { billingPeriod: "2025-03", invoiceDate: "2025-04-01" })
        const [outcome] = yield* runJobs(billingRunHandler, [jobId])
        expect(outcome!._tag).toBe("Completed")

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
            dueDate: "2025-04-15",
            serviceStart: "2025-03-01",
            serviceEnd: "2025-03-31"
          })
        }

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
      }))

    it.effect("billing the same period twice creates no second invoice, sequentially or at the same time", () =>
      Effect.gen(function* () {
        yield* seed(ORG_TWICE, 80, "2025-03")
        const first = yield* enqueueBillingRun(ORG_TWICE, { billingPeriod: "2025-03", invoiceDate: "2025-04-01" })
        yield* runJobs(billingRunHandler, [first])
        const before = yield* invoicesOf(ORG_TWICE)
        expect(before.length).toBeGreaterThan(50)

        const second = yield* enqueueBillingRun(ORG_TWICE, { billingPeriod: "2025-03", invoiceDate: "2025-04-01" })
        const [outcome] = yield* runJobs(billingRunHandler, [second])
        expect(outcome!._tag).toBe("Completed")
        expect(yield* invoicesOf(ORG_TWICE)).toEqual(before)
        expect(yield* runOfJob(second)).toMatchObject({
          status: "completed",
          customersProcessed: before.length,
          invoicesCreated: 0,
          invoicesSkipped: before.length,
          netTotalCents: 0,
          grossTotalCents: 0
        })

        // Two runs of one organization at once, in small chunks: they take turns, and together bill each customer once.
        yield* seed(ORG_SAME, 120, "2025-03")
        const small = makeBillingRunHandler({ chunkSize: 7 })
        const a = yield* enqueueBillingRun(ORG_SAME, { billingPeriod: "2025-03", invoiceDate: "2025-04-01" })
        const b = yield* enqueueBillingRun(ORG_SAME, { billingPeriod: "2025-03", invoiceDate: "2025-04-01" })
        const outcomes = yield* runJobs(small, [a, b], { concurrency: 2 })
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

    it.effect("a run interrupted after its first chunk resumes there and ends exactly like an uninterrupted run", () =>
      Effect.gen(function* () {
        // Two organizations with the same generated data: one billed in one go, one interrupted.
        yield* seed(ORG_UNINTERRUPTED, 230, "2025-06")
        yield* seed(ORG_CRASHED, 230, "2025-06")
        const payload = { billingPeriod: "2025-06", invoiceDate: "2025-07-01" }
        const chunked = (afterChunk?: Effect.Effect<void>) =>
          makeBillingRunHandler({ chunkSize: 50, ...(afterChunk ? { afterChunk: () => afterChunk } : {}) })

        const reference = yield* enqueueBillingRun(ORG_UNINTERRUPTED, payload)
        yield* runJobs(chunked(), [reference])

        const jobId = yield* enqueueBillingRun(ORG_CRASHED, payload)
        yield* runAndInterruptAfterFirstChunk(chunked, jobId)
        // The job went back to the queue; its first chunk is committed and recorded, nothing after it.
        expect(yield* jobOf(jobId)).toMatchObject({ status: "pending", attempts: 0 })
        const halfway = (yield* runOfJob(jobId))!
        expect(halfway).toMatchObject({ status: "running", chunksCommitted: 1, customersProcessed: 50 })
        expect(halfway.cursor).not.toBeNull()
        const afterFirstChunk = yield* invoicesOf(ORG_CRASHED)
        expect(afterFirstChunk.length).toBe(halfway.invoicesCreated)
        expect(afterFirstChunk.length).toBeGreaterThan(40)

        const [outcome] = yield* runJobs(chunked(), [jobId])
        expect(outcome!._tag).toBe("Completed")
        expect(yield* comparable(ORG_CRASHED)).toEqual(yield* comparable(ORG_UNINTERRUPTED))
        const { id: _a, ...resumed } = (yield* runOfJob(jobId))!
        const { id: _b, ...uninterrupted } = (yield* runOfJob(reference))!
        expect(resumed).toEqual(uninterrupted)
        // The invoices of the first chunk were kept, not made again.
        const final = yield* invoicesOf(ORG_CRASHED)
        expect(final.slice(0, afterFirstChunk.length)).toEqual(afterFirstChunk)
        expect((yield* auditOfJob(jobId)).map((entry) => entry.event)).toEqual([
          "job_started", "billing_run_started", "job_released",
          "job_started", "billing_run_resumed", "billing_run_completed", "job_completed"
        ])
      }))

    it.effect("two organizations billed at the same time each get gapless numbers", () =>
      Effect.gen(function* () {
        yield* seed(ORG_EAST, 150, "2024-02")
        yield* seed(ORG_WEST, 120, "2024-02")
        // Each run waits after its first chunk until the other has committed one too: they truly overlap.
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
        const jobs = [yield* enqueueBillingRun(ORG_EAST, payload), yield* enqueueBillingRun(ORG_WEST, payload)]
        const outcomes = yield* runJobs(handler, jobs, { concurrency: 2 })
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
        const org = "a0000000-0000-4000-8000-000000000008"
        yield* seed(org, 40, "2025-03")
        const expected = yield* expectedInvoices(org, "2025-03")
        const sql = yield* SqlClient.SqlClient
        const chosen = expected.slice(3, 6).map((invoice) => invoice.customerNumber)
        const ids = yield* sql<{ id: string }>`
          SELECT id FROM customers WHERE organization_id = ${org} AND customer_number = ANY (${chosen}::text[])`
        const jobId = yield* enqueueBillingRun(org, {
          billingPeriod: "2025-03",
          invoiceDate: "2025-04-01",
          customerIds: [ids[0]!.id, ...ids.slice(1).map((row) => row.id)]
        })
        yield* runJobs(billingRunHandler, [jobId])
        const invoices = yield* invoicesOf(org)
        expect(asExpected(invoices)).toEqual(expected.slice(3, 6))
        expect(invoices.map((invoice) => invoice.numberSequence)).toEqual([1, 2, 3])
        expect(yield* runOfJob(jobId)).toMatchObject({ status: "completed", invoicesCreated: 3, customersProcessed: 3 })
      }))

    it.effect("an unknown organization or an invalid period fails the job at once, without retries", () =>
      Effect.gen(function* () {
        const unknown = yield* enqueueBillingRun("a0000000-0000-4000-8000-0000000000ff", { billingPeriod: "2025-03", invoiceDate: "2025-04-01" })
        const sql = yield* SqlClient.SqlClient
        // The runbook's raw SQL insert bypasses the enqueue-time Schema check.
        const [invalid] = yield* sql<{ id: string }>`
          INSERT INTO job_queue (organization_id, job_type, payload, run_at)
          VALUES (${ORG_MAIN}, 'billing_run', '{"billingPeriod": "2025-13"}'::jsonb, ${new Date(yield* Clock.currentTimeMillis)})
          RETURNING id`
        const outcomes = yield* runJobs(billingRunHandler, [unknown, invalid!.id])
        expect(outcomes.map((o) => o._tag)).toEqual(["Failed", "Failed"])
        expect(yield* jobOf(unknown)).toMatchObject({ status: "failed", attempts: 1 })
        expect((yield* jobOf(unknown)).error).toContain("unknown organization a0000000-0000-4000-8000-0000000000ff")
        expect(yield* jobOf(invalid!.id)).toMatchObject({ status: "failed", attempts: 1 })
        expect((yield* jobOf(invalid!.id)).error).toContain("2025-13")
        expect(yield* runOfJob(unknown)).toBeUndefined()

        // Enqueueing through the queue rejects the period before any job exists.
        const rejected = yield* Effect.flip(enqueueBillingRun(ORG_MAIN, { billingPeriod: "2025-3" }))
        expect(rejected._tag).toBe("InvalidPayload")
      }))
  })
})
