// The demo seed: a realistic organization a newcomer can bill right away.
import { Command } from "@effect/cli"
import { NodeContext } from "@effect/platform-node"
import { SqlClient } from "@effect/sql"
import { describe, expect, it, vi } from "@effect/vitest"
import { Effect, TestClock } from "effect"
import { SkiplockTest } from "skiplock/testing"
import { isValidIban } from "../../src/billing/iban.js"
import { billingRun, DEMO_ORGANIZATION_ID, demoCommand, seedDemo } from "../../src/billing/index.js"
import { billingKit, expectedInvoices, invoicesOf, outcomesByJob } from "./support.js"

const capturePrinted = Effect.gen(function* () {
  const printed: Array<string> = []
  const spy = vi.spyOn(console, "log").mockImplementation((...args: Array<unknown>) => void printed.push(args.join(" ")))
  yield* Effect.addFinalizer(() => Effect.sync(() => spy.mockRestore()))
  return printed
})

describe("seedDemo", () => {
  it.layer(billingKit, { timeout: 120_000 })((it) => {
    it.effect("loads the demo organization around the current month, once", () =>
      Effect.gen(function* () {
        yield* SkiplockTest.reset
        yield* TestClock.setTime(Date.parse("2025-03-10T08:00:00Z"))
        const result = yield* seedDemo({ print: false })
        expect(result).toMatchObject({ organizationId: DEMO_ORGANIZATION_ID, period: "2025-03", alreadySeeded: false, customers: 300 })

        const sql = yield* SqlClient.SqlClient
        const customers = yield* sql<{ name: string; iban: string; bic: string | null; mandateReference: string; validInDb: boolean }>`
          SELECT name, iban, bic, mandate_reference AS "mandateReference", iban_is_valid(iban) AS "validInDb"
          FROM customers WHERE organization_id = ${DEMO_ORGANIZATION_ID}`
        expect(customers.length).toBe(300)
        expect(customers.every((customer) => customer.validInDb && isValidIban(customer.iban) && customer.iban.startsWith("DE"))).toBe(true)
        expect(new Set(customers.map((customer) => customer.mandateReference)).size).toBe(300)
        expect(customers.some((customer) => /[äöüß]/.test(customer.name))).toBe(true)

        const [mix] = yield* sql<{ total: number; rates: ReadonlyArray<number>; endingInMonth: number; startingInMonth: number; notYetStarted: number }>`
          SELECT count(*)::int AS total, array_agg(DISTINCT vat_rate_bp ORDER BY vat_rate_bp) AS rates,
                 count(*) FILTER (WHERE ends_on BETWEEN '2025-03-01' AND '2025-03-30')::int AS "endingInMonth",
                 count(*) FILTER (WHERE starts_on BETWEEN '2025-03-02' AND '2025-03-31')::int AS "startingInMonth",
                 count(*) FILTER (WHERE starts_on > '2025-03-31')::int AS "notYetStarted"
          FROM contracts WHERE organization_id = ${DEMO_ORGANIZATION_ID}`
        expect(mix).toMatchObject({ total: result.contracts, rates: [700, 1900] })
        expect(mix!.endingInMonth).toBeGreaterThan(10)
        expect(mix!.startingInMonth).toBeGreaterThan(10)
        expect(mix!.notYetStarted).toBeGreaterThan(5)
        // The summary printed after seeding counts what was stored.
        expect(result.mix).toMatchObject({ endingInPeriod: mix!.endingInMonth, startingInPeriod: mix!.startingInMonth, notYetStarted: mix!.notYetStarted })

        const again = yield* seedDemo({ print: false })
        expect(again).toMatchObject({ alreadySeeded: true, customers: 0, contracts: 0 })
        const [count] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM customers WHERE organization_id = ${DEMO_ORGANIZATION_ID}`
        expect(count!.n).toBe(300)
      }))

    it.effect("prints next steps whose SQL enqueues a billing run that a worker completes", () =>
      Effect.gen(function* () {
        yield* SkiplockTest.reset
        // Seed around the current month (an earlier test moved the TestClock back to 2025).
        yield* SkiplockTest.syncClock
        const organizationId = "c0000000-0000-4000-8000-000000000001"
        const printed = yield* capturePrinted
        const result = yield* seedDemo({ organizationId, customers: 30 })
        const text = printed.join("\n")
        expect(text).toContain(`Seeded "Stadtwerke Musterstadt GmbH" (organization ${organizationId}): 30 customers`)
        expect(text).toContain("npx skiplock billing rollback")

        const insert = /psql "\$DATABASE_URL" -c "(INSERT INTO job_queue .*)"/.exec(text)![1]!
        const sql = yield* SqlClient.SqlClient
        yield* sql.unsafe(insert)
        const [job] = yield* SkiplockTest.assertEnqueued({
          jobType: billingRun,
          organizationId,
          payload: { billingPeriod: result.period },
          status: "pending",
          count: 1
        })
        // The printed SQL lets the database stamp the job with its own now(); the Clock must not lag behind it
        // (and a minute's leeway covers a database server whose clock runs a little ahead).
        yield* SkiplockTest.syncClock
        const drained = yield* SkiplockTest.drain({ maxAdvance: "1 minute" })
        expect(outcomesByJob(drained), drained.summary).toEqual({ [job!.id]: ["Completed"] })
        const expected = yield* expectedInvoices(organizationId, result.period)
        expect((yield* invoicesOf(organizationId)).length).toBe(expected.length)
        expect(expected.length).toBeGreaterThan(15)
      }).pipe(Effect.scoped))

    it.effect("`demo seed` seeds through the CLI, and rejects options out of range", () =>
      Effect.gen(function* () {
        yield* SkiplockTest.reset
        const organizationId = "c0000000-0000-4000-8000-000000000002"
        const printed = yield* capturePrinted
        const cli = Command.run(demoCommand, { name: "skiplock", version: "test" })
        yield* cli(["node", "skiplock", "seed", "--customers", "25", "--period", "2025-05", "--organization", organizationId]).pipe(
          Effect.provide(NodeContext.layer)
        )
        expect(printed.join("\n")).toContain(`(organization ${organizationId}): 25 customers`)
        const sql = yield* SqlClient.SqlClient
        const [count] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM customers WHERE organization_id = ${organizationId}`
        expect(count!.n).toBe(25)

        const tooMany = yield* Effect.flip(seedDemo({ organizationId, customers: 0, print: false }))
        expect(tooMany._tag).toBe("InvalidSeedOptions")
        const badPeriod = yield* Effect.flip(seedDemo({ organizationId, period: "2025-13", print: false }))
        expect(badPeriod).toMatchObject({ _tag: "InvalidBillingPeriod", input: "2025-13" })
      }).pipe(Effect.scoped))
  })
})
