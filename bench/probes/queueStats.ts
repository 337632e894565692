/**
 * What the database gauges cost with a large history: QueueStats.collectCounts
 * (what each /metrics scrape runs) and QueueStats.collect (`skiplock stats`:
 * the counts and the oldest runnable job's row), timed in a fresh database
 * holding N finished and M runnable jobs of the six billing job types. The
 * README's operations section quotes it. Not part of `npm run bench`.
 *
 *   npx tsx bench/probes/queueStats.ts [--finished 1000000] [--runnable 200000] [--runs 5]
 */
import { performance } from "node:perf_hooks"
import { parseArgs } from "node:util"
import { Effect, Layer, Logger, LogLevel } from "effect"
import * as QueueStats from "../../src/app/QueueStats.js"
import * as Db from "../../src/Db.js"
import * as Migrator from "../../src/Migrator.js"
import { connect, createFreshDatabase } from "../db.js"

const { values } = parseArgs({
  options: { finished: { type: "string" }, runnable: { type: "string" }, runs: { type: "string" } }
})
const finished = Number(values.finished ?? 1_000_000)
const runnable = Number(values.runnable ?? 200_000)
const runs = Number(values.runs ?? 5)
const serverUrl = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"
const jobTypes = ["billing_run", "sepa_export", "settlement_calculation", "dunning_run", "report_generation", "bulk_invoice_upsert"]

const database = await createFreshDatabase(serverUrl, "queue_stats")
try {
  const db = Layer.merge(
    Db.layer({ url: database.url, maxConnections: 2, applicationName: "skiplock-probe" }),
    Logger.minimumLogLevel(LogLevel.Warning)
  )
  await Effect.runPromise(Migrator.migrate([Migrator.coreMigrations]).pipe(Effect.provide(db)))
  const client = await connect(database.url)
  try {
    await client.query("INSERT INTO job_types (name) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING", [jobTypes])
    await client.query(
      `INSERT INTO job_queue (organization_id, job_type, status, attempts, run_at, created_at, completed_at)
       SELECT gen_random_uuid(), ($1::text[])[1 + g % 6], 'completed', 1, now() - interval '2 hours', now() - interval '2 hours', now() - interval '1 hour'
       FROM generate_series(1, $2::int) AS g`,
      [jobTypes, finished]
    )
    await client.query(
      `INSERT INTO job_queue (organization_id, job_type, run_at)
       SELECT gen_random_uuid(), ($1::text[])[1 + g % 6], now() - g * interval '1 second'
       FROM generate_series(1, $2::int) AS g`,
      [jobTypes, runnable]
    )
    await client.query("VACUUM ANALYZE job_queue")
  } finally {
    await client.end()
  }
  const seconds = <R>(effect: Effect.Effect<unknown, unknown, R>) =>
    Effect.gen(function* () {
      const start = performance.now()
      yield* effect
      return (performance.now() - start) / 1000
    })
  const timings = await Effect.runPromise(
    Effect.gen(function* () {
      const counts: Array<number> = []
      const stats: Array<number> = []
      for (let run = 0; run < runs; run++) {
        counts.push(yield* seconds(QueueStats.collectCounts(jobTypes)))
        stats.push(yield* seconds(QueueStats.collect(jobTypes)))
      }
      return { counts, stats }
    }).pipe(Effect.provide(db))
  )
  const range = (values: Array<number>) => `${Math.min(...values).toFixed(2)}–${Math.max(...values).toFixed(2)} s`
  console.log(`${finished} finished + ${runnable} runnable jobs, ${runs} runs`)
  console.log(`  collectCounts (/metrics scrape): ${range(timings.counts)}`)
  console.log(`  collect (skiplock stats):        ${range(timings.stats)}`)
} finally {
  await database.drop()
}
