/**
 * `npm run chaos`: the fault scenarios of issue 5 at full size, each against a
 * fresh database on a throwaway PostgreSQL this script starts itself (never the
 * machine's shared server), with three worker processes
 * (test/reliability/fixtures/workerProcess.ts). Prints one table: scenario,
 * jobs enqueued, completed, lost, run twice, recovery time.
 *
 *   npm run chaos                                  all scenarios, 5,000 jobs each
 *   npm run chaos -- --jobs 1000                   smaller
 *   npm run chaos -- --only kill,restart           some of them
 *   npm run chaos -- --prefetch 5                  workers that claim 5 ahead
 *   npm run chaos -- --markdown docs/CHAOS.md   also rewrite docs/CHAOS.md (README shows its table)
 *
 * Exits 1 when a job was lost or run twice, or the queue holds another number of jobs than enqueued.
 */
import { Effect, type Scope } from "effect"
import { writeFileSync } from "node:fs"
import { parseArgs } from "node:util"
import { acquireTestDatabase } from "../src/testing/TestDatabase.js"
import type { WorkerSettings } from "../test/reliability/harness/cluster.js"
import {
  connectionsExhausted,
  idleInTransaction,
  restartPostgres,
  type ScenarioResult,
  stopOneWorker,
  terminateRepeatedly
} from "../test/reliability/harness/scenarios.js"
import { throwawayPostgres, type ThrowawayPostgres } from "../test/reliability/harness/throwawayPostgres.js"

const { values: args } = parseArgs({
  options: {
    jobs: { type: "string", default: "5000" },
    only: { type: "string" },
    prefetch: { type: "string", default: "0" },
    markdown: { type: "string" }
  }
})
const jobs = Number(args.jobs)

// Shorter than the runtime's defaults (lease 30 s, heartbeat 10 s, rescue 5 s, poll 5 s, backoff 30 s) so a run
// takes minutes, not hours; the recovery bound scales with them: lease + one rescue pass.
const settings: WorkerSettings = {
  leaseMs: 10_000,
  heartbeatMs: 3_000,
  rescueMs: 2_000,
  pollMs: 2_000,
  concurrency: 5,
  batchSize: 5,
  prefetch: Number(args.prefetch),
  handlerMs: 20,
  maxConnections: 8,
  retryBackoffMs: 1_000,
  shutdownMs: 10_000
}

type Scenario = (server: ThrowawayPostgres, url: string) => Effect.Effect<ScenarioResult, unknown, Scope.Scope>

const scenarios: ReadonlyArray<readonly [string, Scenario]> = [
  ["kill", (_, url) => stopOneWorker(url, { jobs, settings, signal: "SIGKILL" })],
  ["sigterm", (_, url) => stopOneWorker(url, { jobs, settings, signal: "SIGTERM" })],
  ["restart", (server, url) => restartPostgres(server, url, { jobs, settings, downMs: 5_000 })],
  // Half a second apart: the 10 rounds must end while jobs are left, and with prefetch on a fast machine the
  // 4,000 jobs after the first termination took less than the 9 s that rounds a second apart need.
  ["terminate", (_, url) => terminateRepeatedly(url, { jobs, settings, rounds: 10, everyMs: 500 })],
  ["idle", (_, url) => idleInTransaction(url, { jobs, settings, holdMs: 15_000, lockedRunning: 7, lockedWaiting: 40 })],
  ["slots", (server, url) => connectionsExhausted(server.adminUrl, url, { jobs, settings, holdMs: 10_000 })]
]

const selected = args.only === undefined ? scenarios : scenarios.filter(([name]) => args.only!.split(",").includes(name))

// A recovery cannot take less than nothing: a job finished as the fault began (its completion time comes from
// the worker's clock, the fault's from the harness's) shows as 0, its raw value stays in the details.
const seconds = (ms: number | undefined) => (ms === undefined ? "—" : `${(Math.max(0, ms) / 1000).toFixed(1)} s`)

const table = (results: ReadonlyArray<ScenarioResult>) => {
  const header = ["scenario", "jobs enqueued", "completed", "lost", "run twice", "recovery time"]
  const rows = results.map((r) => [
    r.scenario,
    r.tally.enqueued.toLocaleString("en"),
    r.tally.completed.toLocaleString("en"),
    String(r.tally.lost),
    String(r.tally.runTwice),
    seconds(r.recovery.ms) + (typeof r.details["completedAfterMs"] === "number" && r.scenario.startsWith("kill")
      ? ` (all completed after ${seconds(r.details["completedAfterMs"] as number)})`
      : "")
  ])
  return [`| ${header.join(" | ")} |`, `|${header.map(() => "---").join("|")}|`, ...rows.map((row) => `| ${row.join(" | ")} |`)].join("\n")
}

const notes = (results: ReadonlyArray<ScenarioResult>) =>
  results
    .map((r) => {
      const warnings = Object.values(r.warnings).reduce((a, b) => a + b, 0)
      const { audit, ...details } = r.details
      return `- **${r.scenario}**: recovery = ${r.recovery.label}. ${r.tally.started.toLocaleString("en")} attempts started, ` +
        `${r.tally.rescued} rescued, ${warnings} warning/error log lines over 3 workers, ${r.workersAlive} workers alive at the end. ` +
        `Details: \`${JSON.stringify(details)}\`; audit: \`${JSON.stringify(audit)}\``
    })
    .join("\n")

const program = Effect.gen(function* () {
  const started = Date.now()
  console.log(`chaos: ${selected.map(([name]) => name).join(", ")}; ${jobs.toLocaleString("en")} jobs each; starting a throwaway PostgreSQL…`)
  const server = yield* throwawayPostgres({ maxConnections: 60 })
  const results: Array<ScenarioResult> = []
  for (const [name, scenario] of selected) {
    const t0 = Date.now()
    process.stdout.write(`chaos: ${name}… `)
    const result = yield* Effect.scoped(
      Effect.flatMap(acquireTestDatabase({ adminUrl: server.adminUrl }), ({ url }) => scenario(server, url))
    )
    results.push(result)
    console.log(`${result.tally.completed}/${result.tally.enqueued} completed, ${result.tally.lost} lost, ${result.tally.runTwice} run twice, recovery ${seconds(result.recovery.ms)} (${seconds(Date.now() - t0)})`)
  }
  const settingsLine = `Worker settings: 3 processes × concurrency ${settings.concurrency}` +
    `${settings.prefetch ? `, prefetch ${settings.prefetch}` : ""}, lease ${settings.leaseMs / 1000} s, heartbeat ${settings.heartbeatMs / 1000} s, ` +
    `rescue every ${settings.rescueMs / 1000} s, poll ${settings.pollMs / 1000} s, retry backoff ${settings.retryBackoffMs / 1000} s × attempt², ` +
    `handler ${settings.handlerMs} ms inside its transaction. Total run time ${seconds(Date.now() - started)}.`
  console.log(`\n${table(results)}\n\n${settingsLine}\n\n${notes(results)}`)
  if (args.markdown !== undefined) {
    writeFileSync(args.markdown, markdown(results, settingsLine))
    console.log(`\nwrote ${args.markdown}`)
  }
  // The tally counts job by number; a row count other than the jobs enqueued means rows went missing or doubled.
  const bad = results.filter((r) => r.tally.lost > 0 || r.tally.runTwice > 0 || r.tally.enqueued !== jobs)
  if (bad.length > 0) {
    console.error(`chaos: FAILED: ${bad.map((r) => r.scenario).join(", ")}`)
    process.exitCode = 1
  }
})

const markdown = (results: ReadonlyArray<ScenarioResult>, settingsLine: string) => `## Chaos: faults survived

\`npm run chaos\` runs each fault scenario of the reliability issue against a fresh database on a throwaway
PostgreSQL it starts itself (embedded; never a shared server), with three worker processes whose handler writes one
row per job inside its transaction, so a committed effect is counted exactly. *Lost* counts jobs that did not end
\`completed\` with exactly one committed effect; *run twice* counts jobs whose effect committed more than once.
It takes several minutes and is not part of \`npm test\`; short versions of every scenario are (\`test/reliability/\`).

Latest run (${new Date().toISOString().slice(0, 10)}, ${jobs.toLocaleString("en")} jobs per scenario, on a shared 2-core machine):

${table(results)}

${settingsLine}

${notes(results)}

Reading it: *recovery time* is, for kill -9, the time until every job the dead worker held was rescued (back in
the queue and runnable: lease + at most one rescue pass); they then complete in their turn, after the jobs ahead of
them. For SIGTERM it is the time until the stopped worker's jobs were done (it finishes them before it exits). For
the database faults it is the time from the fault's end until jobs complete again. Attempts cut off with their
connection are released without counting them (\`job_released\`, reason \`database connection lost\`) and run again
after the backoff; none ran twice, because a transactional handler's effect commits with its run's record (job_runs) or not at all.

Run it yourself:

\`\`\`sh
npm run chaos                      # all scenarios, 5,000 jobs each
npm run chaos -- --jobs 1000       # smaller
npm run chaos -- --only kill,restart
npm run chaos -- --prefetch 5       # workers that claim ahead (WORKER_PREFETCH)
npm run chaos -- --markdown docs/CHAOS.md   # also rewrite this page
\`\`\`

The scenarios: \`kill\` (kill -9 of one of three workers mid-run), \`sigterm\` (graceful stop of one), \`restart\` (PostgreSQL
fast shutdown, down 5 s, started again), \`terminate\` (\`pg_terminate_backend\` on every worker connection, LISTEN included,
10 times half a second apart), \`idle\` (an open transaction row-locks 50 running and waiting jobs for 15 s, longer than the
lease), \`slots\` (another client takes every free connection slot of the server for 10 s, after the workers'
connections were dropped).
`

Effect.runPromise(Effect.scoped(program)).catch((error) => {
  console.error("chaos: the run itself failed:", error)
  process.exitCode = 2
})

