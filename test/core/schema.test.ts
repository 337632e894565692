// The SQL contract of the runbook: the tables an operator queries, claim_next_job()
// callable from psql, registered job types, append-only audit, NOTIFY on insert.
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import pg from "pg"
import { JobQueue } from "../../src/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { ORG } from "../support/jobs.js"

const sqlError = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  effect.pipe(
    Effect.flip,
    Effect.map((error) => {
      const cause = (error as { cause?: { message?: string; hint?: string } }).cause
      return `${cause?.message ?? String(error)}${cause?.hint ? ` (${cause.hint})` : ""}`
    })
  )

describe("schema", () => {
  it.layer(TestDatabase.layer())((it) => {
    it.effect("a job inserted with the runbook's SQL is a complete pending job, and the runbook's SELECTs run", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql.unsafe(`INSERT INTO job_queue (organization_id, job_type, payload, status)
                           VALUES ('${ORG}', 'sepa_export', '{"batchId":"test-1"}'::jsonb, 'pending')`)
        const jobs = yield* sql.unsafe<{ id: string; job_type: string; status: string; error: null }>(
          `SELECT id, job_type, status, error, created_at FROM job_queue ORDER BY created_at DESC LIMIT 10`
        )
        expect(jobs[0]).toMatchObject({ job_type: "sepa_export", status: "pending", error: null })
        const [job] = yield* sql<{ attempts: number; maxAttempts: number; traceId: string; runnable: boolean }>`
          SELECT attempts, max_attempts AS "maxAttempts", trace_id AS "traceId", run_at <= now() AS runnable
          FROM job_queue WHERE id = ${jobs[0]!.id}`
        expect(job).toMatchObject({ attempts: 0, maxAttempts: 3, runnable: true })
        expect(job!.traceId).toMatch(/^[0-9a-f]{32}$/)

        const claimed = yield* sql<{ id: string }>`SELECT id FROM claim_next_job('psql-operator', ARRAY['sepa_export'])`
        expect(claimed.map((row) => row.id)).toEqual([jobs[0]!.id])
        const runs = yield* sql.unsafe<{ job_id: string; status: string; last_error: null; trace_id: string }>(
          `SELECT job_id, status, last_error, trace_id FROM job_runs ORDER BY created_at DESC LIMIT 10`
        )
        expect(runs[0]).toEqual({ job_id: jobs[0]!.id, status: "running", last_error: null, trace_id: job!.traceId })
      }))

    it.effect("claim_next_job takes priority, then run_at, then age, only of the requested types, up to the limit", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        const insert = (payload: string, type: string, priority: number, runAt: string, createdAt: string) =>
          sql`INSERT INTO job_queue (organization_id, job_type, payload, priority, run_at, created_at)
              VALUES (${ORG}, ${type}, ${JSON.stringify({ name: payload })}::jsonb, ${priority}, ${runAt}::timestamptz, ${createdAt}::timestamptz)`
        yield* insert("late-run", "report_generation", 0, "2026-01-01T10:00:00Z", "2026-01-01T00:00:00Z")
        yield* insert("early-run-young", "report_generation", 0, "2026-01-01T09:00:00Z", "2026-01-01T00:00:02Z")
        yield* insert("early-run-old", "report_generation", 0, "2026-01-01T09:00:00Z", "2026-01-01T00:00:01Z")
        yield* insert("urgent", "report_generation", -5, "2026-01-01T11:00:00Z", "2026-01-01T00:00:03Z")
        yield* insert("other-type", "dunning_run", -10, "2026-01-01T08:00:00Z", "2026-01-01T00:00:00Z")
        yield* insert("future", "report_generation", -10, "2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z")

        const claimed = yield* sql<{ payload: { name: string }; attempts: number }>`
          SELECT payload, attempts FROM claim_next_job('w', ARRAY['report_generation'], 3, '2026-01-01T12:00:00Z')`
        expect(claimed.map((row) => row.payload.name)).toEqual(["urgent", "early-run-old", "early-run-young"])
        expect(claimed.every((row) => row.attempts === 1)).toBe(true)
        const next = yield* sql<{ payload: { name: string } }>`
          SELECT payload FROM claim_next_job('w', ARRAY['report_generation'], 5, '2026-01-01T12:00:00Z')`
        expect(next.map((row) => row.payload.name)).toEqual(["late-run"])
      }))

    it.effect("two concurrent claims skip each other's locked rows instead of waiting or taking the same job", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const { url } = yield* TestDatabase
        yield* sql`DELETE FROM job_queue`
        yield* sql`INSERT INTO job_queue (organization_id, job_type, payload)
                   SELECT ${ORG}, 'report_generation', jsonb_build_object('n', n) FROM generate_series(1, 4) n`
        const ids = yield* Effect.promise(async () => {
          const a = new pg.Client({ connectionString: url })
          const b = new pg.Client({ connectionString: url })
          await Promise.all([a.connect(), b.connect()])
          try {
            await a.query("BEGIN")
            const first = await a.query("SELECT id FROM claim_next_job('a', NULL, 2)")
            // a's transaction still holds its two rows: b must get the other two, at once.
            const second = await b.query("SELECT id FROM claim_next_job('b', NULL, 4)")
            await a.query("COMMIT")
            return { a: first.rows.map((r) => r.id as string), b: second.rows.map((r) => r.id as string) }
          } finally {
            await Promise.all([a.end(), b.end()])
          }
        })
        expect(ids.a).toHaveLength(2)
        expect(ids.b).toHaveLength(2)
        expect(ids.a.filter((id) => ids.b.includes(id))).toEqual([])
      }))

    it.effect("an unregistered job type fails at once with an error that names it", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const message = yield* sqlError(
          sql`INSERT INTO job_queue (organization_id, job_type, payload, status) VALUES (${ORG}, 'sepa_exprot', '{}', 'pending')`
        )
        expect(message).toContain(`unknown job type "sepa_exprot"`)
        expect(message).toContain("sepa_export") // the hint lists the registered types
        expect(yield* sqlError(sql`INSERT INTO job_queue (organization_id, job_type) VALUES (${ORG}, '')`)).toContain(`unknown job type ""`)
      }))

    it.effect("a multi-row insert with one unknown type among known ones writes nothing; a type change is checked; a type in use cannot be deleted", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        const batch = yield* sqlError(sql`INSERT INTO job_queue (organization_id, job_type)
                                          VALUES (${ORG}, 'sepa_export'), (${ORG}, 'dunning_rn'), (${ORG}, 'dunning_run')`)
        expect(batch).toContain(`unknown job type "dunning_rn"`)
        expect(batch).toContain("dunning_run, report_generation") // the hint
        const [job] = yield* sql<{ id: string }>`INSERT INTO job_queue (organization_id, job_type) VALUES (${ORG}, 'sepa_export') RETURNING id`
        expect(yield* sqlError(sql`UPDATE job_queue SET job_type = 'sepa_exprot' WHERE id = ${job!.id}`)).toContain(`unknown job type "sepa_exprot"`)
        yield* sql`UPDATE job_queue SET job_type = 'dunning_run' WHERE id = ${job!.id}`
        // The foreign key is checked at commit: deleting a type that jobs use fails there.
        const deleted = yield* sqlError(sql`DELETE FROM job_types WHERE name = 'dunning_run'`)
        expect(deleted).toContain(`violates foreign key constraint "job_queue_job_type_fkey"`)
        const left = yield* sql<{ jobType: string }>`SELECT job_type AS "jobType" FROM job_queue`
        expect(left).toEqual([{ jobType: "dunning_run" }])
        expect((yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM job_types WHERE name = 'dunning_run'`)[0]!.n).toBe(1)
      }))

    it.effect("the six job types of the runbook are registered", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const types = yield* sql<{ name: string }>`SELECT name FROM job_types ORDER BY name`
        expect(types.map((t) => t.name)).toEqual([
          "billing_run", "bulk_invoice_upsert", "dunning_run", "report_generation", "sepa_export", "settlement_calculation"
        ])
      }))

    it.effect("status is one of the four of the runbook", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const message = yield* sqlError(sql`INSERT INTO job_queue (organization_id, job_type, status) VALUES (${ORG}, 'sepa_export', 'done')`)
        expect(message).toContain("job_queue_status_valid")
      }))

    it.effect("audit_logs is append-only: UPDATE, DELETE and TRUNCATE are rejected", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`INSERT INTO audit_logs (actor, event) VALUES ('test', 'something_happened')`
        expect(yield* sqlError(sql`UPDATE audit_logs SET actor = 'someone else'`)).toContain("append-only: UPDATE")
        expect(yield* sqlError(sql`DELETE FROM audit_logs`)).toContain("append-only: DELETE")
        expect(yield* sqlError(sql`TRUNCATE audit_logs`)).toContain("append-only: TRUNCATE")
      }))

    it.effect("inserting a job notifies listeners on skiplock_jobs with the job type as payload", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const sql = yield* SqlClient.SqlClient
        const payloads = yield* Effect.promise(async () => {
          const listener = new pg.Client({ connectionString: url })
          await listener.connect()
          const received: Array<string> = []
          listener.on("notification", (message) => received.push(message.payload ?? ""))
          await listener.query("LISTEN skiplock_jobs")
          return { listener, received }
        })
        yield* sql`INSERT INTO job_queue (organization_id, job_type) VALUES (${ORG}, 'dunning_run'), (${ORG}, 'dunning_run')`
        yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 200)))
        yield* Effect.promise(() => payloads.listener.end())
        expect(payloads.received).toEqual(["dunning_run"])
      }))

    it.effect("jobs of one priority and run time are claimed in enqueue order, also when they share a created_at", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        // One statement, one created_at: ten jobs, their ids in enqueue order (UUIDv7, counted within a millisecond).
        const inserted = yield* JobQueue.enqueueMany(
          Array.from({ length: 10 }, (_, n) => ({ organizationId: ORG, jobType: "report_generation", payload: { n } }))
        ).pipe(Effect.provide(JobQueue.layer([])))
        const enqueued = inserted.map((job) => job.id)
        expect(new Set(inserted.map((job) => job.createdAt.getTime())).size).toBe(1)
        // The first three rows move to the end of the table (a non-HOT update there and back), as rows do
        // once space is reused: the table's order no longer is the enqueue order.
        yield* sql`UPDATE job_queue SET priority = 1 WHERE id = ANY (${enqueued.slice(0, 3)}::uuid[])`
        yield* sql`UPDATE job_queue SET priority = 0 WHERE id = ANY (${enqueued.slice(0, 3)}::uuid[])`
        const claimed = yield* sql<{ id: string }>`SELECT id FROM claim_next_job('w', ARRAY['report_generation'], 5)`
        expect(claimed.map((row) => row.id)).toEqual(enqueued.slice(0, 5))
        const next = yield* sql<{ id: string }>`SELECT id FROM claim_next_job('w', ARRAY['report_generation'], 5)`
        expect(next.map((row) => row.id)).toEqual(enqueued.slice(5))
      }))

    it.effect("claiming reads the partial index of runnable jobs, not the history", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`INSERT INTO job_queue (organization_id, job_type, status, completed_at)
                   SELECT ${ORG}, 'report_generation', 'completed', now() FROM generate_series(1, 50000)`
        yield* sql`ANALYZE job_queue`
        const plan = yield* sql<{ "QUERY PLAN": string }>`
          EXPLAIN SELECT id FROM job_queue
          WHERE status = 'pending' AND run_at <= now() AND job_type = ANY (ARRAY['report_generation'])
          ORDER BY priority, run_at, created_at, id LIMIT 5 FOR UPDATE SKIP LOCKED`
        expect(plan.map((row) => row["QUERY PLAN"]).join("\n")).toContain("job_queue_runnable_idx")
      }))

    it.effect("claims and completions run on plans made once per session, not planned anew on every call", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        // A backlog large enough that the plan for unknown values looks dearer than one per call.
        yield* analyzedBacklog(20000)
        // A worker of one job type, and one of several (0037 claims for them differently).
        const lastCallFor = (types: ReadonlyArray<string>) =>
          Effect.promise(() =>
            withPlanLog(url, async (client, plans) => {
              // PostgreSQL decides between planning per call and one plan after the fifth call.
              let held: Array<{ id: string; attempts: number }> = []
              for (let call = 1; call <= 8; call++) {
                plans.length = 0
                const { rows } = await client.query(
                  // As the worker calls it: skipping rows locked elsewhere (0018).
                  "SELECT id, attempts FROM complete_and_claim('w', $1::uuid[], $2::int[], $3::text[], 5, now(), interval '30 seconds', true)",
                  [held.map((job) => job.id), held.map((job) => job.attempts), types]
                )
                held = rows.filter((row) => row.id !== null)
              }
              // What is still held goes back, for the next worker's calls.
              await client.query("SELECT complete_jobs('w', $1::uuid[], $2::int[], now())", [
                held.map((job) => job.id),
                held.map((job) => job.attempts)
              ])
              return [...plans]
            })
          )
        const oneType = yield* lastCallFor(["report_generation"])
        const severalTypes = yield* lastCallFor(["report_generation", "dunning_run"])
        const completion = oneType.find((plan) => plan.includes("UPDATE job_queue j\n    SET status = 'completed'"))
        // A plan made once shows the parameters; a plan made for one call shows that call's values.
        // One type: that type's part of the runnable index, walked in the claim's order.
        expect(oneType.find((plan) => plan.includes("v_ids := ARRAY("))).toMatch(
          /Index Scan using job_queue_runnable_idx on job_queue p .*\n.*Index Cond: \(\(job_type = \(\$\d+\)\[array_lower\(\$\d+, 1\)\]\) AND \(run_at <= \$\d+\)\)/
        )
        // Several: each type's part of it from where the last look ended (0038), then the
        // candidates locked through the primary key.
        expect(severalTypes.find((plan) => plan.includes("v_candidates := ARRAY("))).toMatch(
          /Index (Only )?Scan using job_queue_runnable_idx on job_queue q .*\n.*Index Cond: \(\(job_type = u\.job_type\) AND \(ROW\(priority, run_at, created_at, id\) >= ROW\(\$\d+, \$\d+, \$\d+, \$\d+\)\) AND \(run_at <= \$\d+\)\)/
        )
        expect(severalTypes.find((plan) => plan.includes("v_ids := v_ids || ARRAY("))).toMatch(
          /Index Scan using job_queue_pkey on job_queue p .*\n.*Index Cond: \(id = k\.id\)/
        )
        expect(completion).toMatch(/locked_by = \$\d+/)
      }))

    it.effect("a held job is found by its id, not by reading the lease of every job in flight; the rescuer reads the leases", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const { url } = yield* TestDatabase
        // Statistics gathered while no job is held, then 300 jobs held by another worker.
        yield* analyzedBacklog(2000)
        yield* sql`SELECT count(*) FROM claim_next_job('other', NULL, 300)`
        const mine = yield* sql<{ id: string; attempts: number }>`SELECT id, attempts FROM claim_next_job('w', NULL, 5)`
        const plans = yield* Effect.promise(() =>
          withPlanLog(url, async (client, plans) => {
            const call = async (name: string, text: string, values: Array<unknown>) => {
              plans.length = 0
              await client.query(text, values)
              return { name, plans: plans.join("\n") }
            }
            const [a, b, c, d, e] = mine
            return [
              await call("worker_heartbeat", "SELECT * FROM worker_heartbeat('w', $1::uuid[])", [mine.map((job) => job.id)]),
              await call("complete_jobs", "SELECT * FROM complete_jobs('w', $1::uuid[], $2::int[])", [[a!.id], [a!.attempts]]),
              await call("complete_job", "SELECT complete_job($1, 'w', $2)", [b!.id, b!.attempts]),
              await call("fail_job_attempt", "SELECT * FROM fail_job_attempt($1, 'w', $2, 'boom', true)", [c!.id, c!.attempts]),
              await call("release_job", "SELECT release_job($1, 'w', $2)", [d!.id, d!.attempts]),
              await call("complete_and_claim", "SELECT * FROM complete_and_claim('w', $1::uuid[], $2::int[], NULL, 0, now(), interval '30 seconds', true)", [[e!.id], [e!.attempts]]),
              await call("rescue_expired_jobs", "SELECT * FROM rescue_expired_jobs('rescuer')", [])
            ]
          })
        )
        for (const { name, plans: text } of plans.slice(0, -1)) {
          expect({ name, readsLeases: text.includes("job_queue_leases_idx"), readsKey: text.includes("job_queue_pkey") })
            .toEqual({ name, readsLeases: false, readsKey: true })
        }
        expect(plans.at(-1)!.plans).toMatch(/Index Scan on job_queue_leases_idx|Index Scan using job_queue_leases_idx/)
        const [held] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM job_queue WHERE status = 'processing'`
        expect(held!.n).toBe(300)
      }))
  })
})

// Replaces the queue with `jobs` pending jobs and gathers the planner's statistics on it.
const analyzedBacklog = (jobs: number) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    yield* sql`DELETE FROM job_queue`
    yield* sql`INSERT INTO job_queue (organization_id, job_type) SELECT ${ORG}, 'report_generation' FROM generate_series(1, ${jobs})`
    yield* sql`ANALYZE job_queue`
  })

// Runs `use` on a connection that logs the plan of every statement, those inside functions included
// (auto_explain, as notices to this client only).
const withPlanLog = async <A>(url: string, use: (client: pg.Client, plans: Array<string>) => Promise<A>): Promise<A> => {
  const client = new pg.Client({ connectionString: url })
  const plans: Array<string> = []
  client.on("notice", (notice) => plans.push(notice.message ?? ""))
  await client.connect()
  try {
    await client.query(`LOAD 'auto_explain'`)
    await client.query(`SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements = on;
                        SET client_min_messages = log`)
    return await use(client, plans)
  } finally {
    await client.end()
  }
}
