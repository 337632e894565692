// Enqueueing: payloads checked against their Schema before they are written,
// unknown types and bad options named, idempotency keys, batches, transactions.
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, ParseResult, Schema } from "effect"
import { JobDefinition, JobQueue, type UnknownJobType } from "../../src/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { uuidv7Millis } from "../../src/internal/uuidv7.js"
import { ORG, USER } from "../support/jobs.js"

const SepaExport = JobDefinition.make(
  "sepa_export",
  Schema.Struct({ batchId: Schema.NonEmptyString, executionDate: Schema.optional(Schema.DateFromString) })
)

interface Tree {
  readonly name: string
  readonly children: ReadonlyArray<Tree>
}
const TreeSchema: Schema.Schema<Tree> = Schema.Struct({ name: Schema.String, children: Schema.Array(Schema.suspend(() => TreeSchema)) })
const TreeReport = JobDefinition.make("report_generation", TreeSchema)

const countJobs = Effect.flatMap(SqlClient.SqlClient, (sql) => sql<{ n: number }>`SELECT count(*)::int AS n FROM job_queue`).pipe(
  Effect.map((rows) => rows[0]!.n)
)

const reset = Effect.flatMap(SqlClient.SqlClient, (sql) => sql`DELETE FROM job_queue`)

describe("JobQueue.enqueue", () => {
  it.layer(TestDatabase.layer())((it) => {
    const queue = JobQueue.layer([SepaExport])

    it.effect("takes the runbook's call shape and writes a pending job with the payload verbatim", () =>
      Effect.gen(function* () {
        yield* reset
        const job = yield* JobQueue.enqueue({ organizationId: ORG, jobType: "sepa_export", payload: { batchId: "test-1" }, createdBy: USER })
        expect(job).toMatchObject({ jobType: "sepa_export", organizationId: ORG, status: "pending", existing: false })
        const sql = yield* SqlClient.SqlClient
        const [row] = yield* sql<{ payload: unknown; createdBy: string; maxAttempts: number }>`
          SELECT payload, created_by AS "createdBy", max_attempts AS "maxAttempts" FROM job_queue WHERE id = ${job.id}`
        expect(row).toEqual({ payload: { batchId: "test-1" }, createdBy: USER, maxAttempts: 3 })
      }).pipe(Effect.provide(queue)))

    it.effect("a key whose finished job retention deletes between the insert and the look is free again: the job is inserted, not a defect", () =>
      Effect.gen(function* () {
        yield* reset
        const sql = yield* SqlClient.SqlClient
        const input = { organizationId: ORG, jobType: "sepa_export", payload: { batchId: "b-1" }, idempotencyKey: "sepa-2026-11" }
        const earlier = yield* JobQueue.enqueue(input)
        yield* sql`UPDATE job_queue SET status = 'completed', completed_at = now() - interval '30 days' WHERE id = ${earlier.id}`
        // Retention's prune, run by the insert's own statement once it found the key taken (a statement trigger
        // fires also when ON CONFLICT inserted nothing): the earlier job is gone when the enqueue looks for it.
        yield* sql`CREATE FUNCTION prune_now() RETURNS trigger LANGUAGE plpgsql AS $$
          BEGIN PERFORM prune_finished_jobs(now() - interval '7 days'); RETURN NULL; END $$`
        yield* sql`CREATE TRIGGER prune_now AFTER INSERT ON job_queue FOR EACH STATEMENT EXECUTE FUNCTION prune_now()`
        const again = yield* JobQueue.enqueue(input).pipe(
          Effect.ensuring(Effect.orDie(sql`DROP TRIGGER prune_now ON job_queue; DROP FUNCTION prune_now()`.pipe(Effect.zipRight(Effect.void))))
        )
        expect(again).toMatchObject({ existing: false, status: "pending" })
        expect(again.id).not.toBe(earlier.id)
        expect(yield* sql`SELECT id FROM job_queue WHERE idempotency_key = 'sepa-2026-11'`).toEqual([{ id: again.id }])
      }).pipe(Effect.provide(queue)))

    it.effect("rejects a payload that does not match the job type's Schema, naming the field, and writes nothing", () =>
      Effect.gen(function* () {
        yield* reset
        const error = yield* JobQueue.enqueue({ organizationId: ORG, jobType: "sepa_export", payload: { batchId: "" } }).pipe(Effect.flip)
        expect(error._tag).toBe("InvalidPayload")
        expect(error.message).toContain(`invalid payload for job type "sepa_export"`)
        expect(error.message).toContain("batchId")
        const missing = yield* JobQueue.enqueue({ organizationId: ORG, jobType: "sepa_export", payload: {} }).pipe(Effect.flip)
        expect(missing.message).toMatch(/batchId.*is missing/)
        expect(yield* countJobs).toBe(0)
      }).pipe(Effect.provide(queue)))

    it.effect("stores the Schema's encoded form, and the typed form encodes it", () =>
      Effect.gen(function* () {
        yield* reset
        const job = yield* JobQueue.enqueueJob(SepaExport, { batchId: "b-2", executionDate: new Date("2026-12-01T00:00:00Z") }, { organizationId: ORG })
        const sql = yield* SqlClient.SqlClient
        const [row] = yield* sql<{ payload: unknown }>`SELECT payload FROM job_queue WHERE id = ${job.id}`
        expect(row!.payload).toEqual({ batchId: "b-2", executionDate: "2026-12-01T00:00:00.000Z" })
        // jsonb orders an object's keys by length, then bytes: the enqueuer's order is not kept (README says so).
        const keyed = yield* JobQueue.enqueue({ organizationId: ORG, jobType: "report_generation", payload: { validate: 1, charge: 2, ship: 3 } })
        const [stored] = yield* sql<{ payload: Record<string, number> }>`SELECT payload FROM job_queue WHERE id = ${keyed.id}`
        expect(Object.keys(stored!.payload)).toEqual(["ship", "charge", "validate"])
      }).pipe(Effect.provide(queue)))

    it.effect("rejects an unknown job type with its name and the registered ones", () =>
      Effect.gen(function* () {
        yield* reset
        const error = yield* JobQueue.enqueue({ organizationId: ORG, jobType: "sepa_exprot", payload: {} }).pipe(Effect.flip)
        expect(error._tag).toBe("UnknownJobType")
        expect(error.message).toContain(`unknown job type "sepa_exprot"`)
        expect(error.message).toContain("billing_run")
        const empty = yield* JobQueue.enqueue({ organizationId: ORG, jobType: "", payload: {} }).pipe(Effect.flip)
        expect(empty.message).toContain(`unknown job type ""`)
        // One no database can hold: the same error, its characters escaped (the database refused it bare, as an SqlError).
        const nul = yield* JobQueue.enqueue({ organizationId: ORG, jobType: "sepa\u0000export", payload: {} }).pipe(Effect.flip)
        expect(nul._tag).toBe("UnknownJobType")
        expect(nul.message).toContain(`unknown job type "sepa\\u0000export" (registered: `)
        // Inside a transaction too, which the refused insert has aborted.
        const sql = yield* SqlClient.SqlClient
        const inTransaction = yield* sql.withTransaction(JobQueue.enqueue({ organizationId: ORG, jobType: "sepa_exprot", payload: {} })).pipe(Effect.flip)
        expect(inTransaction).toMatchObject({ _tag: "UnknownJobType", jobType: "sepa_exprot" })
        expect((inTransaction as UnknownJobType).registered).toEqual(expect.arrayContaining(["billing_run", "sepa_export"]))
        // In a batch, refused by the database (no schema here to check it first): the error names the input.
        const inBatch = yield* JobQueue.enqueueMany([
          { organizationId: ORG, jobType: "dunning_run", payload: {} },
          { organizationId: ORG, jobType: "sepa_exprot", payload: {} }
        ]).pipe(Effect.flip)
        expect(inBatch.message).toMatch(/^inputs\[1\]: unknown job type "sepa_exprot" \(registered: /)
        // A line break (a type read from a file or a form) is named too, escaped, alone and in a batch.
        const lineBreak = yield* JobQueue.enqueue({ organizationId: ORG, jobType: "sepa_export\n", payload: {} }).pipe(Effect.flip)
        expect(lineBreak).toMatchObject({ _tag: "UnknownJobType", jobType: "sepa_export\n" })
        expect(lineBreak.message).toContain(`unknown job type "sepa_export\\n" (registered: `)
        const lineBreakInBatch = yield* JobQueue.enqueueMany([
          { organizationId: ORG, jobType: "dunning_run", payload: {} },
          { organizationId: ORG, jobType: "dunning_run\r", payload: {} }
        ]).pipe(Effect.flip)
        expect(lineBreakInBatch.message).toMatch(/^inputs\[1\]: unknown job type "dunning_run\\r" \(registered: /)
        expect(yield* countJobs).toBe(0)
      }).pipe(Effect.provide(queue)))

    it.effect("accepts any JSON object for a registered type this process has no Schema for, but not null or an array", () =>
      Effect.gen(function* () {
        yield* reset
        yield* JobQueue.enqueue({ organizationId: ORG, jobType: "dunning_run", payload: { level: 2 } })
        const nullPayload = yield* JobQueue.enqueue({ organizationId: ORG, jobType: "dunning_run", payload: null }).pipe(Effect.flip)
        expect(nullPayload.message).toContain("the payload must be a JSON object, got null")
        const array = yield* JobQueue.enqueue({ organizationId: ORG, jobType: "dunning_run", payload: [1] }).pipe(Effect.flip)
        expect(array.message).toContain("got an array")
        expect(yield* countJobs).toBe(1)
      }).pipe(Effect.provide(queue)))

    it.effect("names bad options: organization not a UUID, attempts out of range, invalid run time", () =>
      Effect.gen(function* () {
        const base = { jobType: "dunning_run", payload: {} }
        const notUuid = yield* JobQueue.enqueue({ ...base, organizationId: "org-1" }).pipe(Effect.flip)
        expect(notUuid.message).toBe(`invalid job options: organizationId must be a UUID, got "org-1"`)
        const zero = yield* JobQueue.enqueue({ ...base, organizationId: ORG, maxAttempts: 0 }).pipe(Effect.flip)
        expect(zero.message).toContain("maxAttempts must be a whole number from 1 to 100, got 0")
        const huge = yield* JobQueue.enqueue({ ...base, organizationId: ORG, maxAttempts: 1e9 }).pipe(Effect.flip)
        expect(huge._tag).toBe("InvalidJobOptions")
        const badDate = yield* JobQueue.enqueue({ ...base, organizationId: ORG, runAt: new Date("nope") }).pipe(Effect.flip)
        expect(badDate.message).toContain("runAt must be a valid Date")
        const creator = yield* JobQueue.enqueue({ ...base, organizationId: ORG, createdBy: "admin'; DROP TABLE job_queue; --" }).pipe(Effect.flip)
        expect(creator.message).toContain("createdBy must be a UUID")
      }).pipe(Effect.provide(queue)))

    it.effect("refuses payload values that JSON cannot carry or PostgreSQL cannot store, naming where, and writes nothing", () =>
      Effect.gen(function* () {
        yield* reset
        const Amount = JobDefinition.make("settlement_calculation", Schema.Struct({ amount: Schema.Number }))
        const refused = (jobType: string, payload: unknown) =>
          JobQueue.enqueue({ organizationId: ORG, jobType, payload }).pipe(Effect.flip, Effect.map((error) => error.message))
        const typed = (amount: number) => JobQueue.enqueueJob(Amount, { amount }, { organizationId: ORG }).pipe(Effect.flip, Effect.map((error) => error.message))
        const prefix = (jobType: string) => `invalid payload for job type "${jobType}": `
        // Through a Schema that lets the value pass: it would have been stored as null.
        expect(yield* typed(Number.NaN)).toBe(`${prefix("settlement_calculation")}payload["amount"] is NaN, which JSON cannot carry (it would be stored as null)`)
        expect(yield* typed(Number.POSITIVE_INFINITY)).toContain(`payload["amount"] is Infinity`)
        // A type without a Schema in this process (the runbook's jobQueueService enqueues those).
        expect(yield* refused("dunning_run", { levels: [1, Number.NEGATIVE_INFINITY] })).toContain(`payload["levels"][1] is -Infinity`)
        expect(yield* refused("dunning_run", { total: 12n })).toBe(
          `${prefix("dunning_run")}payload["total"] is a bigint, which JSON cannot carry (send it as a string)`
        )
        expect(yield* refused("dunning_run", { seen: new Map([["a", 1]]) })).toBe(
          `${prefix("dunning_run")}payload["seen"] is a Map, not plain JSON (it would be stored as {}); encode it, or give the job type a Schema that does`
        )
        expect(yield* refused("dunning_run", { due: new Date("2026-12-01T00:00:00Z") })).toContain(`payload["due"] is a Date, not plain JSON`)
        expect(yield* refused("dunning_run", { lines: [undefined] })).toContain(`payload["lines"][0] is undefined (it would be stored as null)`)
        expect(yield* refused("dunning_run", { note: "a\u0000b" })).toBe(
          `${prefix("dunning_run")}payload["note"] contains a NUL character (\\u0000), which PostgreSQL cannot store`
        )
        expect(yield* refused("dunning_run", { ["k\u0000"]: 1 })).toContain(`the key of payload["k\\u0000"] contains a NUL character`)
        expect(yield* refused("dunning_run", { note: "\ud800" })).toContain(`payload["note"] contains an unpaired UTF-16 surrogate`)
        // Through the Schema's encoded form as well.
        const Note = JobDefinition.make("report_generation", Schema.Struct({ note: Schema.String }))
        const viaSchema = yield* JobQueue.enqueueJob(Note, { note: "x\u0000" }, { organizationId: ORG }).pipe(Effect.flip)
        expect(viaSchema.message).toContain(`payload["note"] contains a NUL character`)
        // Nesting: deep is fine, deeper than MAX_PAYLOAD_DEPTH is named (JSON.stringify and PostgreSQL give up on it without saying where).
        const nested = (levels: number) => {
          let value: Record<string, unknown> = { leaf: true }
          for (let i = 0; i < levels; i++) value = { a: value }
          return value
        }
        const deep = yield* JobQueue.enqueue({ organizationId: ORG, jobType: "dunning_run", payload: nested(1_500) })
        expect(deep.existing).toBe(false)
        expect(yield* refused("dunning_run", nested(10_000))).toBe(`invalid payload for job type "dunning_run": payload${'["a"]'.repeat(20)}…(1980 levels more) nests deeper than 2000 levels`)
        // Left out as JSON leaves it out (absent and undefined read the same), and a payload that is fine is stored.
        const job = yield* JobQueue.enqueue({ organizationId: ORG, jobType: "dunning_run", payload: { level: 2, note: undefined, emoji: "😀" } })
        const sql = yield* SqlClient.SqlClient
        const [row] = yield* sql<{ payload: unknown }>`SELECT payload FROM job_queue WHERE id = ${job.id}`
        expect(row!.payload).toEqual({ level: 2, emoji: "😀" })
        expect(yield* countJobs).toBe(2)
      }).pipe(Effect.provide(JobQueue.layer([SepaExport, JobDefinition.make("settlement_calculation", Schema.Struct({ amount: Schema.Number })), JobDefinition.make("report_generation", Schema.Struct({ note: Schema.String }))]))))

    it.effect("names a cycle in the payload as a cycle, where it closes, with a Schema or without; an object used twice is no cycle", () =>
      Effect.gen(function* () {
        yield* reset
        const refused = (jobType: string, payload: unknown) =>
          JobQueue.enqueue({ organizationId: ORG, jobType, payload }).pipe(Effect.flip, Effect.map((error) => error.message))
        const cyclic: { level: number; lines: Array<Record<string, unknown>> } = { level: 1, lines: [{ n: 1 }] }
        cyclic.lines[0]!.back = cyclic
        expect(yield* refused("dunning_run", cyclic)).toBe(
          `invalid payload for job type "dunning_run": payload["lines"][0]["back"] refers back to payload (a cycle), which JSON cannot carry`
        )
        const inner: Record<string, unknown> = { n: 1 }
        inner.self = inner
        expect(yield* refused("dunning_run", { a: { b: inner } })).toContain(`payload["a"]["b"]["self"] refers back to payload["a"]["b"] (a cycle)`)
        // A recursive Schema follows the cycle until the call stack overflows: the cycle is named all the same.
        const tree: Tree = { name: "root", children: [] }
        ;(tree.children as Array<Tree>).push({ name: "child", children: [tree] })
        expect(yield* refused("report_generation", tree)).toBe(
          `invalid payload for job type "report_generation": payload["children"][0]["children"][0] refers back to payload (a cycle), which JSON cannot carry`
        )
        // The same object in two places is written out twice, as JSON does.
        const shared = { n: 1 }
        const job = yield* JobQueue.enqueue({ organizationId: ORG, jobType: "dunning_run", payload: { a: shared, b: [shared, shared] } })
        const sql = yield* SqlClient.SqlClient
        const [row] = yield* sql<{ payload: unknown }>`SELECT payload FROM job_queue WHERE id = ${job.id}`
        expect(row!.payload).toEqual({ a: { n: 1 }, b: [{ n: 1 }, { n: 1 }] })
        expect(yield* countJobs).toBe(1)
      }).pipe(Effect.provide(JobQueue.layer([TreeReport]))))

    it.effect("a Schema that throws (a bug) is a defect, also when the payload holds something JSON cannot carry where the Schema does not look", () =>
      Effect.gen(function* () {
        yield* reset
        const bug = new Error("a bug in the Schema's transformation")
        const Buggy = JobDefinition.make(
          "report_generation",
          Schema.Struct({ n: Schema.transform(Schema.Number, Schema.Number, { decode: () => { throw bug }, encode: (n) => n }) })
        )
        // The Struct ignores "note"; a Schema without the bug would store { n: 1 }.
        const exit = yield* JobQueue.enqueue({ organizationId: ORG, jobType: "report_generation", payload: { n: 1, note: new Date(0) } }).pipe(
          Effect.provide(JobQueue.layer([Buggy])),
          Effect.exit
        )
        expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
        expect(Exit.isFailure(exit) && Cause.squash(exit.cause)).toMatchObject({ message: bug.message })
        expect(yield* countJobs).toBe(0)
      }))

    it.effect("names an idempotency key PostgreSQL cannot store; a batch takes run times before the year 1 and after 9999 as a single enqueue does", () =>
      Effect.gen(function* () {
        yield* reset
        const base = { organizationId: ORG, jobType: "dunning_run", payload: {} }
        const key = yield* JobQueue.enqueue({ ...base, idempotencyKey: "run\u0000" }).pipe(Effect.flip)
        expect(key.message).toBe("invalid job options: idempotencyKey contains a NUL character (\\u0000), which PostgreSQL cannot store")
        // Its length in characters, as the column's check counts: 255 emoji fit (510 UTF-16 units), 256 do not.
        const emoji = yield* JobQueue.enqueue({ ...base, idempotencyKey: "\u{1F4B6}".repeat(255) })
        expect(emoji.idempotencyKey).toBe("\u{1F4B6}".repeat(255))
        const tooLong = yield* JobQueue.enqueue({ ...base, idempotencyKey: "\u{1F4B6}".repeat(256) }).pipe(Effect.flip)
        expect(tooLong.message).toBe("invalid job options: idempotencyKey must be a string of 1 to 255 characters, got 256 characters")
        yield* reset
        const times = ["+010000-01-01T00:00:00.000Z", "-000100-03-01T05:06:07.008Z", "-004713-11-24T00:00:00.000Z", "9999-12-31T23:59:59.999Z"]
        const jobs = yield* JobQueue.enqueueMany(times.map((time) => ({ ...base, runAt: new Date(time) })))
        const sql = yield* SqlClient.SqlClient
        const stored = yield* sql<{ id: string; runAt: Date }>`SELECT id, run_at AS "runAt" FROM job_queue WHERE id IN ${sql.in(jobs.map((job) => job.id))}`
        expect(jobs.map((job) => stored.find((row) => row.id === job.id)!.runAt.toISOString())).toEqual(times)
        expect(yield* countJobs).toBe(4)
      }).pipe(Effect.provide(queue)))

    it.effect("an organization id in capitals is stored as the database writes it, and a repeated idempotency key still finds the first job", () =>
      Effect.gen(function* () {
        yield* reset
        const input = { organizationId: ORG.toUpperCase(), jobType: "dunning_run", payload: {}, idempotencyKey: "mahnlauf:2026-12", createdBy: USER.toUpperCase() }
        const first = yield* JobQueue.enqueue(input)
        expect(first).toMatchObject({ organizationId: ORG, existing: false })
        const again = yield* JobQueue.enqueue(input)
        expect(again).toMatchObject({ id: first.id, organizationId: ORG, existing: true })
        const batch = yield* JobQueue.enqueueMany([input, { ...input, idempotencyKey: "mahnlauf:2027-01" }, { ...input, idempotencyKey: "mahnlauf:2027-01" }])
        expect(batch.map((job) => job.existing)).toEqual([true, false, true])
        expect(batch[2]!.id).toBe(batch[1]!.id)
        expect(yield* countJobs).toBe(2)
      }).pipe(Effect.provide(queue)))

    it.effect("a second enqueue with the same idempotency key returns the first job instead of creating another", () =>
      Effect.gen(function* () {
        yield* reset
        const input = { organizationId: ORG, jobType: "sepa_export", payload: { batchId: "2026-11" }, idempotencyKey: "sepa:2026-11" }
        const first = yield* JobQueue.enqueue(input)
        const second = yield* JobQueue.enqueue({ ...input, payload: { batchId: "other" } })
        expect(second.id).toBe(first.id)
        expect([first.existing, second.existing]).toEqual([false, true])
        // per organization: another organization may use the same key
        const other = yield* JobQueue.enqueue({ ...input, organizationId: USER })
        expect(other.id).not.toBe(first.id)
        expect(yield* countJobs).toBe(2)
      }).pipe(Effect.provide(queue)))

    it.effect("enqueues a batch in one statement, in order, all or none", () =>
      Effect.gen(function* () {
        yield* reset
        const jobs = yield* JobQueue.enqueueMany([
          { organizationId: ORG, jobType: "sepa_export", payload: { batchId: "a" } },
          { organizationId: ORG, jobType: "dunning_run", payload: { level: 1 }, priority: -1 },
          { organizationId: ORG, jobType: "sepa_export", payload: { batchId: "c" }, idempotencyKey: "k" },
          { organizationId: ORG, jobType: "sepa_export", payload: { batchId: "d" }, idempotencyKey: "k" }
        ])
        expect(jobs.map((job) => job.jobType)).toEqual(["sepa_export", "dunning_run", "sepa_export", "sepa_export"])
        expect(jobs[3]!.id).toBe(jobs[2]!.id)
        expect(yield* countJobs).toBe(3)
        const failed = yield* JobQueue.enqueueMany([
          { organizationId: ORG, jobType: "sepa_export", payload: { batchId: "ok" } },
          { organizationId: ORG, jobType: "sepa_export", payload: { batchId: 7 } }
        ]).pipe(Effect.flip)
        expect(failed._tag).toBe("InvalidPayload")
        // Which input it was: a batch may hold thousands.
        expect(failed.message).toMatch(/^inputs\[1\]: invalid payload for job type "sepa_export": /)
        expect(yield* countJobs).toBe(3)
      }).pipe(Effect.provide(queue)))

    it.effect("an idempotency key that belongs to a job of another type is refused, not answered with that job; an unknown type is named as such", () =>
      Effect.gen(function* () {
        yield* reset
        const first = yield* JobQueue.enqueue({ organizationId: ORG, jobType: "sepa_export", payload: { batchId: "a" }, idempotencyKey: "2026-11" })
        const otherType = yield* JobQueue.enqueue({ organizationId: ORG, jobType: "dunning_run", payload: { level: 1 }, idempotencyKey: "2026-11" }).pipe(Effect.flip)
        expect(otherType._tag).toBe("InvalidJobOptions")
        expect(otherType.message).toBe(
          `invalid job options: idempotencyKey "2026-11" already belongs to the sepa_export job ${first.id} of this organization (keys are unique per organization, across job types)`
        )
        const unknown = yield* JobQueue.enqueue({ organizationId: ORG, jobType: "no_such_type", payload: {}, idempotencyKey: "2026-11" }).pipe(Effect.flip)
        expect(unknown._tag).toBe("UnknownJobType")
        expect(unknown.message).toContain('unknown job type "no_such_type"')

        // In a batch, all or nothing: the new job beside the refused one is not left behind.
        const batch = yield* JobQueue.enqueueMany([
          { organizationId: ORG, jobType: "dunning_run", payload: { level: 2 } },
          { organizationId: ORG, jobType: "dunning_run", payload: { level: 1 }, idempotencyKey: "2026-11" }
        ]).pipe(Effect.flip)
        expect(batch.message).toMatch(/^inputs\[1\]: invalid job options: idempotencyKey "2026-11" already belongs to the sepa_export job/)
        expect(yield* countJobs).toBe(1)
        // Two inputs of one batch with one key and two types: refused before anything is inserted.
        const twice = yield* JobQueue.enqueueMany([
          { organizationId: ORG, jobType: "dunning_run", payload: { level: 1 }, idempotencyKey: "same" },
          { organizationId: ORG, jobType: "sepa_export", payload: { batchId: "b" }, idempotencyKey: "same" }
        ]).pipe(Effect.flip)
        expect(twice.message).toBe(
          `inputs[1]: invalid job options: idempotencyKey "same" already belongs to inputs[0] of this batch, a dunning_run job (keys are unique per organization, across job types)`
        )
        expect(yield* countJobs).toBe(1)
        // The same key twice for one type is one job, as across calls.
        const same = yield* JobQueue.enqueueMany([
          { organizationId: ORG, jobType: "dunning_run", payload: { level: 1 }, idempotencyKey: "same" },
          { organizationId: ORG, jobType: "dunning_run", payload: { level: 1 }, idempotencyKey: "same" }
        ])
        expect(same[1]!.id).toBe(same[0]!.id)
        expect(same.map((job) => job.existing)).toEqual([false, true])
      }).pipe(Effect.provide(queue)))

    it.effect("joins the caller's transaction: a job is enqueued only if the caller's work commits", () =>
      Effect.gen(function* () {
        yield* reset
        const sql = yield* SqlClient.SqlClient
        const attempt = sql.withTransaction(
          Effect.gen(function* () {
            yield* JobQueue.enqueue({ organizationId: ORG, jobType: "sepa_export", payload: { batchId: "rolled-back" } })
            return yield* Effect.fail("the caller's work failed")
          })
        )
        expect(yield* Effect.flip(attempt)).toBe("the caller's work failed")
        expect(yield* countJobs).toBe(0)
        yield* sql.withTransaction(JobQueue.enqueue({ organizationId: ORG, jobType: "sepa_export", payload: { batchId: "kept" } }))
        expect(yield* countJobs).toBe(1)
      }).pipe(Effect.provide(queue)))

    it.effect("a job enqueued inside a span carries that span's trace", () =>
      Effect.gen(function* () {
        yield* reset
        const span = yield* Effect.makeSpanScoped("http POST /billing-runs")
        const job = yield* JobQueue.enqueue({ organizationId: ORG, jobType: "sepa_export", payload: { batchId: "traced" } }).pipe(
          Effect.withParentSpan(span)
        )
        expect(job.traceId).toBe(span.traceId)
        const sql = yield* SqlClient.SqlClient
        const [row] = yield* sql<{ parentSpanId: string }>`SELECT parent_span_id AS "parentSpanId" FROM job_queue WHERE id = ${job.id}`
        // The job's span will hang below the enqueue span, itself a child of the caller's.
        expect(row!.parentSpanId).toMatch(/^[0-9a-f]{16}$/)
        expect(row!.parentSpanId).not.toBe(span.spanId)
      }).pipe(Effect.provide(queue), Effect.scoped))

    it.effect("job ids are time-ordered UUIDv7s, from JobQueue and from a plain SQL insert alike; a batch's ids are in order", () =>
      Effect.gen(function* () {
        yield* reset
        const sql = yield* SqlClient.SqlClient
        const before = Date.now()
        const batch = yield* JobQueue.enqueueMany(
          Array.from({ length: 50 }, (_, i) => ({ organizationId: ORG, jobType: "sepa_export", payload: { batchId: `b-${i}` } }))
        )
        // The runbook's insert by hand takes the column default.
        const [byHand] = yield* sql<{ id: string }>`
          INSERT INTO job_queue (organization_id, job_type, payload, status)
          VALUES (${ORG}, 'sepa_export', '{"batchId":"test-1"}'::jsonb, 'pending') RETURNING id`
        const ids = [...batch.map((job) => job.id), byHand!.id]
        for (const id of ids) {
          expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
          expect(uuidv7Millis(id)).toBeGreaterThanOrEqual(before - 1000) // the server's clock may differ a little
          expect(uuidv7Millis(id)).toBeLessThanOrEqual(Date.now() + 1000)
        }
        expect(batch.map((job) => job.id)).toEqual(batch.map((job) => job.id).slice().sort())
        expect(new Set(ids).size).toBe(ids.length)
      }).pipe(Effect.provide(queue)))

    it.effect("what enqueue and enqueueMany return is what the database holds, payloads verbatim, in input order", () =>
      Effect.gen(function* () {
        yield* reset
        const sql = yield* SqlClient.SqlClient
        const Free = JobDefinition.make("report_generation", Schema.Struct({ text: Schema.String, list: Schema.Array(Schema.Unknown) }))
        const tricky = { text: `quotes " ' \\ backslash, {braces}, "NULL", ümlaut €, emoji 🧾, tab\t newline\n`, list: [1, "two", null, { "a-b": [true] }] }
        const runAt = new Date(Date.now() + 3_600_000)
        const inputs = [
          { organizationId: ORG, jobType: "report_generation", payload: tricky, runAt, priority: 7, maxAttempts: 5, createdBy: USER, idempotencyKey: "key-1" },
          { organizationId: ORG, jobType: "report_generation", payload: { text: "", list: [] } },
          { organizationId: ORG, jobType: "report_generation", payload: { text: "x", list: [[]] }, idempotencyKey: "key-2" }
        ]
        const batch = yield* JobQueue.enqueueMany(inputs).pipe(Effect.provide(JobQueue.layer([Free])))
        const single = yield* JobQueue.enqueue({ ...inputs[0]!, idempotencyKey: "key-3" }).pipe(Effect.provide(JobQueue.layer([Free])))
        const rows = yield* sql<{
          id: string; jobType: string; organizationId: string; status: string; runAt: Date; createdAt: Date
          idempotencyKey: string | null; traceId: string; payload: unknown; priority: number; maxAttempts: number; createdBy: string | null
        }>`SELECT id, job_type AS "jobType", organization_id AS "organizationId", status, run_at AS "runAt", created_at AS "createdAt",
                  idempotency_key AS "idempotencyKey", trace_id AS "traceId", payload, priority, max_attempts AS "maxAttempts",
                  created_by AS "createdBy"
           FROM job_queue`
        const byId = new Map(rows.map((row) => [row.id, row]))
        const returned = [...batch, single]
        expect(returned.map((job) => byId.has(job.id))).toEqual([true, true, true, true])
        for (const job of returned) {
          const { payload: _payload, priority: _priority, maxAttempts: _maxAttempts, createdBy: _createdBy, ...stored } = byId.get(job.id)!
          expect(job).toEqual({ ...stored, existing: false })
        }
        expect(returned.map((job) => byId.get(job.id)!.payload)).toEqual([...inputs.map((input) => input.payload), tricky])
        expect(byId.get(batch[0]!.id)).toMatchObject({ runAt, priority: 7, maxAttempts: 5, createdBy: USER, idempotencyKey: "key-1" })
        expect(byId.get(batch[1]!.id)).toMatchObject({ priority: 0, maxAttempts: 3, createdBy: null, idempotencyKey: null })
        // Rows were inserted in input order.
        const order = yield* sql<{ id: string }>`SELECT id FROM job_queue ORDER BY ctid`
        expect(order.map((row) => row.id)).toEqual(returned.map((job) => job.id))
      }))

    it.effect("a payload Schema that decodes asynchronously works too, and its errors are named", () =>
      Effect.gen(function* () {
        yield* reset
        // A schema whose check cannot run synchronously (e.g. it asks a service): enqueue takes the Effect path.
        const Checked = Schema.transformOrFail(Schema.Struct({ batchId: Schema.String }), Schema.Struct({ batchId: Schema.String }), {
          strict: true,
          decode: (value, _, ast) =>
            Effect.flatMap(Effect.promise(() => Promise.resolve(value.batchId !== "forbidden")), (ok) =>
              ok ? Effect.succeed(value) : Effect.fail(new ParseResult.Type(ast, value, "this batch is forbidden"))
            ),
          encode: ParseResult.succeed
        })
        const queue = JobQueue.layer([JobDefinition.make("sepa_export", Checked)])
        const jobs = yield* JobQueue.enqueueMany([
          { organizationId: ORG, jobType: "sepa_export", payload: { batchId: "a" } },
          { organizationId: ORG, jobType: "sepa_export", payload: { batchId: "b" } }
        ]).pipe(Effect.provide(queue))
        expect(jobs).toHaveLength(2)
        const error = yield* JobQueue.enqueue({ organizationId: ORG, jobType: "sepa_export", payload: { batchId: "forbidden" } }).pipe(
          Effect.flip,
          Effect.provide(queue)
        )
        expect(error._tag).toBe("InvalidPayload")
        expect(error.message).toContain("this batch is forbidden")
        expect(yield* countJobs).toBe(2)
      }))
  })
})
