/**
 * `npm run bench`: skiplock vs Graphile Worker vs pg-boss on one PostgreSQL
 * server. See `npm run bench -- --help` and bench/README.md.
 */
import { cpus, loadavg, totalmem } from "node:os"
import { join, resolve } from "node:path"
import { performance } from "node:perf_hooks"
import { parseConfig, SCENARIOS, USAGE, type BenchConfig, type ScenarioName } from "./config.js"
import { dropAllCreated, dropStaleDatabases, serverInfo } from "./db.js"
import { installInstrumentation } from "./instrument.js"
import { writeLatestRun } from "./readme.js"
import { recordsNote, renderMarkdown, renderText, writeResults, type ReportInput, type SystemInfo } from "./report.js"
import type { Context, Metric } from "./scenarios/common.js"
import { runCost } from "./scenarios/cost.js"
import { runDrain } from "./scenarios/drain.js"
import { runEnqueue } from "./scenarios/enqueue.js"
import { defaultHistorySystems, runHistory } from "./scenarios/history.js"
import { runLatency } from "./scenarios/latency.js"
import { runMemory } from "./scenarios/memory.js"
import { allSystems } from "./systems/index.js"
import type { SystemAdapter } from "./systems/types.js"

const REPOSITORY = resolve(import.meta.dirname, "..")

export interface BenchOutcome {
  readonly report: ReportInput
  readonly files: ReadonlyArray<string>
}

export const runBench = async (config: BenchConfig): Promise<BenchOutcome> => {
  installInstrumentation()
  const t0 = performance.now()
  const startedAt = new Date()
  const loadAtStart = loadavg()[0]!
  const log = (message: string) => {
    if (!config.quiet) process.stderr.write(`[bench ${((performance.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${message}\n`)
  }

  const stale = await dropStaleDatabases(config.serverUrl)
  if (stale.length > 0) log(`dropped ${stale.length} database(s) left by earlier runs: ${stale.join(", ")}`)
  const server = await serverInfo(config.serverUrl)

  const known = allSystems(config)
  const requested = config.systems ?? known.map((s) => s.id)
  for (const id of requested) {
    if (!known.some((s) => s.id === id)) throw new Error(`unknown system '${id}' (known: ${known.map((s) => s.id).join(", ")})`)
  }
  const systems: Array<SystemAdapter> = []
  const infos: Array<SystemInfo> = []
  const skipped: Array<{ id: string; reason: string }> = []
  for (const system of known.filter((s) => requested.includes(s.id))) {
    const probe = await system.probe()
    if (probe.ok) {
      systems.push(system)
      infos.push({
        id: system.id,
        label: system.label,
        packageName: system.packageName,
        version: probe.version,
        configuration: system.configuration,
        recordsPerJob: system.recordsPerJob,
        ...(system.comparedWithPeers === true ? { comparedWithPeers: true } : {})
      })
    } else {
      skipped.push({ id: system.id, reason: probe.reason })
      log(`skipping ${system.id}: ${probe.reason}`)
    }
  }
  if (systems.length === 0) throw new Error("no system can run")
  const partial = SCENARIOS.some((s) => !config.scenarios.includes(s)) || known.some((s) => !requested.includes(s.id))
  log(`systems: ${infos.map((s) => `${s.id} ${s.version}`).join(", ")}; scenarios: ${config.scenarios.join(", ")}; rounds: ${config.rounds}`)

  const metrics: Array<Metric> = []
  const runs: Array<Record<string, unknown>> = []
  const warnings = new Map<string, number>()
  const warn = (system: string, message: string) => {
    const key = `${system}: ${message}`
    if (!warnings.has(key)) log(`warning: ${key}`)
    warnings.set(key, (warnings.get(key) ?? 0) + 1)
  }
  const everywhere: Context = { config, systems, metrics, runs, log, warn }
  const scenarioSeconds: Partial<Record<ScenarioName, number>> = {}
  for (const scenario of config.scenarios) {
    const s0 = performance.now()
    log(`scenario ${scenario}`)
    const ctx: Context = { ...everywhere, systems: systems.filter((s) => s.onlyScenarios === undefined || s.onlyScenarios.includes(scenario)) }
    switch (scenario) {
      case "drain":
        await runDrain(ctx)
        break
      case "latency":
        await runLatency(ctx)
        break
      case "enqueue":
        await runEnqueue(ctx)
        break
      case "history":
        await runHistory(ctx)
        break
      case "cost":
        await runCost(ctx, server.pgStatStatements.available)
        break
      case "memory":
        await runMemory(ctx)
        break
    }
    scenarioSeconds[scenario] = Math.round((performance.now() - s0) / 100) / 10
  }

  const notes: Array<string> = []
  const records = recordsNote(infos)
  if (records !== undefined) notes.push(records)
  for (const [message, count] of warnings) notes.push(`${message} (${count} time${count === 1 ? "" : "s"}).`)
  if (config.scenarios.includes("cost")) {
    notes.push(
      `Cost: statements: ${server.pgStatStatements.detail}. Transactions are pg_stat_database deltas and include the one ` +
        "transaction a LISTENing session commits for every NOTIFY it receives (why pg-boss tuned pays ~2 per single enqueue). " +
        "Worker process CPU is this Node process's (the harness included, the same for every system); server CPU is every " +
        "postgres process on this host (background workers included); WAL flushes are pg_stat_wal's wal_sync, server-wide."
    )
  }
  if (config.scenarios.includes("history")) {
    const historyIds = config.historySystems ?? defaultHistorySystems(systems.map((s) => s.id))
    notes.push(
      "History: Graphile Worker deletes jobs when they complete, so the finished jobs it keeps are permanently failed ones; those are what its table is seeded with. " +
        "skiplock's seed also fills job_runs (one row per job) and audit_logs (two rows per job), as processing would. " +
        "Claim statement times are measured client-side (call to result) and cover one claim statement, whatever its batch size." +
        (historyIds.includes("pg-boss") ? "" : " pg-boss (default) is left out: its drain is bound by its 2 s poll, not by the table.")
    )
  }
  if (config.scenarios.includes("latency")) {
    notes.push(
      `Latency samples are spaced by a random gap (up to ${config.latencyGapMs} ms; up to the poll interval for systems that only poll) so enqueues land at random points of a poll cycle.`
    )
  }
  if (config.scenarios.includes("memory")) {
    notes.push(
      `Memory: the workers (concurrency ${config.memoryConcurrency}) run while ${config.memoryWaves} waves of ${config.memoryJobs} jobs arrive ` +
        `(${config.memorySingles} enqueued one at a time, the rest in batches of ${config.batchSize}); after each wave the heap is read after full collections. ` +
        "Held: after the first wave, minus the heap before the system was opened (harness and system share the process, so it also depends on what ran before it: no ratio). " +
        "Growth: the least-squares slope of the readings from the second wave on, per 10,000 jobs; a leak of 100 bytes a job shows as about 1,000 KB, and readings of a few hundred KB either way are the noise of a flat heap. " +
        "pg-boss (default) is left out, as in History: its drain is bound by its 2 s poll."
    )
  }
  const report: ReportInput = {
    startedAt,
    finishedAt: new Date(),
    smoke: config.smoke,
    partial,
    environment: {
      node: process.versions.node,
      postgres: `PostgreSQL ${String(server.settings.server_version ?? server.version)}`,
      postgresVersion: server.version,
      postgresSettings: server.settings,
      pgStatStatements: server.pgStatStatements,
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model.trim() ?? "unknown CPU",
      memory: `${Math.round(totalmem() / 2 ** 30)} GiB RAM`,
      loadAverage1m: { start: Math.round(loadAtStart * 100) / 100, end: Math.round(loadavg()[0]! * 100) / 100 },
      platform: `${process.platform} ${process.arch}`,
      scenarioSeconds
    },
    settings: { ...config, serverUrl: redact(config.serverUrl) },
    systems: infos,
    skipped,
    metrics,
    runs,
    notes
  }
  const files = writeResults(config.outDir, report)
  // A full run into this repository's results also goes into the README (its "Latest run" section).
  if (!config.smoke && !partial && resolve(config.outDir) === join(REPOSITORY, "bench", "results")) {
    const readme = join(REPOSITORY, "README.md")
    writeLatestRun(readme, renderMarkdown(report))
    files.push(readme)
  }
  log(`done in ${((performance.now() - t0) / 1000).toFixed(1)} s; wrote ${files.join(", ")}`)
  return { report, files }
}

const redact = (url: string): string => {
  try {
    const u = new URL(url)
    if (u.password !== "") u.password = "***"
    return u.toString()
  } catch {
    return "<unparseable url>"
  }
}

const main = async () => {
  const config = parseConfig(process.argv.slice(2), process.env)
  if (config === "help") {
    process.stdout.write(USAGE)
    return
  }
  let interrupted = false
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) process.exit(130)
    interrupted = true
    process.stderr.write(`\n[bench] ${signal}: dropping the benchmark databases…\n`)
    void dropAllCreated(config.serverUrl).finally(() => process.exit(130))
  }
  process.on("SIGINT", onSignal)
  process.on("SIGTERM", onSignal)
  try {
    const { report } = await runBench(config)
    process.stdout.write(`${renderText(report)}\n`)
  } catch (error) {
    process.stderr.write(`[bench] failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`)
    await dropAllCreated(config.serverUrl)
    process.exitCode = 1
  }
  // Libraries may leave timers behind (keep-alives, maintenance loops); the run is over.
  process.exit(process.exitCode ?? 0)
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith("bench/run.ts")) {
  void main()
}
