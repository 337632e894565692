/**
 * The most a worker at concurrency 5 could drain, whatever its runtime costs:
 * `complete_and_claim` sent back to back on one plain `pg` connection, each
 * completing the 5 jobs the previous one claimed and claiming 5 more, with no
 * handler, no Effect and no pool in between. At concurrency 5 the worker can
 * have only one such statement doing useful work at a time (a claim takes what
 * the 5 slots free), so its drain rate stays below 5 jobs ÷ this statement's
 * round trip. Runs the statement unnamed (as @effect/sql-pg sends it) and as a
 * named prepared statement (as skiplock's pool sends it, src/internal/preparedStatements.ts),
 * alternating which goes first, after a warm-up.
 *
 *   npx tsx bench/probes/claimCeiling.ts [--statements 1000] [--rounds 3]
 */
import { performance } from "node:perf_hooks"
import { parseArgs } from "node:util"
import { connect, createFreshDatabase } from "../db.js"
import { skiplock } from "../systems/skiplock.js"

const { values } = parseArgs({ options: { statements: { type: "string" }, rounds: { type: "string" } } })
const statements = Number(values.statements ?? 1000)
const rounds = Number(values.rounds ?? 3)
const serverUrl = process.env["DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/postgres"
const BATCH = 5
const WARMUP = 300

const db = await createFreshDatabase(serverUrl, "probe_claim_ceiling")
try {
  await skiplock.install(db.url)
  const client = await connect(db.url)
  try {
    await client.query(
      `INSERT INTO job_queue (organization_id, job_type, payload)
       SELECT '6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f', 'report_generation', jsonb_build_object('i', g)
       FROM generate_series(1, $1::int) AS g`,
      [(statements * rounds + WARMUP) * 2 * BATCH + BATCH]
    )
    await client.query("VACUUM ANALYZE job_queue")
    const text = `SELECT * FROM complete_and_claim($1, $2::uuid[], $3::int[], $4::text[], $5, $6, $7::interval, true)`
    let held: Array<{ id: string; attempts: number }> = []
    const drain = async (prepared: boolean, count = statements) => {
      const cpu0 = process.cpuUsage()
      const t0 = performance.now()
      for (let i = 0; i < count; i++) {
        const values = ["probe", held.map((j) => j.id), held.map((j) => j.attempts), ["report_generation"], BATCH, new Date(), "30 seconds"]
        const { rows } = await client.query<{ id: string | null; attempts: number }>(prepared ? { name: "complete_and_claim", text, values } : { text, values })
        held = rows.flatMap((row) => (row.id === null ? [] : [{ id: row.id, attempts: row.attempts }]))
      }
      const ms = (performance.now() - t0) / count
      const cpu = process.cpuUsage(cpu0)
      return { ms, jobsPerSecond: (BATCH * 1000) / ms, nodeCpuMicros: (cpu.user + cpu.system) / count }
    }
    await drain(false, WARMUP)
    await drain(true, WARMUP)
    console.log(`| round | statement | round trip (ms) | ceiling at concurrency 5 (jobs/s) | Node CPU per statement (µs) |`)
    console.log(`| ---: | --- | ---: | ---: | ---: |`)
    for (let round = 1; round <= rounds; round++) {
      for (const prepared of round % 2 === 1 ? [false, true] : [true, false]) {
        const r = await drain(prepared)
        console.log(`| ${round} | ${prepared ? "named (prepared)" : "unnamed"} | ${r.ms.toFixed(2)} | ${Math.round(r.jobsPerSecond).toLocaleString("en-US")} | ${Math.round(r.nodeCpuMicros)} |`)
      }
    }
  } finally {
    await client.end()
  }
} finally {
  await db.drop()
}
