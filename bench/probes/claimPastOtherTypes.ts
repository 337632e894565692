/**
 * What a claim costs when pending jobs of a type the worker does not take are due before its own
 * (a backlog of `sepa_export` while the SEPA workers are stopped), with the claim as migrated
 * (0037: the runnable index leads with the job type; a claim reads only its types' part of it;
 * 0038: a claim of several types looks on from where its last look ended) next to the single walk
 * of 0024 (the index in claim order; every pending row ahead fetched to look at its type), and
 * optionally 0037 as it was, alternating on one database. Each claim runs in a transaction that is
 * rolled back, so every claim sees the same queue; the backend's CPU time comes from /proc (the
 * server must run on this host). The table is analyzed first, as autovacuum would have done.
 *
 *   npx tsx bench/probes/claimPastOtherTypes.ts [--backlog 200000] [--claims 200] [--rounds 2]
 *     [--versions 0038,0024]   (any of 0038, 0037, 0024)
 */
import { performance } from "node:perf_hooks"
import { parseArgs } from "node:util"
import { processCpuOf, serverIsLocal } from "../cpu.js"
import { connect, createFreshDatabase } from "../db.js"
import { quantile } from "../stats.js"
import { skiplock } from "../systems/skiplock.js"
import { claimVersionsNamed } from "./claimVersions.js"

const { values } = parseArgs({
  options: { backlog: { type: "string" }, claims: { type: "string" }, rounds: { type: "string" }, versions: { type: "string" } }
})
const backlog = Number(values.backlog ?? 200_000)
const claims = Number(values.claims ?? 200)
const rounds = Number(values.rounds ?? 2)
const serverUrl = process.env["DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/postgres"
const WARMUP = 20
const ORG = "6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f"
const ALL_TYPES = ["billing_run", "sepa_export", "settlement_calculation", "dunning_run", "report_generation", "bulk_invoice_upsert"]

const claimVersions = claimVersionsNamed(values.versions ?? "0038,0024")
const behind = `behind ${backlog.toLocaleString("en")} sepa_export`
const workers = [
  { name: `takes report_generation, ${behind}`, types: ["report_generation"] },
  { name: `takes the five other types, ${behind}`, types: ALL_TYPES.filter((type) => type !== "sepa_export") },
  { name: "takes sepa_export (its own backlog)", types: ["sepa_export"] },
  { name: "takes all six types", types: ALL_TYPES }
  // With no backlog (--backlog 0, the price of the claim with nothing ahead) sepa_export has no jobs.
].filter((worker) => backlog > 0 || worker.types.some((type) => type !== "sepa_export"))

if (!serverIsLocal(serverUrl) || processCpuOf(process.pid) === undefined) {
  console.error(`claimPastOtherTypes: the backend's CPU time is read from /proc, so the server must run on this host (${serverUrl} does not)`)
  process.exit(2)
}

const measure = async (url: string, types: ReadonlyArray<string>) => {
  const client = await connect(url)
  try {
    const { rows: [backend] } = await client.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")
    const claimOnce = async () => {
      await client.query("BEGIN")
      const { rows } = await client.query("SELECT id FROM claim_next_job('probe', $1::text[], 5)", [types])
      await client.query("ROLLBACK")
      if (rows.length !== 5) throw new Error(`a claim took ${rows.length} jobs, not 5`)
    }
    for (let i = 0; i < WARMUP; i++) await claimOnce()
    const times: Array<number> = []
    const cpu0 = processCpuOf(backend!.pid)!
    for (let i = 0; i < claims; i++) {
      const t0 = performance.now()
      await claimOnce()
      times.push(performance.now() - t0)
    }
    const cpu1 = processCpuOf(backend!.pid)!
    return { p50: quantile(times, 0.5), p95: quantile(times, 0.95), cpu: (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / claims }
  } finally {
    await client.end()
  }
}

const db = await createFreshDatabase(serverUrl, "probe_claim_past_other_types")
try {
  await skiplock.install(db.url)
  const admin = await connect(db.url)
  try {
    // The backlog is due before everything else; each type the workers take has 100 jobs of its own.
    await admin.query(
      `INSERT INTO job_queue (organization_id, job_type, run_at, created_at)
       SELECT $1, 'sepa_export', now() - interval '1 hour', now() - interval '1 hour' FROM generate_series(1, $2::int)`,
      [ORG, backlog]
    )
    await admin.query(
      `INSERT INTO job_queue (organization_id, job_type) SELECT $1, t FROM unnest($2::text[]) AS t, generate_series(1, 100)`,
      [ORG, ALL_TYPES.filter((type) => type !== "sepa_export")]
    )
    await admin.query("VACUUM ANALYZE job_queue")
    console.log(`claims of 5 (transaction rolled back), ${claims} a run after ${WARMUP} to warm up`)
    console.log(`| round | worker | claim | round trip p50 (ms) | p95 (ms) | backend CPU per claim (µs) |`)
    console.log(`| ---: | --- | --- | ---: | ---: | ---: |`)
    for (let round = 1; round <= rounds; round++) {
      for (const claim of round % 2 === 1 ? claimVersions : [...claimVersions].reverse()) {
        await admin.query(claim.sql)
        await admin.query("ANALYZE job_queue")
        for (const worker of workers) {
          const r = await measure(db.url, worker.types)
          console.log(`| ${round} | ${worker.name} | ${claim.name} | ${r.p50.toFixed(2)} | ${r.p95.toFixed(2)} | ${Math.round(r.cpu)} |`)
        }
      }
    }
  } finally {
    await admin.end()
  }
} finally {
  await db.drop()
}
