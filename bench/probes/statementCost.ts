/**
 * What one `complete_and_claim` costs the database backend that runs it, with
 * the schema as migrated next to the schema before migrations 0016 and 0017
 * (claims planned on every call; a lease index that lookups by id can use),
 * alternating, on a table with statistics as a production queue has them.
 * Each run opens a new connection (a new plan cache), warms it up, then sends
 * the statement back to back, each completing what the previous one claimed;
 * the backend's own CPU time comes from /proc (the server must run on this
 * host). Before each run the table is analyzed; `--held N` then has another
 * worker hold N jobs (as busy workers elsewhere would) that the statistics do
 * not know of. `--batch` is the jobs completed and claimed per statement.
 *
 *   npx tsx bench/probes/statementCost.ts [--statements 1000] [--rounds 4] [--batch 5] [--held 0]
 */
import { performance } from "node:perf_hooks"
import { parseArgs } from "node:util"
import type pg from "pg"
import { processCpuOf, serverIsLocal } from "../cpu.js"
import { connect, createFreshDatabase } from "../db.js"
import { skiplock } from "../systems/skiplock.js"

const { values } = parseArgs({
  options: { statements: { type: "string" }, rounds: { type: "string" }, batch: { type: "string" }, held: { type: "string" } }
})
const statements = Number(values.statements ?? 1000)
const rounds = Number(values.rounds ?? 4)
const batch = Number(values.batch ?? 5)
const held = Number(values.held ?? 0)
const serverUrl = process.env["DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/postgres"
const WARMUP = 100

const HOT_FUNCTIONS = [
  "claim_next_job(text, text[], integer, timestamptz, interval)",
  "complete_jobs(text, uuid[], integer[], timestamptz)",
  "complete_and_claim(text, uuid[], integer[], text[], integer, timestamptz, interval, boolean)"
]
const leaseIndex = (predicate: string) =>
  `DROP INDEX job_queue_leases_idx; CREATE INDEX job_queue_leases_idx ON job_queue (lease_expires_at) WHERE ${predicate};`
const schemas = [
  {
    name: "as migrated",
    sql: HOT_FUNCTIONS.map((fn) => `ALTER FUNCTION ${fn} SET plan_cache_mode = force_generic_plan;`).join("") +
      leaseIndex("lease_expires_at IS NOT NULL")
  },
  {
    name: "before 0016 and 0017",
    sql: HOT_FUNCTIONS.map((fn) => `ALTER FUNCTION ${fn} RESET plan_cache_mode;`).join("") + leaseIndex("status = 'processing'")
  }
]

if (!serverIsLocal(serverUrl) || processCpuOf(process.pid) === undefined) {
  console.error(`statementCost: the backend's CPU time is read from /proc, so the server must run on this host (${serverUrl} does not)`)
  process.exit(2)
}

const run = async (url: string) => {
  const client = await connect(url)
  try {
    const { rows: [backend] } = await client.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")
    // As the worker sends it (skipping rows locked elsewhere: 0018).
    const text = `SELECT * FROM complete_and_claim('probe', $1::uuid[], $2::int[], ARRAY['report_generation'], $3, now(), interval '30 seconds', true)`
    let mine: Array<{ id: string; attempts: number }> = []
    const send = async (count: number) => {
      for (let i = 0; i < count; i++) {
        const { rows } = await client.query<{ id: string | null; attempts: number }>(text, [mine.map((j) => j.id), mine.map((j) => j.attempts), batch])
        mine = rows.flatMap((row) => (row.id === null ? [] : [{ id: row.id, attempts: row.attempts }]))
      }
    }
    await send(WARMUP)
    const cpu0 = processCpuOf(backend!.pid)!
    const t0 = performance.now()
    await send(statements)
    const ms = (performance.now() - t0) / statements
    const cpu1 = processCpuOf(backend!.pid)!
    await client.query(text, [mine.map((j) => j.id), mine.map((j) => j.attempts), 0]) // completes what is held
    return { ms, cpu: (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / statements, system: (cpu1.system - cpu0.system) / statements }
  } finally {
    await client.end()
  }
}

const db = await createFreshDatabase(serverUrl, "probe_statement_cost")
try {
  await skiplock.install(db.url)
  const admin: pg.Client = await connect(db.url)
  try {
    const needed = ((WARMUP + statements + 1) * batch + held) * rounds * schemas.length
    await admin.query(
      `INSERT INTO job_queue (organization_id, job_type, payload)
       SELECT '6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f', 'report_generation', jsonb_build_object('i', g)
       FROM generate_series(1, $1::int) AS g`,
      [needed]
    )
    await admin.query("VACUUM job_queue")
    console.log(`complete_and_claim of ${batch} + ${batch} jobs, ${statements} statements a run` + (held > 0 ? `, ${held} jobs held by another worker` : ""))
    console.log(`| round | schema | round trip (ms) | backend CPU per statement (µs) | of which system (µs) |`)
    console.log(`| ---: | --- | ---: | ---: | ---: |`)
    for (let round = 1; round <= rounds; round++) {
      for (const schema of round % 2 === 1 ? schemas : [...schemas].reverse()) {
        await admin.query(schema.sql)
        // Statistics of the table as it is now (autovacuum gathers them on a busy queue), taken while
        // no other worker holds jobs; then the other worker's jobs, which the statistics do not know.
        await admin.query("ANALYZE job_queue")
        if (held > 0) await admin.query(`SELECT count(*) FROM claim_next_job('another-worker', NULL, $1)`, [held])
        const r = await run(db.url)
        if (held > 0) {
          await admin.query(`SELECT count(*) FROM (
                               SELECT complete_jobs('another-worker', array_agg(id ORDER BY id), array_agg(attempts ORDER BY id))
                               FROM job_queue WHERE locked_by = 'another-worker') AS done`)
        }
        console.log(`| ${round} | ${schema.name} | ${r.ms.toFixed(2)} | ${Math.round(r.cpu)} | ${Math.round(r.system)} |`)
      }
    }
  } finally {
    await admin.end()
  }
} finally {
  await db.drop()
}
