/**
 * What a claim costs when another transaction holds many of the first due jobs (an operator's long
 * transaction, or many workers' claims at once): N report jobs are locked by a second connection,
 * 5 more are free behind them, and a worker of two types claims 5. The claim as migrated (0038: each
 * look of a several-types claim starts where the last one ended) beside 0037 (each look from the
 * front) and 0024 (one walk of the index, locking as it goes), alternating on one database; each
 * claim is rolled back, so every claim sees the same queue. Reports the round trip and the index
 * entries the claim read from job_queue's indexes (the backend's own count, taken as a difference).
 *
 *   npx tsx bench/probes/claimPastHeldRows.ts [--held 1000,4000,16000] [--claims 5] [--rounds 2]
 *     [--versions 0038,0037,0024]
 */
import { performance } from "node:perf_hooks"
import { parseArgs } from "node:util"
import { connect, createFreshDatabase } from "../db.js"
import { quantile } from "../stats.js"
import { skiplock } from "../systems/skiplock.js"
import { claimVersionsNamed } from "./claimVersions.js"

const { values } = parseArgs({
  options: { held: { type: "string" }, claims: { type: "string" }, rounds: { type: "string" }, versions: { type: "string" } }
})
const heldCounts = (values.held ?? "1000,4000,16000").split(",").map(Number)
const claims = Number(values.claims ?? 5)
const rounds = Number(values.rounds ?? 2)
const versions = claimVersionsNamed(values.versions ?? "0038,0037,0024")
const serverUrl = process.env["DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/postgres"
const ORG = "6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f"
const TYPES = ["report_generation", "dunning_run"]

const indexEntriesRead = `
  SELECT sum(pg_stat_get_xact_tuples_returned(indexrelid))::bigint AS entries
  FROM pg_index WHERE indrelid = 'job_queue'::regclass`

const db = await createFreshDatabase(serverUrl, "probe_claim_past_held_rows")
try {
  await skiplock.install(db.url)
  const admin = await connect(db.url)
  try {
    console.log(`claims of 5 by a worker of ${TYPES.join(" and ")}, each rolled back; ${claims} a row`)
    console.log(`| round | rows held | claim | round trip p50 (ms) | max (ms) | index entries read |`)
    console.log(`| ---: | ---: | --- | ---: | ---: | ---: |`)
    for (const held of heldCounts) {
      await admin.query("DELETE FROM job_queue")
      await admin.query(
        `INSERT INTO job_queue (organization_id, job_type, run_at, created_at)
         SELECT $1, 'report_generation', now() - interval '10 minutes' + n * interval '1 millisecond', now() - interval '10 minutes'
         FROM generate_series(1, $2::int) AS n`,
        [ORG, held + 5]
      )
      await admin.query(
        `INSERT INTO job_queue (organization_id, job_type, run_at, created_at)
         SELECT $1, 'dunning_run', now() - interval '5 minutes' + n * interval '1 millisecond', now() - interval '5 minutes'
         FROM generate_series(1, 4) AS n`,
        [ORG]
      )
      await admin.query("VACUUM ANALYZE job_queue")
      for (let round = 1; round <= rounds; round++) {
        for (const version of round % 2 === 1 ? versions : [...versions].reverse()) {
          await admin.query(version.sql)
          const holder = await connect(db.url)
          const client = await connect(db.url)
          try {
            await holder.query("BEGIN")
            await holder.query(
              "SELECT id FROM job_queue WHERE job_type = 'report_generation' ORDER BY run_at LIMIT $1 FOR UPDATE",
              [held]
            )
            const times: Array<number> = []
            let entries = 0
            for (let i = 0; i < claims; i++) {
              await client.query("BEGIN")
              const { rows: [before] } = await client.query<{ entries: string }>(indexEntriesRead)
              const t0 = performance.now()
              const { rows } = await client.query("SELECT id FROM claim_next_job('probe', $1::text[], 5)", [TYPES])
              times.push(performance.now() - t0)
              const { rows: [after] } = await client.query<{ entries: string }>(indexEntriesRead)
              await client.query("ROLLBACK")
              if (rows.length !== 5) throw new Error(`a claim took ${rows.length} jobs, not 5`)
              entries = Number(after!.entries) - Number(before!.entries)
            }
            console.log(
              `| ${round} | ${held.toLocaleString("en")} | ${version.name} | ${quantile(times, 0.5).toFixed(1)} | ` +
                `${Math.max(...times).toFixed(1)} | ${entries.toLocaleString("en")} |`
            )
          } finally {
            await holder.query("ROLLBACK")
            await Promise.all([holder.end(), client.end()])
          }
        }
      }
    }
  } finally {
    await admin.end()
  }
} finally {
  await db.drop()
}
