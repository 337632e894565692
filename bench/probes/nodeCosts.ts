/**
 * What the parts of a drain cost the worker's Node process, each measured on
 * its own: one job's fiber (executeJob with a no-op handler and no database:
 * its span, annotations, payload decoding, outcome and metrics; started five
 * at a time from plain code, as the worker starts a claim's jobs), and one
 * statement through @effect/sql (`SELECT 1` via SqlClient: span, scope,
 * connection from the pool) against the same statement on a plain `pg`
 * client. CPU time (process.cpuUsage, so it includes the collector's threads
 * and the kernel's side of the socket) and bytes allocated (V8's sampling
 * heap profiler, a sample every 256 bytes, in a second pass) per operation,
 * over `--rounds` alternating rounds. With the defaults a drain at
 * concurrency 5 sends one statement per 5 jobs, so its Node CPU per job is
 * about one job fiber, a fifth of a statement and what neither covers (the
 * claim loop, parsing the claimed rows, the collector). Not part of
 * `npm run bench`.
 *
 *   npx tsx bench/probes/nodeCosts.ts [--jobs 50000] [--statements 5000] [--rounds 2]
 */
import { SqlClient } from "@effect/sql"
import { Duration, Effect, Layer, Logger, LogLevel, ManagedRuntime, Runtime, Schema } from "effect"
import { Session } from "node:inspector/promises"
import { parseArgs } from "node:util"
import { Db, Handler, JobDefinition } from "../../src/index.js"
import { executeJob, type ExecuteEnv } from "../../src/internal/executeJob.js"
import type { ClaimedJob, JobStore } from "../../src/internal/JobStore.js"
import { connect, createFreshDatabase } from "../db.js"
import { sampleAllocations, totalSize } from "./heapSampling.js"

const { values } = parseArgs({ options: { jobs: { type: "string" }, statements: { type: "string" }, rounds: { type: "string" } } })
const jobs = Number(values.jobs ?? 50_000)
const statements = Number(values.statements ?? 5_000)
const rounds = Number(values.rounds ?? 2)
const serverUrl = process.env["DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/postgres"

const session = new Session()
session.connect()

/** CPU µs and KB allocated per operation of `run(n)`, which performs n operations (after a warm-up). */
const measure = async (n: number, run: (n: number) => Promise<void>) => {
  await run(Math.min(n, 1_000))
  const cpu0 = process.cpuUsage()
  await run(n)
  const cpu = process.cpuUsage(cpu0)
  const head = await sampleAllocations(session, { intervalBytes: 256, keepCollectedByMinorGC: true }, () => run(n))
  return { cpuMicros: (cpu.user + cpu.system) / n, kb: totalSize(head) / n / 1024 }
}

// One job's fiber: the no-op handler succeeds and `complete` answers at once, so the job store is
// never used on this path (a call to it would be a mistake in this probe, and says so).
const BenchJob = JobDefinition.make("report_generation", Schema.Struct({ i: Schema.Number }))
const handler = Handler.make(BenchJob, { run: () => Effect.void })
const store = new Proxy({} as JobStore, {
  get: (_, name) => {
    throw new Error(`nodeCosts: the job store's ${String(name)} was called; the probe's jobs must complete through env.complete`)
  }
})
const env: ExecuteEnv = {
  workerId: "probe",
  store,
  retryBackoff: Duration.seconds(30),
  complete: () => Effect.succeed(true),
  watchesTimeouts: true,
  handlerDone: () => {}
}
const claimedJob = (i: number): ClaimedJob => ({
  id: `0190a1b2-c3d4-7e5f-8a9b-${String(i).padStart(12, "0")}`,
  organizationId: "6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f",
  jobType: "report_generation",
  payload: { i },
  priority: 0,
  attempts: 1,
  maxAttempts: 3,
  runAt: new Date(),
  idempotencyKey: null,
  traceId: "0af7651916cd43dd8448eb211c80319c",
  parentSpanId: null,
  createdBy: null,
  createdAt: new Date(),
  runIdempotencyStatus: "in_progress"
})
const runFork = Runtime.runFork(Runtime.defaultRuntime)
const fiveJobs = (first: number) =>
  new Promise<void>((resolve) => {
    let left = 5
    for (let i = first; i < first + 5; i++) {
      const fiber = runFork(Effect.interruptible(executeJob(handler, claimedJob(i), env)) as Effect.Effect<unknown>, { immediate: false })
      fiber.addObserver(() => {
        if (--left === 0) resolve()
      })
    }
  })
const runJobs = async (n: number) => {
  for (let i = 0; i < n; i += 5) await fiveJobs(i)
}

const db = await createFreshDatabase(serverUrl, "probe_node_costs")
try {
  const quiet = Logger.minimumLogLevel(LogLevel.Warning)
  const runtime = ManagedRuntime.make(Layer.merge(Db.layer({ url: db.url, maxConnections: 2, applicationName: "skiplock-bench" }), quiet))
  const client = await connect(db.url)
  try {
    const selectOne = Effect.flatMap(SqlClient.SqlClient, (sql) => sql`SELECT 1`)
    const viaEffectSql = async (n: number) => {
      for (let i = 0; i < n; i++) await runtime.runPromise(selectOne)
    }
    const viaPlainPg = async (n: number) => {
      for (let i = 0; i < n; i++) await client.query("SELECT 1")
    }
    const fmt = (x: number) => x.toFixed(1)
    console.log("| round | measured | CPU µs per op | KB allocated per op |")
    console.log("| ---: | --- | ---: | ---: |")
    for (let round = 1; round <= rounds; round++) {
      for (const [label, n, run] of [
        ["a job's fiber (executeJob, no-op handler, no database)", jobs, runJobs],
        ["`SELECT 1` through @effect/sql", statements, viaEffectSql],
        ["`SELECT 1` on a plain pg client", statements, viaPlainPg]
      ] as const) {
        const { cpuMicros, kb } = await measure(n, run)
        console.log(`| ${round} | ${label} | ${fmt(cpuMicros)} | ${fmt(kb)} |`)
      }
    }
  } finally {
    await client.end()
    await runtime.dispose()
  }
} finally {
  await db.drop()
}
session.disconnect()
process.exit(0)
