// A claim reads only the jobs of the types it takes (migration 0037), in one order across types,
// and still takes as many jobs as are free when other claims hold the first ones, reading each of
// those once (0038).
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import pg from "pg"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { ORG } from "../support/jobs.js"

const ALL_TYPES = ["billing_run", "sepa_export", "settlement_calculation", "dunning_run", "report_generation", "bulk_invoice_upsert"]

/** Pending jobs of one type, due since `minutesAgo`, named `${type}-${n}` in their claim order. */
const pendingJobs = (type: string, count: number, minutesAgo: number, priority = 0) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql`INSERT INTO job_queue (organization_id, job_type, payload, priority, run_at, created_at)
        SELECT ${ORG}, ${type}, jsonb_build_object('name', ${type} || '-' || n), ${priority},
               now() - make_interval(mins => ${minutesAgo}) + n * interval '1 millisecond',
               now() - make_interval(mins => ${minutesAgo})
        FROM generate_series(1, ${count}) AS n`)

const claimedNames = (rows: ReadonlyArray<{ payload: { name: string } }>) => rows.map((row) => row.payload.name)

/** Another session holds the first `count` report jobs locked until the scope closes. */
const holdFirstReportJobs = (url: string, count: number) => {
  const holder = new pg.Client({ connectionString: url })
  return Effect.acquireRelease(
    Effect.promise(async () => {
      await holder.connect()
      await holder.query("BEGIN")
      await holder.query(
        "SELECT id FROM job_queue WHERE job_type = 'report_generation' ORDER BY run_at LIMIT $1 FOR UPDATE",
        [count]
      )
    }),
    () => Effect.promise(() => holder.query("ROLLBACK").then(() => holder.end()))
  )
}

/**
 * A claim of several types that another session's commit reaches between the claim's look at its
 * candidates and its locking of them: that session holds job_queue in EXCLUSIVE mode, which lets the
 * claim read rows but not lock them, makes `change` while the claim waits for the lock, and commits.
 * The claim is rolled back; its job names are returned.
 */
const claimAcrossCommit = async (url: string, types: ReadonlyArray<string>, change: (other: pg.Client) => Promise<void>) => {
  const claimer = new pg.Client({ connectionString: url })
  const other = new pg.Client({ connectionString: url })
  await Promise.all([claimer.connect(), other.connect()])
  try {
    const { rows: [claimerBackend] } = await claimer.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")
    await other.query("BEGIN")
    await other.query("LOCK TABLE job_queue IN EXCLUSIVE MODE")
    await claimer.query("BEGIN")
    const claim = claimer.query<{ payload: { name: string } }>(
      "SELECT payload FROM claim_next_job('w', $1::text[], 5)",
      [types]
    )
    let settled = false
    claim.then(() => (settled = true), () => (settled = true))
    // The claim has looked at its candidates once it waits for the lock that locking rows needs.
    for (;;) {
      const { rows } = await other.query<{ wait: string | null }>(
        "SELECT wait_event_type AS wait FROM pg_stat_activity WHERE pid = $1",
        [claimerBackend!.pid]
      )
      if (rows[0]?.wait === "Lock") break
      if (settled) throw new Error("the claim ended without waiting to lock rows: it no longer looks before it locks")
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
    await change(other)
    await other.query("COMMIT")
    const { rows } = await claim
    await claimer.query("ROLLBACK")
    return claimedNames(rows)
  } finally {
    await Promise.all([claimer.end(), other.end()])
  }
}

/**
 * A claim's names and the index entries it read from job_queue's indexes, counted by the backend
 * itself. The counts are the transaction's and the session's not yet reported (PostgreSQL reports
 * them at most once a second), so the claim's share is the difference around it.
 */
const claimReading = (types: ReadonlyArray<string>) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => {
    const entriesRead = Effect.map(
      sql<{ entries: number }>`
        SELECT sum(pg_stat_get_xact_tuples_returned(indexrelid))::int AS entries
        FROM pg_index WHERE indrelid = 'job_queue'::regclass`,
      ([row]) => row!.entries
    )
    return sql.withTransaction(
      Effect.gen(function* () {
        const before = yield* entriesRead
        const claimed = yield* sql<{ payload: { name: string } }>`
          SELECT payload FROM claim_next_job('w', ${types}::text[], 5)`
        return { claimed: claimedNames(claimed), entries: (yield* entriesRead) - before }
      })
    )
  })

describe("claims by job type", () => {
  it.layer(TestDatabase.layer())((it) => {
    it.effect("a claim reads only the pending jobs of the types it takes, not a backlog of another type ahead of them", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        // Due earlier than every job the claims take: before 0037 every claim fetched all of them.
        yield* pendingJobs("sepa_export", 5000, 60)
        yield* pendingJobs("report_generation", 3, 1)
        yield* pendingJobs("dunning_run", 3, 1)
        // A worker of one type, and one of several.
        const one = yield* claimReading(["report_generation"])
        const several = yield* claimReading(["dunning_run", "bulk_invoice_upsert"])
        expect(one.claimed).toEqual(["report_generation-1", "report_generation-2", "report_generation-3"])
        expect(several.claimed).toEqual(["dunning_run-1", "dunning_run-2", "dunning_run-3"])
        // The three jobs, found, locked and updated: a few dozen entries at most, not the 5,000 ahead.
        expect(one.entries).toBeLessThan(50)
        expect(several.entries).toBeLessThan(50)
      }))

    it.effect("jobs of several types are claimed in one order: priority, then run_at, then age", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        yield* pendingJobs("report_generation", 3, 30)
        yield* pendingJobs("dunning_run", 3, 20)
        yield* pendingJobs("billing_run", 2, 10, -1)
        yield* pendingJobs("sepa_export", 2, 40)
        const claimed = yield* sql<{ payload: { name: string } }>`
          SELECT payload FROM claim_next_job('w', ARRAY['report_generation', 'dunning_run', 'billing_run'], 7)`
        expect(claimedNames(claimed)).toEqual([
          "billing_run-1", "billing_run-2",
          "report_generation-1", "report_generation-2", "report_generation-3",
          "dunning_run-1", "dunning_run-2"
        ])
        // Without types (NULL), every registered type, in the same order: what is left.
        const rest = yield* sql<{ payload: { name: string } }>`SELECT payload FROM claim_next_job('w', NULL, 10)`
        expect(claimedNames(rest)).toEqual(["sepa_export-1", "sepa_export-2", "dunning_run-3"])
        const registered = yield* sql<{ name: string }>`SELECT name FROM job_types ORDER BY name`
        expect(registered.map((row) => row.name)).toEqual([...ALL_TYPES].sort())
      }))

    it.effect("types named twice or in an array not counted from 1 are claimed as 0024 claimed them", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        yield* pendingJobs("report_generation", 8, 10)
        // Each claim is rolled back (its transaction fails on purpose), so each sees the eight jobs.
        const count = (types: string, limit: number) =>
          Effect.gen(function* () {
            let claimed = -1
            yield* sql.withTransaction(
              Effect.flatMap(
                sql<{ n: number }>`SELECT count(*)::int AS n FROM claim_next_job('w', ${types}::text[], ${limit})`,
                ([row]) => {
                  claimed = row!.n
                  return Effect.fail("roll back")
                }
              )
            ).pipe(Effect.ignore)
            return claimed
          })
        const claimed = yield* Effect.all([
          count("{report_generation,report_generation}", 5),
          count("{report_generation,report_generation,report_generation}", 6),
          count("[0:0]={report_generation}", 5),
          count("{{report_generation}}", 5)
        ])
        expect(claimed).toEqual([5, 6, 5, 5])
      }))

    it.effect("a large claim of several types needs memory in proportion to it, not to its square", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        yield* pendingJobs("report_generation", 2000, 10)
        yield* pendingJobs("dunning_run", 2000, 10)
        // A first version carried the whole candidate list on every row it locked: this claim sorted
        // about 256 MB (16 bytes times 4,000 squared) and failed on the limit; now it sorts in memory.
        const claimed = yield* sql.withTransaction(
          Effect.gen(function* () {
            yield* sql`SET LOCAL temp_file_limit = '1MB'`
            const [row] = yield* sql<{ n: number }>`
              SELECT count(*)::int AS n FROM claim_next_job('w', ARRAY['report_generation', 'dunning_run'], 2000)`
            return row!.n
          })
        )
        expect(claimed).toBe(2000)
      }))

    it.effect("a claim whose first candidates are locked elsewhere takes the next free jobs, as many as it asked for", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const { url } = yield* TestDatabase
        yield* sql`DELETE FROM job_queue`
        yield* pendingJobs("report_generation", 20, 10)
        yield* pendingJobs("dunning_run", 4, 5)
        // Another session holds the first 12 report jobs, more than a claim of 5 looks at first (10):
        // the claim must look further rather than come back short.
        yield* holdFirstReportJobs(url, 12)
        const claimed = yield* sql<{ payload: { name: string } }>`
          SELECT payload FROM claim_next_job('w', ARRAY['report_generation', 'dunning_run'], 5)`
        expect(claimedNames(claimed)).toEqual([13, 14, 15, 16, 17].map((n) => `report_generation-${n}`))
        const next = yield* sql<{ payload: { name: string } }>`
          SELECT payload FROM claim_next_job('w', ARRAY['report_generation', 'dunning_run'], 5)`
        expect(claimedNames(next)).toEqual(["report_generation-18", "report_generation-19", "report_generation-20",
          "dunning_run-1", "dunning_run-2"])
      }).pipe(Effect.scoped))

    it.effect("a job changed and committed between a claim's look and its lock is taken as it is then", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const { url } = yield* TestDatabase
        yield* sql`DELETE FROM job_queue`
        yield* pendingJobs("report_generation", 8, 10)
        const job = (n: number) => `payload->>'name' = 'report_generation-${n}'`
        const claimed = yield* Effect.promise(() =>
          claimAcrossCommit(url, ["report_generation", "dunning_run"], async (other) => {
            // The first three candidates, changed after the claim looked at them: another type, not due
            // yet, and claimed by another worker.
            await other.query(`UPDATE job_queue SET job_type = 'sepa_export' WHERE ${job(1)}`)
            await other.query(`UPDATE job_queue SET run_at = now() + interval '1 hour' WHERE ${job(2)}`)
            await other.query("SELECT id FROM claim_next_job('other', ARRAY['report_generation'], 1)")
          })
        )
        const takenByOther = yield* sql<{ name: string }>`
          SELECT payload->>'name' AS name FROM job_queue WHERE locked_by = 'other'`
        expect(takenByOther.map((row) => row.name)).toEqual(["report_generation-3"])
        expect(claimed).toEqual([4, 5, 6, 7, 8].map((n) => `report_generation-${n}`))
      }))

    it.effect("a claim behind thousands of rows held elsewhere reads each of them once", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const { url } = yield* TestDatabase
        yield* sql`DELETE FROM job_queue`
        yield* pendingJobs("report_generation", 3005, 10)
        yield* pendingJobs("dunning_run", 4, 5)
        // An operator's transaction holds the first 3,000 report jobs.
        yield* holdFirstReportJobs(url, 3000)
        const { claimed, entries } = yield* claimReading(["report_generation", "dunning_run"])
        expect(claimed).toEqual([3001, 3002, 3003, 3004, 3005].map((n) => `report_generation-${n}`))
        // Each held row is read once as a candidate and once by its id when the claim tries to lock
        // it: about 6,000 index entries. 0037 looked again from the front each time it doubled its
        // look, and read about 16,000.
        expect(entries).toBeLessThan(2.5 * 3000)
      }).pipe(Effect.scoped))
  })
})
