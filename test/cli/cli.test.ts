// The operator CLI, command by command: what it does on success (read back
// from the database), and what it says and returns for each bad input.
// Exit codes: 0 done, 1 the command failed, 2 usage.
import { SqlClient } from "@effect/sql"
import { describe, expect, it, layer } from "@effect/vitest"
import { Effect } from "effect"
import pg from "pg"
import { migrationSets } from "../../src/app/jobs.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { auditEvents, jobRow } from "../support/jobs.js"
import { cli } from "./support.js"

const ORG = "3f2c1e4a-9b7d-4c2e-8f1a-0d6b5e4c3a21"
const OTHER_ORG = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
const ACTOR = "8d0b6c1e-2f4a-4e5b-9c3d-7a1f0e2d4c6b"
const MISSING = "00000000-0000-4000-8000-000000000000"

const run = (...args: ReadonlyArray<string>) =>
  Effect.flatMap(TestDatabase, ({ url }) => cli({ DATABASE_URL: url }, ...args))

/** Enqueues through the CLI (--json) and returns the job's id. */
const enqueue = (type: string, payload: unknown, ...extra: ReadonlyArray<string>) =>
  Effect.map(run("enqueue", "--org", ORG, "--type", type, "--payload", JSON.stringify(payload), "--json", ...extra), (result) => {
    expect(result).toMatchObject({ code: 0, stderr: "" })
    return (JSON.parse(result.stdout) as { id: string }).id
  })

/** Claims the job as a worker would (processing, job_runs row, job_started). */
const claim = (jobType: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => sql<{ id: string }>`SELECT id FROM claim_next_job('test-worker', ARRAY[${jobType}]::text[], 1)`)

const auditEntry = (jobId: string, event: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ actor: string; details: Record<string, unknown> }>`SELECT actor, details FROM audit_logs WHERE job_id = ${jobId} AND event = ${event}`
  ).pipe(Effect.map((rows) => rows[0]))

describe("skiplock CLI", () => {
  layer(TestDatabase.layer({ migrations: migrationSets }), { excludeTestServices: true })((it) => {
    it.effect("migrate on a migrated database applies nothing and says so", () =>
      Effect.gen(function* () {
        expect(yield* run("migrate")).toEqual({ code: 0, stdout: "migrations are up to date", stderr: "" })
      }))

    it.effect("migrate warns about stored data a migration could not settle: customers whose IBAN no bank issues (billing 0009)", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        // As billing 0009 leaves it over a customer stored before it with check digits 99.
        yield* sql`ALTER TABLE customers DROP CONSTRAINT customers_iban_valid`
        yield* sql`INSERT INTO organizations (id, name) VALUES (${ORG}, 'Stadtwerke Test') ON CONFLICT (id) DO NOTHING`
        yield* sql`INSERT INTO customers (organization_id, customer_number, name, iban, mandate_reference, mandate_signed_on)
                   VALUES (${ORG}, 'K-OLD-1', 'Alt Kunde', 'DE99370400440000000024', 'M-OLD-1', '2024-01-01')`
        yield* sql`ALTER TABLE customers ADD CONSTRAINT customers_iban_valid CHECK (iban_is_valid(iban)) NOT VALID`
        const warned = yield* run("migrate")
        expect(warned).toMatchObject({ code: 0, stdout: "migrations are up to date" })
        expect(warned.stderr).toContain("warning: customers stored before billing 0009 may have an IBAN no bank issues (customers_iban_valid is NOT VALID)")
        // Corrected and validated: no warning any more.
        yield* sql`UPDATE customers SET iban = 'DE89370400440532013000' WHERE customer_number = 'K-OLD-1'`
        yield* sql`ALTER TABLE customers VALIDATE CONSTRAINT customers_iban_valid`
        expect(yield* run("migrate")).toEqual({ code: 0, stdout: "migrations are up to date", stderr: "" })
        yield* sql`DELETE FROM customers WHERE customer_number = 'K-OLD-1'`
      }))

    it.effect("enqueue writes a pending job with the defaults of the runbook, and prints its id", () =>
      Effect.gen(function* () {
        const result = yield* run("enqueue", "--org", ORG, "--type", "sepa_export", "--payload", '{"batchId":"test-1"}')
        expect(result.code).toBe(0)
        expect(result.stdout).toMatch(/^enqueued job [0-9a-f-]{36} \(sepa_export, pending, runs at .+, trace [0-9a-f]{32}\)$/)
        const id = /job ([0-9a-f-]{36})/.exec(result.stdout)![1]!
        const sql = yield* SqlClient.SqlClient
        const [row] = yield* sql<{ payload: unknown; maxAttempts: number; status: string; organizationId: string }>`
          SELECT payload, max_attempts AS "maxAttempts", status, organization_id AS "organizationId" FROM job_queue WHERE id = ${id}`
        expect(row).toEqual({ payload: { batchId: "test-1" }, maxAttempts: 3, status: "pending", organizationId: ORG })
      }))

    it.effect("enqueue takes --run-at, --max-attempts, --created-by and --idempotency-key", () =>
      Effect.gen(function* () {
        const id = yield* enqueue("sepa_export", { batchId: "later" }, "--run-at", "2030-01-02T03:04:05Z", "--max-attempts", "5", "--created-by", ACTOR, "--idempotency-key", "batch-later")
        const sql = yield* SqlClient.SqlClient
        const [row] = yield* sql<{ runAt: Date; maxAttempts: number; createdBy: string; idempotencyKey: string }>`
          SELECT run_at AS "runAt", max_attempts AS "maxAttempts", created_by AS "createdBy", idempotency_key AS "idempotencyKey"
          FROM job_queue WHERE id = ${id}`
        expect(row).toEqual({ runAt: new Date("2030-01-02T03:04:05Z"), maxAttempts: 5, createdBy: ACTOR, idempotencyKey: "batch-later" })
        const again = yield* run("enqueue", "--org", ORG, "--type", "sepa_export", "--payload", "{}", "--idempotency-key", "batch-later")
        expect(again).toMatchObject({ code: 0, stdout: `job ${id} already exists with idempotency key batch-later (sepa_export, pending); nothing enqueued` })
        // An offset is taken as given: 06:00 in Berlin's summer time is 04:00 UTC.
        const berlin = yield* enqueue("sepa_export", { batchId: "berlin" }, "--run-at", "2030-06-03T06:00+02:00")
        const [berlinRow] = yield* sql<{ runAt: Date }>`SELECT run_at AS "runAt" FROM job_queue WHERE id = ${berlin}`
        expect(berlinRow!.runAt).toEqual(new Date("2030-06-03T04:00:00Z"))
        // A year below 100 is that year (Date.UTC would read 0000 as 1900, and 1900-02-29 does not exist).
        const early = yield* enqueue("sepa_export", { batchId: "early" }, "--run-at", "0000-02-29T00:00:00Z")
        // (Read as text: pg's date parser reads that day of 1 BC back as March 1st.)
        const [earlyRow] = yield* sql<{ runAt: string }>`SELECT (run_at AT TIME ZONE 'UTC')::text AS "runAt" FROM job_queue WHERE id = ${early}`
        expect(earlyRow!.runAt).toBe("0001-02-29 00:00:00 BC")
      }))

    it.effect("enqueue: a bad organization id or JSON is a usage error (2); an unknown type or a rejected payload fails (1)", () =>
      Effect.gen(function* () {
        const badOrg = yield* run("enqueue", "--org", "org-uuid", "--type", "sepa_export", "--payload", "{}")
        expect(badOrg.code).toBe(2)
        expect(badOrg.stderr).toContain('--org must be a UUID like 3f2c1e4a-9b7d-4c2e-8f1a-0d6b5e4c3a21, got "org-uuid"')

        const badJson = yield* run("enqueue", "--org", ORG, "--type", "sepa_export", "--payload", "{batchId: test}")
        expect(badJson.code).toBe(2)
        expect(badJson.stderr).toContain("--payload is not valid JSON")

        // A number JSON.parse would change (rounded past 2^53 however it is written, more digits than a double
        // holds, beyond a double either way) is refused, not stored changed; the same digits in a string, and safe
        // integers and decimals however they are written, pass.
        const before = yield* Effect.flatMap(SqlClient.SqlClient, (sql) => sql<{ n: number }>`SELECT count(*)::int AS n FROM job_queue`)
        for (const [payload, number] of [
          ['{"amountCents":12345678901234567890}', "12345678901234567890"],
          ['{"n":1e400}', "1e400"],
          ['{"list":[1, -9007199254740993]}', "-9007199254740993"],
          ['{"amountCents": 9007199254740993.0}', "9007199254740993.0"],
          ['{"amountCents": 9007199254740993e0}', "9007199254740993e0"],
          ['{"amount": 12345678901234567.89}', "12345678901234567.89"],
          ['{"rate": 1e-400}', "1e-400"]
        ] as const) {
          const changed = yield* run("enqueue", "--org", ORG, "--type", "report_generation", "--payload", payload)
          expect(changed.code).toBe(2)
          expect(changed.stderr).toContain(`--payload has the number ${number}, which a JSON number (a double) cannot carry exactly`)
        }
        expect(yield* Effect.flatMap(SqlClient.SqlClient, (sql) => sql<{ n: number }>`SELECT count(*)::int AS n FROM job_queue`)).toEqual(before)
        const exact = yield* run("enqueue", "--org", ORG, "--type", "report_generation", "--payload",
          '{"id":"12345678901234567890","n":9007199254740991,"rate":0.19,"fee":2.50,"tiny":5e-324,"big":1.5E+21,"zero":-0.0}', "--json")
        expect(exact.code).toBe(0)
        const [stored] = yield* Effect.flatMap(SqlClient.SqlClient, (sql) =>
          sql<{ payload: unknown }>`DELETE FROM job_queue WHERE id = ${JSON.parse(exact.stdout).id} RETURNING payload`)
        expect(stored!.payload).toEqual({ id: "12345678901234567890", n: 9007199254740991, rate: 0.19, fee: 2.5, tiny: 5e-324, big: 1.5e21, zero: 0 })

        // Without its zone a time would be read in the CLI machine's zone: refused, as is a date alone.
        for (const runAt of ["2030-01-02T03:04:05", "2030-01-02", "2030-02-30T03:04:05Z", "tomorrow"]) {
          const unzoned = yield* run("enqueue", "--org", ORG, "--type", "sepa_export", "--payload", "{}", "--run-at", runAt)
          expect(unzoned.code).toBe(2)
          expect(unzoned.stderr).toContain(`--run-at must be a time with its zone, like 2025-04-01T06:00:00Z or 2025-04-01T08:00:00+02:00, got "${runAt}"`)
        }

        const missingType = yield* run("enqueue", "--org", ORG, "--payload", "{}")
        expect(missingType.code).toBe(2)
        expect(missingType.stderr).toContain("--type")

        const unknownType = yield* run("enqueue", "--org", ORG, "--type", "sepa_exprot", "--payload", "{}")
        expect(unknownType).toMatchObject({ code: 1, stdout: "" })
        expect(unknownType.stderr).toBe(
          'skiplock: unknown job type "sepa_exprot" (registered: billing_run, bulk_invoice_upsert, dunning_run, report_generation, sepa_export, settlement_calculation)'
        )

        const notAnObject = yield* run("enqueue", "--org", ORG, "--type", "sepa_export", "--payload", "[1,2]")
        expect(notAnObject.code).toBe(1)
        expect(notAnObject.stderr).toContain("the payload must be a JSON object, got an array")

        // billing_run has a Schema in the application: the payload is checked before it is written.
        const badPeriod = yield* run("enqueue", "--org", ORG, "--type", "billing_run", "--payload", '{"billingPeriod":"2025-13"}')
        expect(badPeriod.code).toBe(1)
        expect(badPeriod.stderr).toContain('invalid payload for job type "billing_run"')
        expect(badPeriod.stderr).toContain('["billingPeriod"]')

        // Out of range is a usage error, as for --limit.
        const attempts = yield* run("enqueue", "--org", ORG, "--type", "sepa_export", "--payload", "{}", "--max-attempts", "0")
        expect(attempts.code).toBe(2)
        expect(attempts.stderr).toContain("--max-attempts must be from 1 to 100, got 0")

        const sql = yield* SqlClient.SqlClient
        const [count] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM job_queue WHERE job_type = 'billing_run' OR payload = '[1,2]'::jsonb`
        expect(count!.n).toBe(0)
      }))

    it.effect("demo seed: customers out of range or a period that is not a month is a usage error (2)", () =>
      Effect.gen(function* () {
        const customers = yield* run("demo", "seed", "--customers", "0")
        expect(customers.code).toBe(2)
        expect(customers.stderr).toContain("--customers must be from 1 to 5000, got 0")
        const month = yield* run("demo", "seed", "--period", "2025-13")
        expect(month.code).toBe(2)
        expect(month.stderr).toContain('--period must be a month as YYYY-MM, got "2025-13"')
      }))

    it.effect("jobs list shows the newest jobs first, filtered by status, type and organization", () =>
      Effect.gen(function* () {
        const first = yield* enqueue("report_generation", { n: 1 })
        const second = yield* enqueue("report_generation", { n: 2 })
        yield* run("enqueue", "--org", OTHER_ORG, "--type", "report_generation", "--payload", "{}")

        const table = yield* run("jobs", "list", "--type", "report_generation", "--org", ORG)
        expect(table.code).toBe(0)
        const lines = table.stdout.split("\n")
        expect(lines[0]).toMatch(/^ID\s+TYPE\s+STATUS\s+ATTEMPTS\s+ORGANIZATION\s+RUN AT\s+CREATED AT\s+ERROR$/)
        expect(lines.slice(1).map((line) => line.split(/\s+/)[0])).toEqual([second, first])

        const json = yield* run("jobs", "list", "--type", "report_generation", "--status", "pending", "--limit", "1", "--json")
        const listed = JSON.parse(json.stdout) as ReadonlyArray<{ organizationId: string; jobType: string; status: string }>
        expect(listed).toHaveLength(1)
        expect(listed[0]).toMatchObject({ organizationId: OTHER_ORG, jobType: "report_generation", status: "pending" })
        const none = yield* run("jobs", "list", "--status", "failed", "--type", "report_generation")
        expect(none).toEqual({ code: 0, stdout: "no jobs", stderr: "" })

        const [claimed] = yield* claim("report_generation")
        const running = JSON.parse((yield* run("jobs", "list", "--status", "processing", "--json")).stdout)
        expect(running).toEqual([expect.objectContaining({ id: claimed!.id, jobType: "report_generation", status: "processing" })])
      }))

    it.effect("jobs list: a bad status, organization or limit is a usage error (2); an unknown type fails (1)", () =>
      Effect.gen(function* () {
        expect((yield* run("jobs", "list", "--status", "done")).code).toBe(2)
        expect((yield* run("jobs", "list", "--org", "nope")).code).toBe(2)
        const limit = yield* run("jobs", "list", "--limit", "0")
        expect(limit.code).toBe(2)
        expect(limit.stderr).toContain("--limit must be from 1 to 1000, got 0")
        const unknown = yield* run("jobs", "list", "--type", "nope")
        expect(unknown.code).toBe(1)
        expect(unknown.stderr).toContain('unknown job type "nope"')
      }))

    it.effect("jobs show prints the job, its job_runs row and its audit trail in order", () =>
      Effect.gen(function* () {
        const id = yield* enqueue("settlement_calculation", { period: "2025-01" })
        const pending = yield* run("jobs", "show", id)
        expect(pending.code).toBe(0)
        expect(pending.stdout).toContain(`job ${id}`)
        expect(pending.stdout).toContain("none yet: the job has not been claimed")

        yield* claim("settlement_calculation")
        const text = yield* run("jobs", "show", id)
        expect(text.stdout).toMatch(/status\s+processing/)
        expect(text.stdout).toMatch(/run \(job_runs\)\n\s+status\s+running/)
        expect(text.stdout).toMatch(/audit trail \(1 entry, oldest first\)\n\s+TIME\s+EVENT\s+ACTOR\s+DETAILS\n\s+\S+\s+job_started\s+test-worker/)

        const json = JSON.parse((yield* run("jobs", "show", id, "--json")).stdout)
        expect(json.job).toMatchObject({ id, jobType: "settlement_calculation", status: "processing", attempts: 1, payload: { period: "2025-01" } })
        expect(json.run).toMatchObject({ jobId: id, status: "running", idempotencyStatus: "in_progress" })
        expect(json.audit.map((entry: { event: string }) => entry.event)).toEqual(["job_started"])

        // Pruned after the retention: its run and audit trail are still shown, and why the row is gone.
        expect((yield* run("jobs", "fail", id, "--reason", "done with it")).code).toBe(0)
        const sql = yield* SqlClient.SqlClient
        yield* sql`SELECT prune_finished_jobs(now() + interval '1 day')`
        const pruned = yield* run("jobs", "show", id)
        expect(pruned.code).toBe(0)
        expect(pruned.stdout).toContain(`job ${id}\n  its row is gone from job_queue: finished jobs are deleted after the retention`)
        expect(pruned.stdout).toMatch(/run \(job_runs\)\n\s+status\s+failed/)
        expect(pruned.stdout).toMatch(/audit trail \(2 entries, oldest first\)/)
        expect(JSON.parse((yield* run("jobs", "show", id, "--json")).stdout)).toMatchObject({ jobId: id, job: null, run: { status: "failed" } })
      }))

    it.effect("jobs show: an id that is not a UUID is a usage error (2); an unknown id fails (1)", () =>
      Effect.gen(function* () {
        const bad = yield* run("jobs", "show", "12345")
        expect(bad.code).toBe(2)
        expect(bad.stderr).toContain('the job id must be a UUID like 3f2c1e4a-9b7d-4c2e-8f1a-0d6b5e4c3a21, got "12345"')
        expect(yield* run("jobs", "show", MISSING)).toEqual({ code: 1, stdout: "", stderr: `skiplock: no job with id ${MISSING}` })
        expect((yield* run("jobs", "show")).code).toBe(2)
      }))

    it.effect("jobs fail sets a pending job to failed and documents the reason in the audit log, in one step", () =>
      Effect.gen(function* () {
        const id = yield* enqueue("dunning_run", { level: 1 })
        const result = yield* run("jobs", "fail", id, "--reason", "customer data broken, see ticket 4711", "--actor", ACTOR)
        expect(result).toEqual({ code: 0, stdout: `job ${id}: pending -> failed (audit: job_failed_manually)`, stderr: "" })
        expect(yield* jobRow(id)).toMatchObject({ status: "failed", error: "failed manually: customer data broken, see ticket 4711" })
        expect(yield* auditEvents(id)).toEqual(["job_failed_manually"])
        expect(yield* auditEntry(id, "job_failed_manually")).toMatchObject({
          actor: ACTOR,
          details: { reason: "customer data broken, see ticket 4711", previousStatus: "pending", jobType: "dunning_run" }
        })
      }))

    it.effect("jobs fail on a processing job: the job and its run are failed, the worker that held it is recorded", () =>
      Effect.gen(function* () {
        const id = yield* enqueue("bulk_invoice_upsert", { file: "a.csv" })
        yield* claim("bulk_invoice_upsert")
        const result = yield* run("jobs", "fail", id, "--reason", "stuck since the import server died")
        expect(result.code).toBe(0)
        expect(result.stdout).toBe(`job ${id}: processing -> failed (audit: job_failed_manually)`)
        expect(yield* jobRow(id)).toMatchObject({ status: "failed", lockedBy: null })
        const sql = yield* SqlClient.SqlClient
        const [runRow] = yield* sql<{ status: string; lastError: string }>`SELECT status, last_error AS "lastError" FROM job_runs WHERE job_id = ${id}`
        expect(runRow).toEqual({ status: "failed", lastError: "failed manually: stuck since the import server died" })
        const entry = yield* auditEntry(id, "job_failed_manually")
        expect(entry?.actor).toMatch(/^cli:/)
        expect(entry?.details).toMatchObject({ previousStatus: "processing", lockedBy: "test-worker" })
        expect(yield* auditEvents(id)).toEqual(["job_started", "job_failed_manually"])
      }))

    it.effect("jobs fail: a missing or empty reason, a bad id or actor is a usage error (2); an unknown id or a finished job fails (1)", () =>
      Effect.gen(function* () {
        const id = yield* enqueue("dunning_run", { level: 2 })
        expect((yield* run("jobs", "fail", id)).code).toBe(2)
        const empty = yield* run("jobs", "fail", id, "--reason", "  ")
        expect(empty.code).toBe(2)
        expect(empty.stderr).toContain("--reason must not be empty")
        expect((yield* run("jobs", "fail", "not-a-job", "--reason", "x")).code).toBe(2)
        const actor = yield* run("jobs", "fail", id, "--reason", "x", "--actor", "alice")
        expect(actor.code).toBe(2)
        expect(actor.stderr).toContain('--actor must be a UUID')
        expect(yield* run("jobs", "fail", MISSING, "--reason", "x")).toEqual({ code: 1, stdout: "", stderr: `skiplock: no job with id ${MISSING}` })
        expect((yield* run("jobs", "fail", id, "--reason", "first")).code).toBe(0)
        const again = yield* run("jobs", "fail", id, "--reason", "second")
        expect(again).toEqual({ code: 1, stdout: "", stderr: `skiplock: cannot fail job ${id}: it is failed (allowed: pending, processing)` })
        expect(yield* auditEvents(id)).toEqual(["job_failed_manually"])
      }))

    it.effect("jobs fail on a row another session holds gives up after 5 s, saying what to do, and changes nothing", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const id = yield* enqueue("dunning_run", { level: 1 })
        const holder = new pg.Client({ connectionString: url })
        yield* Effect.acquireRelease(Effect.promise(() => holder.connect()), () => Effect.promise(() => holder.end()))
        yield* Effect.promise(() => holder.query("BEGIN"))
        yield* Effect.promise(() => holder.query("SELECT id FROM job_queue WHERE id = $1 FOR UPDATE", [id]))
        const started = Date.now()
        const result = yield* run("jobs", "fail", id, "--reason", "stuck")
        expect(Date.now() - started).toBeGreaterThanOrEqual(4_900)
        expect(result).toEqual({
          code: 1,
          stdout: "",
          stderr: `skiplock: cannot fail job ${id}: another session's open transaction held its row for 5 s; ` +
            "end that transaction (COMMIT or ROLLBACK there; the runbook's error handling, step 5, shows how to find it) and run the command again"
        })
        yield* Effect.promise(() => holder.query("ROLLBACK"))
        expect(yield* jobRow(id)).toMatchObject({ status: "pending" })
        expect(yield* auditEvents(id)).toEqual([])
        expect((yield* run("jobs", "fail", id, "--reason", "stuck")).code).toBe(0)
      }).pipe(Effect.scoped), { timeout: 30_000 })

    it.effect("jobs retry puts a failed job back to pending with fresh attempts, and a worker can claim it again", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue WHERE job_type = 'sepa_export'`
        const id = yield* enqueue("sepa_export", { batchId: "retry-me" })
        yield* claim("sepa_export")
        yield* sql`SELECT fail_job_attempt(${id}, 'test-worker', 1, 'bank rejected the file', false)`
        expect(yield* jobRow(id)).toMatchObject({ status: "failed", attempts: 1, error: "bank rejected the file" })

        const result = yield* run("jobs", "retry", id, "--reason", "bank fixed its certificate")
        expect(result).toEqual({ code: 0, stdout: `job ${id}: failed -> pending (audit: job_requeued)`, stderr: "" })
        expect(yield* jobRow(id)).toMatchObject({ status: "pending", attempts: 0, error: null })
        expect(yield* auditEntry(id, "job_requeued")).toMatchObject({
          details: { previousError: "bank rejected the file", previousAttempts: 1, reason: "bank fixed its certificate" }
        })
        const claimed = yield* claim("sepa_export")
        expect(claimed.map((job) => job.id)).toEqual([id])
        expect(yield* auditEvents(id)).toEqual(["job_started", "job_failed", "job_requeued", "job_started"])
      }))

    it.effect("jobs retry: only failed jobs (1 otherwise); a bad id is a usage error (2)", () =>
      Effect.gen(function* () {
        const id = yield* enqueue("dunning_run", { level: 3 })
        expect(yield* run("jobs", "retry", id)).toEqual({
          code: 1,
          stdout: "",
          stderr: `skiplock: cannot retry job ${id}: it is pending (allowed: failed)`
        })
        expect((yield* run("jobs", "retry", MISSING)).code).toBe(1)
        expect((yield* run("jobs", "retry", "x")).code).toBe(2)
      }))

    it.effect("jobs cancel fails a pending job with 'cancelled by', and only a pending one", () =>
      Effect.gen(function* () {
        const id = yield* enqueue("report_generation", { n: 99 })
        const result = yield* run("jobs", "cancel", id, "--reason", "duplicate request", "--actor", ACTOR)
        expect(result).toEqual({ code: 0, stdout: `job ${id}: pending -> failed (audit: job_cancelled)`, stderr: "" })
        expect(yield* jobRow(id)).toMatchObject({ status: "failed", error: `cancelled by ${ACTOR}: duplicate request` })
        expect(yield* auditEntry(id, "job_cancelled")).toMatchObject({ actor: ACTOR, details: { reason: "duplicate request" } })

        const again = yield* run("jobs", "cancel", id)
        expect(again).toEqual({ code: 1, stdout: "", stderr: `skiplock: cannot cancel job ${id}: it is failed (allowed: pending)` })
        expect((yield* run("jobs", "cancel", MISSING)).code).toBe(1)
        expect((yield* run("jobs", "cancel", "x")).code).toBe(2)
        // A reason, when given, must say something: for cancel and retry as for fail.
        for (const command of ["cancel", "retry"]) {
          const empty = yield* run("jobs", command, id, "--reason", " ")
          expect(empty.code).toBe(2)
          expect(empty.stderr).toContain("--reason must not be empty")
        }
      }))

    it.effect("stats counts jobs by type and status, names the oldest runnable job and types waiting without a handler", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        const [old] = yield* sql<{ id: string }>`
          INSERT INTO job_queue (organization_id, job_type, payload, run_at) VALUES (${ORG}, 'sepa_export', '{}', now() - interval '10 minutes') RETURNING id`
        yield* sql`INSERT INTO job_queue (organization_id, job_type, payload) VALUES (${ORG}, 'sepa_export', '{}'), (${ORG}, 'billing_run', '{}')`
        yield* sql`INSERT INTO job_queue (organization_id, job_type, payload, status, completed_at) VALUES (${ORG}, 'billing_run', '{}', 'completed', now())`

        const json = yield* run("stats", "--json")
        expect(json.code).toBe(0)
        const stats = JSON.parse(json.stdout)
        const byType = Object.fromEntries(stats.types.map((type: { jobType: string }) => [type.jobType, type]))
        expect(byType.sepa_export).toMatchObject({ counts: { pending: 2, processing: 0, completed: 0, failed: 0 }, runnable: 2, handled: false })
        expect(byType.billing_run).toMatchObject({ counts: { pending: 1, completed: 1 }, handled: true })
        expect(byType.sepa_export.oldestRunnableAgeSeconds).toBeGreaterThanOrEqual(600)
        expect(stats.oldestRunnable).toMatchObject({ jobId: old!.id, jobType: "sepa_export" })
        expect(stats.waitingWithoutHandler).toEqual([{ jobType: "sepa_export", waiting: 2 }])

        const text = yield* run("stats")
        expect(text.stdout).toMatch(/^billing_run\s+1\s+0\s+1\s+0\s+1\s+\S+\s+yes$/m)
        expect(text.stdout).toMatch(/^sepa_export\s+2\s+0\s+0\s+0\s+2\s+10m \d+s\s+no$/m)
        expect(text.stdout).toContain(`oldest runnable job: ${old!.id} (sepa_export)`)
        expect(text.stdout).toContain("job types with waiting jobs and no handler (they wait until a worker for them runs):\n  sepa_export: 2 pending")
        expect(text.stdout).toContain("workers: none registered")
      }))

    it.effect("stats lists the registered workers; a live worker's types count as handled, a gone one's do not", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        yield* sql`INSERT INTO job_queue (organization_id, job_type, payload) VALUES (${ORG}, 'sepa_export', '{}'), (${ORG}, 'dunning_run', '{}')`
        yield* sql`SELECT register_worker('worker-a', 'host-a', 4242, ARRAY['sepa_export'], 5)`
        yield* sql`SELECT register_worker('worker-b', 'host-b', 4343, ARRAY['dunning_run'], 5, now() - interval '10 minutes')`
        const [job] = yield* sql<{ id: string }>`SELECT id FROM claim_next_job('worker-a', ARRAY['sepa_export'])`
        yield* sql`SELECT worker_heartbeat('worker-a', ARRAY[${job!.id}]::uuid[])`

        // A worker with a 5-minute lease, whose last heartbeat (once a minute, say) was 45 s ago: alive, not gone
        // after 30 s (found by a review: its types were listed as waiting without a handler between heartbeats).
        yield* sql`SELECT register_worker('worker-c', 'host-c', 4444, ARRAY['report_generation'], 5, now() - interval '50 seconds')`
        yield* sql`SELECT worker_heartbeat('worker-c', ARRAY[]::uuid[], now() - interval '45 seconds', interval '5 minutes')`

        const stats = JSON.parse((yield* run("stats", "--json")).stdout)
        expect(stats.workers).toMatchObject([
          { workerId: "worker-a", host: "host-a", pid: 4242, jobTypes: ["sepa_export"], jobsInHand: 1, alive: true },
          { workerId: "worker-c", alive: true },
          { workerId: "worker-b", alive: false }
        ])
        expect(stats.waitingWithoutHandler).toEqual([{ jobType: "dunning_run", waiting: 1 }])
        const text = (yield* run("stats")).stdout
        expect(text).toMatch(/^worker-a\s+host-a\s+4242\s+alive\s+1\/5\s+/m)
        expect(text).toMatch(/^worker-b\s+host-b\s+4343\s+gone\s+0\/5\s+10m/m)
        yield* sql`DELETE FROM job_workers`
      }))

    it.effect("an unknown command or a missing one is a usage error (2)", () =>
      Effect.gen(function* () {
        const unknown = yield* run("jobz")
        expect(unknown.code).toBe(2)
        expect(unknown.stderr).toContain("Invalid subcommand")
        const missing = yield* run()
        expect(missing.code).toBe(2)
        expect(missing.stderr).toContain("missing command")
        expect((yield* run("--help")).code).toBe(0)
        // A group without one of its commands, as `skiplock` alone.
        for (const group of ["jobs", "billing", "demo"]) {
          expect(yield* run(group)).toEqual({ code: 2, stdout: "", stderr: `skiplock: missing command; \`skiplock ${group} --help\` lists them` })
          expect((yield* run(group, "--help")).code).toBe(0)
        }
        // A value that is not a UUID is a usage error, the billing run's id as any other.
        const rollback = yield* run("billing", "rollback", "notuuid", "--reason", "x")
        expect(rollback.code).toBe(2)
        expect(rollback.stderr).toContain(`the billing run id must be a UUID (billing_runs.id), got "notuuid"`)
        const noReason = yield* run("billing", "rollback", "0b7c7f4e-3c1a-4d7e-9a53-5c2d7f1e8a01", "--reason", "  ")
        expect(noReason.code).toBe(2)
        expect(noReason.stderr).toContain("--reason must not be empty")
      }))
  })

  layer(TestDatabase.layer({ migrations: [] }), { excludeTestServices: true })((it) => {
    it.effect("migrate applies every migration set in order on an empty database; a command before it says to migrate", () =>
      Effect.gen(function* () {
        const before = yield* run("jobs", "list")
        expect(before.code).toBe(1)
        expect(before.stderr).toContain("is the database migrated? run `npm run migrate`")
        const result = yield* run("migrate")
        expect(result.code).toBe(0)
        const applied = result.stdout.split("\n").slice(1).map((line) => line.trim())
        expect(applied[0]).toBe("core/0001_job_types")
        expect(applied).toContain("core/0006_operator_functions")
        expect(applied.indexOf("billing/0001_organizations")).toBeGreaterThan(applied.indexOf("core/0006_operator_functions"))
        expect((yield* run("jobs", "list")).stdout).toBe("no jobs")
      }))
  })

  it.live("a database that cannot be reached fails with where it looked (1)", () =>
      Effect.gen(function* () {
        const result = yield* cli({ DATABASE_URL: "postgres://postgres:secret@127.0.0.1:1/nowhere" }, "stats")
        expect(result.code).toBe(1)
        expect(result.stderr).toMatch(/^skiplock: cannot reach the database postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:1\/nowhere: /)
        const embedded = yield* cli({ SKIPLOCK_EMBEDDED_PORT: "1" }, "stats")
        expect(embedded.code).toBe(1)
        expect(embedded.stderr).toContain("DATABASE_URL is not set, so skiplock uses the embedded PostgreSQL that `npm start` runs on 127.0.0.1:1")
      }))
})
