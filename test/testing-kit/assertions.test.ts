// Assertions on enqueued jobs: by type, organization, status and partial
// payload; failure messages list what was enqueued instead and how it differs.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { JobDefinition, JobQueue } from "../../src/index.js"
import { SkiplockTest } from "../../src/testing/index.js"
import { ORG, OTHER_ORG, Report, SepaExport } from "./support.js"

const Dunning = JobDefinition.make("dunning_run", Schema.Struct({ dueBefore: Schema.Date, levels: Schema.Array(Schema.Int) }))

const kit = SkiplockTest.layer({ handlers: [] })

const enqueueSome = Effect.gen(function* () {
  yield* JobQueue.enqueueJob(Report, { month: "2025-04" }, { organizationId: ORG })
  yield* JobQueue.enqueueJob(SepaExport, { month: "2025-03", batch: 2 }, { organizationId: OTHER_ORG })
  yield* JobQueue.enqueueJob(Dunning, { dueBefore: new Date("2025-05-01T00:00:00.000Z"), levels: [1, 2] }, { organizationId: ORG })
})

describe("assertions on enqueued jobs", () => {
  it.effect("find jobs by type, organization and partial payload, and list them in the order they were enqueued", () =>
    Effect.gen(function* () {
      yield* enqueueSome
      const [report] = yield* SkiplockTest.assertEnqueued({ jobType: "report_generation", organizationId: ORG, payload: { month: "2025-04" } })
      expect(report).toMatchObject({ jobType: "report_generation", status: "pending", payload: { month: "2025-04" } })
      yield* SkiplockTest.assertEnqueued({ jobType: SepaExport, payload: { batch: 2 }, count: 1 })
      // With a definition, the payload is compared decoded: Dates as Dates.
      yield* SkiplockTest.assertEnqueued({ jobType: Dunning, payload: { dueBefore: new Date("2025-05-01T00:00:00.000Z") } })
      yield* SkiplockTest.assertEnqueued({ organizationId: ORG, count: 2 })
      yield* SkiplockTest.assertNotEnqueued({ jobType: "billing_run" })
      yield* SkiplockTest.assertNotEnqueued({ jobType: Report, organizationId: OTHER_ORG })
      yield* SkiplockTest.assertNotEnqueued({ jobType: Report, status: "completed" })

      expect((yield* SkiplockTest.enqueued()).map((job) => job.jobType)).toEqual(["report_generation", "sepa_export", "dunning_run"])
      expect((yield* SkiplockTest.enqueued({ organizationId: ORG })).map((job) => job.jobType)).toEqual(["report_generation", "dunning_run"])
      // UUIDs in capitals, as the queue takes them: the same jobs (stored in lower case), found and not overlooked.
      yield* SkiplockTest.assertEnqueued({ organizationId: ORG.toUpperCase(), count: 2 })
      yield* SkiplockTest.assertEnqueued({ id: report!.id.toUpperCase(), count: 1 })
      const notOverlooked = yield* Effect.flip(SkiplockTest.assertNotEnqueued({ jobType: Report, organizationId: ORG.toUpperCase() }))
      expect(notOverlooked.message).toContain("assertNotEnqueued")
    }).pipe(Effect.provide(kit)))

  it.effect("a payload decoded to Schema.Class instances matches a partial plain object, nested too", () =>
    Effect.gen(function* () {
      class Customer extends Schema.Class<Customer>("Customer")({ email: Schema.String, name: Schema.String }) {}
      class Receipt extends Schema.Class<Receipt>("Receipt")({ invoiceId: Schema.String, dueOn: Schema.Date, customer: Customer }) {}
      const Mail = JobDefinition.make("report_generation", Receipt)
      const customer = new Customer({ email: "ada@example.com", name: "Ada" })
      yield* JobQueue.enqueueJob(Mail, new Receipt({ invoiceId: "INV-1", dueOn: new Date("2025-05-01T00:00:00.000Z"), customer }), { organizationId: ORG })
      yield* SkiplockTest.assertEnqueued({ jobType: Mail, payload: { invoiceId: "INV-1" }, count: 1 })
      yield* SkiplockTest.assertEnqueued({ jobType: Mail, payload: { customer: { email: "ada@example.com" } }, count: 1 })
      const wrong = yield* Effect.flip(SkiplockTest.assertEnqueued({ jobType: Mail, payload: { customer: { email: "bob@example.com" } } }))
      expect(wrong.message).toContain(`payload.customer.email: expected "bob@example.com", got "ada@example.com"`)
    }).pipe(Effect.provide(kit)))

  it.effect("a failed assertEnqueued names each difference and shows what was enqueued instead, closest first", () =>
    Effect.gen(function* () {
      yield* enqueueSome
      const error = yield* Effect.flip(SkiplockTest.assertEnqueued({ jobType: Report, organizationId: ORG, payload: { month: "2025-03" } }))
      if (error._tag !== "EnqueuedAssertionError") throw error
      const lines = error.message.split("\n")
      expect(lines[0]).toBe(`assertEnqueued: expected a job with jobType "report_generation", organizationId "${ORG}", payload containing {"month":"2025-03"}, but none was enqueued.`)
      expect(lines[1]).toBe("Enqueued instead (3, closest first):")
      // The report for April differs only in its month: it comes first, with exactly that difference.
      expect(lines[2]).toMatch(new RegExp(`^  - report_generation [0-9a-f-]{36} for organization ${ORG}, pending, payload \\{"month":"2025-04"\\}$`))
      expect(lines[3]).toBe(`      payload.month: expected "2025-03", got "2025-04"`)
      // Then the dunning run (only its type differs), then the SEPA export (type and organization).
      expect(lines[4]).toMatch(/^  - dunning_run /)
      expect(lines[5]).toBe(`      jobType: expected "report_generation", got "dunning_run"`)
      expect(lines[6]).toMatch(/^  - sepa_export /)
      expect(lines.slice(7, 9)).toEqual([
        `      jobType: expected "report_generation", got "sepa_export"`,
        `      organizationId: expected "${ORG}", got "${OTHER_ORG}"`
      ])
      expect(lines).toHaveLength(9)
      expect(error.jobs).toHaveLength(3)
    }).pipe(Effect.provide(kit)))

  it.effect("find one job by its id: its status, and the difference named when it is not the one", () =>
    Effect.gen(function* () {
      yield* enqueueSome
      const sepa = yield* JobQueue.enqueueJob(SepaExport, { month: "2025-05", batch: 1 }, { organizationId: ORG })
      const [found] = yield* SkiplockTest.assertEnqueued({ id: sepa.id, status: "pending", count: 1 })
      expect(found).toMatchObject({ id: sepa.id, jobType: "sepa_export", payload: { month: "2025-05", batch: 1 } })
      yield* SkiplockTest.assertNotEnqueued({ id: sepa.id, status: "completed" })

      const error = yield* Effect.flip(SkiplockTest.assertEnqueued({ id: sepa.id, jobType: Report }))
      const lines = error.message.split("\n")
      expect(lines[0]).toBe(`assertEnqueued: expected a job with id "${sepa.id}", jobType "report_generation", but none was enqueued.`)
      // The job with that id differs only in its type: it comes first.
      expect(lines[2]).toMatch(new RegExp(`^  - sepa_export ${sepa.id} `))
      expect(lines[3]).toBe(`      jobType: expected "report_generation", got "sepa_export"`)
      expect(error.message).toContain(`      id: expected "${sepa.id}", got `)
    }).pipe(Effect.provide(kit)))

  it.effect("nested payloads are matched partially and their differences named by path", () =>
    Effect.gen(function* () {
      yield* enqueueSome
      const error = yield* Effect.flip(SkiplockTest.assertEnqueued({ jobType: Dunning, payload: { dueBefore: new Date("2025-06-01T00:00:00.000Z"), levels: [1, 3] } }))
      expect(error.message).toContain(`      payload.dueBefore: expected "2025-06-01T00:00:00.000Z", got "2025-05-01T00:00:00.000Z"`)
      expect(error.message).toContain(`      payload.levels[1]: expected 3, got 2`)
      const missing = yield* Effect.flip(SkiplockTest.assertEnqueued({ jobType: "sepa_export", payload: { iban: "DE02" } }))
      expect(missing.message).toContain(`      payload.iban: missing (expected "DE02")`)
    }).pipe(Effect.provide(kit)))

  it.effect("a count that does not match lists the matching jobs and the others", () =>
    Effect.gen(function* () {
      yield* enqueueSome
      const error = yield* Effect.flip(SkiplockTest.assertEnqueued({ organizationId: ORG, count: 3 }))
      const lines = error.message.split("\n")
      expect(lines[0]).toBe(`assertEnqueued: expected 3 job(s) with organizationId "${ORG}", but 2 matched.`)
      expect(lines[1]).toBe("Matching (2):")
      expect(lines[2]).toMatch(/^  - report_generation /)
      expect(lines[3]).toMatch(/^  - dunning_run /)
      expect(lines[4]).toBe("Not matching (1, closest first):")
      expect(lines[6]).toBe(`      organizationId: expected "${ORG}", got "${OTHER_ORG}"`)
    }).pipe(Effect.provide(kit)))

  it.effect("with nothing enqueued, the message says so", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(SkiplockTest.assertEnqueued({ jobType: "billing_run" }))
      expect(error.message).toBe(`assertEnqueued: expected a job with jobType "billing_run", but none was enqueued.\nNo job was enqueued at all.`)
    }).pipe(Effect.provide(kit)))

  it.effect("a status filter tells a job that already ran from one still waiting", () =>
    Effect.gen(function* () {
      yield* enqueueSome
      const error = yield* Effect.flip(SkiplockTest.assertEnqueued({ jobType: Report, status: "completed" }))
      expect(error.message).toContain(`      status: expected completed, got pending`)
    }).pipe(Effect.provide(kit)))

  it.effect("a failed assertNotEnqueued lists the jobs that matched", () =>
    Effect.gen(function* () {
      yield* enqueueSome
      const error = yield* Effect.flip(SkiplockTest.assertNotEnqueued({ organizationId: OTHER_ORG }))
      const lines = error.message.split("\n")
      expect(lines[0]).toBe(`assertNotEnqueued: expected no job with organizationId "${OTHER_ORG}", but 1 matched:`)
      expect(lines[1]).toMatch(new RegExp(`^  - sepa_export [0-9a-f-]{36} for organization ${OTHER_ORG}, pending, payload \\{"batch":2,"month":"2025-03"\\}$`)) // as stored: jsonb orders keys
      expect(lines).toHaveLength(2)
    }).pipe(Effect.provide(kit)))
})
