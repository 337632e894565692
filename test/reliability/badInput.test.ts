// Bad input never stops the worker or another job: each bad job ends as a
// clear error at enqueue, a refused row, or a `failed` job with the reason,
// while the good jobs beside it complete.
import { SqlClient } from "@effect/sql"
import { describe, expect, layer } from "@effect/vitest"
import { Effect, Schema } from "effect"
import * as QueueStats from "../../src/app/QueueStats.js"
import { jobsTable, statsReport } from "../../src/cli/format.js"
import { Handler, JobDefinition, JobQueue, Jobs, Worker } from "../../src/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { ORG } from "../support/jobs.js"
import { eventually } from "../support/live.js"

const Settlement = JobDefinition.make("settlement_calculation", Schema.Struct({ contractId: Schema.String, amountCents: Schema.Int }))

const INJECTION = `x'); DROP TABLE job_queue; --`
const INJECTIONS = [INJECTION, `' OR '1'='1`, `"; SELECT pg_sleep(10); --`, `$$; DELETE FROM audit_logs; $$`, `\\'; TRUNCATE job_runs; --`, `Robert'); DROP TABLE students;--`]

interface Row {
  readonly id: string
  readonly status: string
  readonly error: string | null
  readonly attempts: number
}

const rows = (ids: ReadonlyArray<string>) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<Row>`SELECT id, status, error, attempts FROM job_queue WHERE id IN ${sql.in(ids)}`
  ).pipe(Effect.map((found) => new Map(found.map((row) => [row.id, row]))))

/** Inserts a job by hand (the runbook's SQL), with the payload given as JSON text. */
const insertByHand = (payloadJson: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ id: string }>`INSERT INTO job_queue (organization_id, job_type, payload, status)
                        VALUES (${ORG}, 'settlement_calculation', ${payloadJson}::jsonb, 'pending') RETURNING id`
  ).pipe(Effect.map((inserted) => inserted[0]!.id))

/** The text of the database's error for a statement that must fail. */
const refused = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  effect.pipe(
    Effect.flip,
    Effect.map((error) => {
      const cause = (error as { cause?: { message?: string } }).cause
      return cause?.message ?? String(error)
    })
  )

describe("bad input", () => {
  layer(TestDatabase.layer(), { excludeTestServices: true })((it) => {
    it.effect("payloads inserted by hand that do not fit (Schema, null, not an object, 10 MB) fail with the reason; the good jobs beside them complete", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        const seen: Array<unknown> = []
        const handler = Handler.make(Settlement, { run: (payload) => Effect.sync(() => seen.push(payload.contractId.length)) })
        const huge = "x".repeat(10 * 1024 * 1024)
        const bad = {
          wrongType: yield* insertByHand(JSON.stringify({ contractId: "c-1", amountCents: "12.50" })),
          missingField: yield* insertByHand(JSON.stringify({ contractId: "c-1" })),
          jsonNull: yield* insertByHand("null"),
          array: yield* insertByHand("[1, 2]"),
          string: yield* insertByHand(JSON.stringify("a string")),
          number: yield* insertByHand("42"),
          hugeInvalid: yield* insertByHand(JSON.stringify({ contractId: "c-1", amountCents: huge })),
          // Deeper than describing it goes without overflowing the call stack.
          deep: yield* insertByHand(`{"contractId": "c-1", "amountCents": ${"[".repeat(5000)}${"]".repeat(5000)}}`)
        }
        const good = [
          yield* insertByHand(JSON.stringify({ contractId: "c-2", amountCents: 100 })),
          // 10 MB, but it fits the Schema: it runs like any other job.
          yield* insertByHand(JSON.stringify({ contractId: huge, amountCents: 1 })),
          yield* insertByHand(JSON.stringify({ contractId: "c-3", amountCents: -5, extra: { nested: [1, 2, 3] } }))
        ]
        const worker = yield* Worker.make({ handlers: [handler], pollInterval: "100 millis", concurrency: 3 })
        const all = [...Object.values(bad), ...good]
        yield* eventually(
          Effect.map(rows(all), (found) => [...found.values()].every((row) => row.status === "completed" || row.status === "failed")),
          "every job finished",
          "30 seconds"
        )
        const found = yield* rows(all)
        for (const id of good) expect(found.get(id)).toMatchObject({ status: "completed", error: null })
        expect(seen.sort((a, b) => Number(a) - Number(b))).toEqual([3, 3, huge.length])
        const errorOf = (id: string) => {
          const row = found.get(id)!
          expect(row).toMatchObject({ status: "failed", attempts: 1 }) // failed at once: retrying cannot fix a payload
          return row.error!
        }
        expect(errorOf(bad.wrongType)).toMatch(/\["amountCents"\].*Expected number, actual "12.50"/)
        expect(errorOf(bad.missingField)).toMatch(/\["amountCents"\].* is missing/)
        expect(errorOf(bad.jsonNull)).toContain("invalid payload: Expected { readonly contractId: string; readonly amountCents: Int }, actual null")
        expect(errorOf(bad.array)).toContain("actual [1,2]")
        expect(errorOf(bad.string)).toContain(`actual "a string"`)
        expect(errorOf(bad.number)).toContain("actual 42")
        // The reason names the field but does not copy 10 MB into the error column, the audit trail and the log.
        const hugeError = errorOf(bad.hugeInvalid)
        expect(hugeError).toContain(`["amountCents"]`)
        expect(hugeError.length).toBeLessThan(2_000)
        expect(hugeError).toMatch(/… \(\d+ more characters\)$/)
        expect(errorOf(bad.deep)).toBe(`invalid payload: payload["amountCents"]${"[0]".repeat(19)}…(1980 levels more) nests deeper than 2000 levels`)
        expect((yield* worker.status).claiming).toBe(true)
      }).pipe(Effect.scoped), { timeout: 60_000 })

    it.effect("enqueue refuses bad options and types with a message and writes nothing", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        const base = { organizationId: ORG, jobType: "settlement_calculation", payload: { contractId: "c", amountCents: 1 } }
        const message = (input: Partial<JobQueue.EnqueueInput>) =>
          JobQueue.enqueue({ ...base, ...input } as JobQueue.EnqueueInput).pipe(Effect.flip, Effect.map((error) => error.message))
        expect(yield* message({ jobType: "settlement_calculaton" })).toMatch(/^unknown job type "settlement_calculaton" \(registered: billing_run, .*settlement_calculation/)
        expect(yield* message({ jobType: "" })).toMatch(/^unknown job type "" \(registered: /)
        expect(yield* message({ organizationId: "org-1" })).toBe(`invalid job options: organizationId must be a UUID, got "org-1"`)
        expect(yield* message({ organizationId: "" })).toBe(`invalid job options: organizationId must be a UUID, got ""`)
        for (const maxAttempts of [-1, 0, 101, 1e9, 1.5, Number.NaN]) {
          expect(yield* message({ maxAttempts })).toBe(`invalid job options: maxAttempts must be a whole number from 1 to 100, got ${maxAttempts}`)
        }
        expect(yield* message({ runAt: new Date("not a date") })).toBe("invalid job options: runAt must be a valid Date, got Invalid Date")
        // Beyond what PostgreSQL can store (4713 BC): a message, not a database error.
        expect(yield* message({ runAt: new Date(-8_640_000_000_000_000) })).toBe(
          "invalid job options: runAt must be between 4713 BC and 294276 AD (what PostgreSQL stores), got -271821-04-20T00:00:00.000Z"
        )
        expect(yield* message({ runAt: new Date(Date.UTC(-4713, 10, 23, 23, 59, 59, 999)) })).toMatch(/^invalid job options: runAt must be between/)
        expect(yield* message({ payload: null })).toContain("invalid payload for job type \"settlement_calculation\"")
        expect(yield* message({ payload: { contractId: "c", amountCents: "1" } })).toContain(`["amountCents"]`)
        const [count] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM job_queue`
        expect(count!.n).toBe(0)
        // The earliest time PostgreSQL stores is accepted (and runs at once).
        yield* JobQueue.enqueue({ ...base, runAt: new Date(Date.UTC(-4713, 10, 24)) })
      }).pipe(Effect.provide(JobQueue.layer([Settlement]))), { timeout: 30_000 })

    it.effect("run_at is stored as the instant given, whatever the process's time zone (single and batch)", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        // Before 1893 Berlin's offset was local mean time, +00:53:28: a Date sent in local time with
        // an offset in whole minutes would land 28 seconds off.
        const previousZone = process.env.TZ
        process.env.TZ = "Europe/Berlin"
        const instants = [new Date("1800-06-01T12:00:00.123Z"), new Date(Date.UTC(-99, 0, 1, 0, 0, 7)), new Date("2031-03-30T01:30:00.500Z")]
        const job = (runAt: Date) => ({ organizationId: ORG, jobType: "settlement_calculation", payload: { contractId: "t", amountCents: 1 }, runAt })
        const single = yield* Effect.forEach(instants, (runAt) => JobQueue.enqueue(job(runAt))).pipe(
          Effect.ensuring(Effect.sync(() => (previousZone === undefined ? delete process.env.TZ : (process.env.TZ = previousZone))))
        )
        const batch = yield* JobQueue.enqueueMany(instants.map(job))
        const stored = (id: string) =>
          sql<{ ms: string }>`SELECT (extract(epoch FROM run_at) * 1000)::bigint::text AS ms FROM job_queue WHERE id = ${id}`.pipe(Effect.map(([row]) => Number(row!.ms)))
        expect(yield* Effect.forEach(single, (queued) => stored(queued.id))).toEqual(instants.map((date) => date.getTime()))
        expect(yield* Effect.forEach(batch, (queued) => stored(queued.id))).toEqual(instants.map((date) => date.getTime()))
      }).pipe(Effect.provide(JobQueue.layer([Settlement]))), { timeout: 30_000 })

    it.effect("run_at far in the past runs now; far in the future waits, visible as pending", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        const past = yield* JobQueue.enqueue({ organizationId: ORG, jobType: "settlement_calculation", payload: { contractId: "p", amountCents: 1 }, runAt: new Date("0001-01-01T00:00:00Z") })
        const future = yield* JobQueue.enqueue({ organizationId: ORG, jobType: "settlement_calculation", payload: { contractId: "f", amountCents: 1 }, runAt: new Date(8_640_000_000_000_000) })
        const infinite = (yield* sql<{ id: string }>`INSERT INTO job_queue (organization_id, job_type, payload, run_at)
          VALUES (${ORG}, 'settlement_calculation', '{"contractId":"i","amountCents":1}', 'infinity') RETURNING id`)[0]!.id
        // PostgreSQL's infinities (pg reads them as numbers, not Dates): read back as the extreme Dates, they
        // broke neither `stats`, `jobs list` nor the metrics, and -infinity runs at once.
        const minusInfinite = (yield* sql<{ id: string }>`INSERT INTO job_queue (organization_id, job_type, payload, run_at)
          VALUES (${ORG}, 'settlement_calculation', '{"contractId":"m","amountCents":1}', '-infinity') RETURNING id`)[0]!.id
        // A year PostgreSQL stores but a Date cannot hold (pg read it as an Invalid Date: `jobs list` threw): the latest Date.
        const farFuture = (yield* sql<{ id: string }>`INSERT INTO job_queue (organization_id, job_type, payload, run_at)
          VALUES (${ORG}, 'settlement_calculation', '{"contractId":"y","amountCents":1}', '280000-01-01T00:00:00Z') RETURNING id`)[0]!.id
        const stats = yield* QueueStats.collect([])
        expect(stats.oldestRunnable).toMatchObject({ jobId: minusInfinite, runAt: new Date(-8.64e15) })
        const listed = yield* Jobs.list({ status: "pending" })
        expect(listed.find((job) => job.id === infinite)?.runAt).toEqual(new Date(8.64e15))
        expect(listed.find((job) => job.id === farFuture)?.runAt).toEqual(new Date(8.64e15))
        expect((yield* Jobs.get(farFuture)).job?.runAt).toEqual(new Date(8.64e15))
        expect(jobsTable(listed)).toContain("+275760-09-13T00:00:00.000Z")
        expect(statsReport(stats)).toContain(minusInfinite)
        yield* Worker.make({ handlers: [Handler.make(Settlement, { run: () => Effect.void })], pollInterval: "100 millis" })
        yield* eventually(Effect.map(rows([past.id, minusInfinite]), (found) => found.get(past.id)?.status === "completed" && found.get(minusInfinite)?.status === "completed"), "the past jobs ran")
        yield* Effect.sleep("300 millis")
        const found = yield* rows([future.id, infinite, farFuture])
        expect(found.get(future.id)).toMatchObject({ status: "pending", attempts: 0 })
        expect(found.get(infinite)).toMatchObject({ status: "pending", attempts: 0 })
        expect(found.get(farFuture)).toMatchObject({ status: "pending", attempts: 0 })
      }).pipe(Effect.provide(JobQueue.layer([Settlement])), Effect.scoped), { timeout: 30_000 })

    it.effect("rows inserted by hand with a bad status, attempts, organization or type are refused by the database, naming the rule", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const insert = (columns: Record<string, unknown>) => {
          const row = { organization_id: ORG, job_type: "settlement_calculation", payload: "{}", ...columns }
          return refused(sql`INSERT INTO job_queue ${sql.insert(row)}`)
        }
        expect(yield* insert({ status: "done" })).toContain(`violates check constraint "job_queue_status_valid"`)
        // Processing without a worker, or without a lease (no rescue could return it, 0039).
        expect(yield* insert({ status: "processing" })).toContain(`violates check constraint "job_queue_processing_is_locked"`)
        expect(yield* insert({ status: "processing", locked_by: "gone-worker" })).toContain(`violates check constraint "job_queue_processing_is_locked"`)
        expect(yield* insert({ status: "" })).toContain("job_queue_status_valid")
        expect(yield* insert({ status: "PENDING" })).toContain("job_queue_status_valid")
        expect(yield* insert({ max_attempts: -1 })).toContain(`violates check constraint "job_queue_max_attempts_range"`)
        expect(yield* insert({ max_attempts: 1_000_000 })).toContain("job_queue_max_attempts_range")
        expect(yield* insert({ max_attempts: 3_000_000_000 })).toContain(`out of range for type integer`)
        // Attempts that no claim could add one to (every claim failed as a whole on it) or that leave no attempt (0034).
        expect(yield* insert({ attempts: 2_147_483_647 })).toContain(`violates check constraint "job_queue_max_attempts_reach_attempts"`)
        expect(yield* insert({ attempts: 3, max_attempts: 3 })).toContain(`violates check constraint "job_queue_pending_attempts_below_max"`)
        expect(yield* insert({ organization_id: "org-1" })).toContain(`invalid input syntax for type uuid: "org-1"`)
        expect(yield* insert({ job_type: "" })).toContain(`unknown job type ""`)
        expect(yield* insert({ job_type: "sepa_exprot" })).toContain(`unknown job type "sepa_exprot"`)
        expect(yield* insert({ run_at: "yesterday-ish" })).toContain(`invalid input syntax for type timestamp with time zone`)
        // A running job cannot be set to a status outside the four either.
        const [job] = yield* sql<{ id: string }>`INSERT INTO job_queue (organization_id, job_type) VALUES (${ORG}, 'dunning_run') RETURNING id`
        expect(yield* refused(sql`UPDATE job_queue SET status = 'cancelled' WHERE id = ${job!.id}`)).toContain("job_queue_status_valid")
      }), { timeout: 30_000 })

    it.effect("SQL injection strings in every enqueue option and payload field: refused where a UUID or type is expected, stored and handed over verbatim elsewhere", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        const Free = JobDefinition.make("report_generation", Schema.Struct({ title: Schema.String, tags: Schema.Array(Schema.String), nested: Schema.Struct({ note: Schema.String }) }))
        const received: Array<unknown> = []
        const handler = Handler.make(Free, { run: (payload, job) => Effect.sync(() => received.push({ payload, key: job.idempotencyKey })) })
        const queue = JobQueue.layer([Free])
        for (const text of INJECTIONS) {
          const base = { organizationId: ORG, jobType: "report_generation", payload: { title: text, tags: [text], nested: { note: text } } }
          expect((yield* JobQueue.enqueue({ ...base, organizationId: text }).pipe(Effect.flip, Effect.provide(queue)))._tag).toBe("InvalidJobOptions")
          expect((yield* JobQueue.enqueue({ ...base, createdBy: text }).pipe(Effect.flip, Effect.provide(queue)))._tag).toBe("InvalidJobOptions")
          const wrongType = yield* JobQueue.enqueue({ ...base, jobType: text }).pipe(Effect.flip, Effect.provide(queue))
          expect(wrongType.message).toContain(`unknown job type "${text}"`)
          yield* JobQueue.enqueue({ ...base, idempotencyKey: text }).pipe(Effect.provide(queue))
        }
        yield* Worker.make({ handlers: [handler], pollInterval: "100 millis" })
        yield* eventually(Effect.sync(() => received.length === INJECTIONS.length), "every job ran", "20 seconds")
        expect(new Set(received)).toEqual(new Set(INJECTIONS.map((text) => ({ payload: { title: text, tags: [text], nested: { note: text } }, key: text }))))
        // a completion is written after its handler returned: wait for the last one to land
        const completed = Effect.map(sql<{ n: number }>`SELECT count(*)::int AS n FROM job_queue WHERE status = 'completed'`, (rows) => rows[0]!.n)
        yield* eventually(Effect.map(completed, (n) => n === INJECTIONS.length), "every job completed")
        expect(yield* completed).toBe(INJECTIONS.length)
        const [audit] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM audit_logs`
        expect(audit!.n).toBeGreaterThan(0)
      }).pipe(Effect.scoped), { timeout: 30_000 })

    it.effect("handlers that throw a string, null, undefined or a number, fail with a non-Error, or never return: retried with a readable reason, then failed; the worker goes on", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        const Odd = JobDefinition.make("dunning_run", Schema.Struct({ kind: Schema.String }))
        const thrown: Record<string, unknown> = { string: "ledger locked", null: null, undefined: undefined, number: 42 }
        const handler = Handler.make(Odd, {
          timeout: "300 millis",
          run: (payload): Effect.Effect<void, unknown> => {
            if (payload.kind in thrown) return Effect.sync(() => { throw thrown[payload.kind] })
            if (payload.kind === "failString") return Effect.fail("quota exceeded")
            if (payload.kind === "failObject") return Effect.fail({ code: 7 })
            if (payload.kind === "never") return Effect.never
            return Effect.void
          }
        })
        const kinds = [...Object.keys(thrown), "failString", "failObject", "never", "ok"]
        const jobs = yield* JobQueue.enqueueMany(kinds.map((kind) => ({ organizationId: ORG, jobType: "dunning_run", payload: { kind }, maxAttempts: 2 }))).pipe(
          Effect.provide(JobQueue.layer([Odd]))
        )
        const worker = yield* Worker.make({ handlers: [handler], pollInterval: "100 millis", retryBackoff: "50 millis", concurrency: 4 })
        const ids = jobs.map((job) => job.id)
        yield* eventually(
          Effect.map(rows(ids), (found) => [...found.values()].every((row) => row.status === "completed" || row.status === "failed")),
          "every job finished",
          "20 seconds"
        )
        const found = yield* rows(ids)
        const errorOf = (kind: string) => found.get(ids[kinds.indexOf(kind)]!)!
        expect(errorOf("ok")).toMatchObject({ status: "completed" })
        expect(errorOf("string")).toMatchObject({ status: "failed", attempts: 2, error: "defect: ledger locked" })
        expect(errorOf("null")).toMatchObject({ status: "failed", attempts: 2, error: "defect: null" })
        expect(errorOf("undefined")).toMatchObject({ status: "failed", attempts: 2, error: "defect: undefined" })
        expect(errorOf("number")).toMatchObject({ status: "failed", attempts: 2, error: "defect: 42" })
        expect(errorOf("failString")).toMatchObject({ status: "failed", attempts: 2, error: "quota exceeded" })
        expect(errorOf("failObject")).toMatchObject({ status: "failed", attempts: 2, error: `{"code":7}` })
        expect(errorOf("never")).toMatchObject({ status: "failed", attempts: 2, error: `HandlerTimeout: handler for "dunning_run" timed out after 300 ms` })
        expect((yield* worker.status).claiming).toBe(true)
      }).pipe(Effect.scoped), { timeout: 30_000 })
  })
})
