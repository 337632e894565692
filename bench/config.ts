/**
 * Benchmark settings from flags and environment. Every flag `--some-flag`
 * also reads `BENCH_SOME_FLAG`; flags win. `--smoke` (or BENCH_SMOKE=1)
 * switches every default to a tiny run that finishes in seconds.
 */
import { parseArgs } from "node:util"

export const SCENARIOS = ["drain", "latency", "enqueue", "history", "cost", "memory"] as const
export type ScenarioName = (typeof SCENARIOS)[number]

export interface BenchConfig {
  readonly smoke: boolean
  readonly serverUrl: string
  readonly outDir: string
  readonly scenarios: ReadonlyArray<ScenarioName>
  readonly systems: ReadonlyArray<string> | undefined
  readonly rounds: number
  readonly drainJobs: number
  readonly concurrency: ReadonlyArray<number>
  readonly drainTimeoutMs: number
  readonly latencySamples: number
  readonly latencyConcurrency: number
  readonly latencyBudgetMs: number
  readonly latencyGapMs: number
  readonly enqueueSingle: number
  readonly enqueueBatchJobs: number
  readonly batchSize: number
  readonly historyRows: number
  readonly historyJobs: number
  readonly historyConcurrency: number
  readonly historyRounds: number
  readonly historySystems: ReadonlyArray<string> | undefined
  readonly costJobs: number
  readonly costConcurrency: number
  readonly costRounds: number
  readonly memoryRounds: number
  readonly memoryWaves: number
  readonly memoryJobs: number
  readonly memorySingles: number
  readonly memoryConcurrency: number
  readonly bossBatchSize: number
  readonly quiet: boolean
}

const FLAGS = {
  smoke: { type: "boolean" },
  help: { type: "boolean", short: "h" },
  quiet: { type: "boolean", short: "q" },
  "database-url": { type: "string" },
  out: { type: "string" },
  scenarios: { type: "string" },
  systems: { type: "string" },
  rounds: { type: "string" },
  "drain-jobs": { type: "string" },
  concurrency: { type: "string" },
  "drain-timeout": { type: "string" },
  "latency-samples": { type: "string" },
  "latency-concurrency": { type: "string" },
  "latency-budget": { type: "string" },
  "latency-gap": { type: "string" },
  "enqueue-single": { type: "string" },
  "enqueue-batch-jobs": { type: "string" },
  "batch-size": { type: "string" },
  "history-rows": { type: "string" },
  "history-jobs": { type: "string" },
  "history-concurrency": { type: "string" },
  "history-rounds": { type: "string" },
  "history-systems": { type: "string" },
  "cost-jobs": { type: "string" },
  "cost-concurrency": { type: "string" },
  "cost-rounds": { type: "string" },
  "memory-rounds": { type: "string" },
  "memory-waves": { type: "string" },
  "memory-jobs": { type: "string" },
  "memory-singles": { type: "string" },
  "memory-concurrency": { type: "string" },
  "boss-batch-size": { type: "string" }
} as const

export const USAGE = `Usage: npm run bench -- [options]      (or: tsx bench/run.ts [options])

Compares skiplock with Graphile Worker and pg-boss (default and tuned) on one
PostgreSQL server. Every flag can also be given as an environment variable:
--drain-jobs 5000 is BENCH_DRAIN_JOBS=5000. Durations are in seconds.

  --smoke                  tiny run (a few hundred jobs, 1 round); BENCH_SMOKE=1
  --database-url URL       server admin URL (default: $DATABASE_URL or
                           postgres://postgres@127.0.0.1:5432/postgres)
  --out DIR                where JSON and markdown go (default bench/results)
  --scenarios LIST         drain,latency,enqueue,history,cost,memory (default: all)
  --systems LIST           skiplock,skiplock-no-handoff,skiplock-prefetch,
                           skiplock-prefetch-20,graphile-worker,
                           graphile-worker-local-queue,pg-boss,pg-boss-tuned
                           (default: all)
  --rounds N               rounds per scenario, systems alternate within each (3)
  --drain-jobs N           jobs queued before a drain (20000)
  --concurrency LIST       drain concurrencies (5,50)
  --drain-timeout S        a drain with less than half its jobs started by then is
                           cut off, its rate taken from the jobs done so far;
                           others get 4 × this to finish (15)
  --latency-samples N      enqueue-to-start samples per round (1000)
  --latency-concurrency N  workers during the latency scenario (5)
  --latency-budget S       per system and round; fewer samples if exceeded (20)
  --latency-gap MS         max random idle gap between samples (10)
  --enqueue-single N       single inserts timed (2000)
  --enqueue-batch-jobs N   jobs inserted in batches (20000)
  --batch-size N           batch size for batch inserts and seeding (1000)
  --history-rows N         finished jobs kept in the table (1000000)
  --history-jobs N         jobs drained on the empty and the full table (10000)
  --history-concurrency N  (50)
  --history-rounds N       (2)
  --history-systems LIST   (default: all but pg-boss default, whose drain is
                           poll-bound and says nothing about table size)
  --cost-jobs N            jobs per cost phase (2000)
  --cost-concurrency N     (5)
  --cost-rounds N          (3)
  --memory-rounds N        (2)
  --memory-waves N         waves of jobs while the workers run; the first is the
                           warm-up, growth is the heap's slope over the others
                           (4, at least 3)
  --memory-jobs N          jobs per wave (10000)
  --memory-singles N       of which enqueued one at a time, the rest in batches (500)
  --memory-concurrency N   (5)
  --boss-batch-size N      pg-boss tuned batchSize (100)
  --quiet                  no progress on stderr
`

const envName = (flag: string) => `BENCH_${flag.replace(/-/g, "_").toUpperCase()}`

const num = (name: string, raw: string | undefined, fallback: number): number => {
  if (raw === undefined || raw === "") return fallback
  const value = Number(raw)
  if (!Number.isFinite(value) || value < 0) throw new Error(`--${name} must be a non-negative number, got '${raw}'`)
  return value
}

const list = (raw: string | undefined): Array<string> | undefined =>
  raw === undefined || raw.trim() === "" ? undefined : raw.split(",").map((s) => s.trim()).filter((s) => s !== "")

export const parseConfig = (argv: ReadonlyArray<string>, env: NodeJS.ProcessEnv): BenchConfig | "help" => {
  const { values } = parseArgs({ args: [...argv], options: FLAGS, strict: true, allowPositionals: false })
  const get = (flag: keyof typeof FLAGS): string | undefined => {
    const v = (values as Record<string, string | boolean | undefined>)[flag]
    if (typeof v === "string") return v
    if (v === true) return "1"
    return env[envName(flag)]
  }
  const truthy = (raw: string | undefined) => raw !== undefined && raw !== "" && raw !== "0" && raw.toLowerCase() !== "false"
  if (truthy(get("help"))) return "help"
  const smoke = truthy(get("smoke"))
  // Smoke drains take well under a second; their cut-off only matters when the host stalls (npm test runs
  // other files beside the smoke run, and Graphile Worker's c=50 drain was once cut off at 2 s under them).
  const d = smoke
    ? { rounds: 1, drainJobs: 300, concurrency: "5,50", drainTimeout: 10, latencySamples: 30, latencyBudget: 3, enqueueSingle: 100, enqueueBatchJobs: 300, batchSize: 100, historyRows: 5000, historyJobs: 300, historyRounds: 1, costJobs: 100, costRounds: 1, memoryRounds: 1, memoryJobs: 200, memorySingles: 20 }
    : { rounds: 3, drainJobs: 20000, concurrency: "5,50", drainTimeout: 15, latencySamples: 1000, latencyBudget: 20, enqueueSingle: 2000, enqueueBatchJobs: 20000, batchSize: 1000, historyRows: 1_000_000, historyJobs: 10000, historyRounds: 2, costJobs: 2000, costRounds: 3, memoryRounds: 2, memoryJobs: 10000, memorySingles: 500 }
  const scenarios = (list(get("scenarios")) ?? [...SCENARIOS]).map((s) => {
    if (!(SCENARIOS as ReadonlyArray<string>).includes(s)) throw new Error(`unknown scenario '${s}' (known: ${SCENARIOS.join(", ")})`)
    return s as ScenarioName
  })
  const concurrency = (list(get("concurrency")) ?? d.concurrency.split(",")).map((c) => {
    const n = num("concurrency", c, 0)
    if (!Number.isInteger(n) || n < 1) throw new Error(`--concurrency values must be positive integers, got '${c}'`)
    return n
  })
  const rounds = Math.max(1, Math.round(num("rounds", get("rounds"), d.rounds)))
  return {
    smoke,
    serverUrl: get("database-url") ?? env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres",
    outDir: get("out") ?? "bench/results",
    scenarios,
    systems: list(get("systems")),
    rounds,
    drainJobs: num("drain-jobs", get("drain-jobs"), d.drainJobs),
    concurrency,
    drainTimeoutMs: num("drain-timeout", get("drain-timeout"), d.drainTimeout) * 1000,
    latencySamples: num("latency-samples", get("latency-samples"), d.latencySamples),
    latencyConcurrency: num("latency-concurrency", get("latency-concurrency"), 5),
    latencyBudgetMs: num("latency-budget", get("latency-budget"), d.latencyBudget) * 1000,
    latencyGapMs: num("latency-gap", get("latency-gap"), 10),
    enqueueSingle: num("enqueue-single", get("enqueue-single"), d.enqueueSingle),
    enqueueBatchJobs: num("enqueue-batch-jobs", get("enqueue-batch-jobs"), d.enqueueBatchJobs),
    batchSize: Math.max(1, num("batch-size", get("batch-size"), d.batchSize)),
    historyRows: num("history-rows", get("history-rows"), d.historyRows),
    historyJobs: num("history-jobs", get("history-jobs"), d.historyJobs),
    historyConcurrency: num("history-concurrency", get("history-concurrency"), 50),
    historyRounds: Math.max(1, Math.round(num("history-rounds", get("history-rounds"), get("rounds") !== undefined ? rounds : d.historyRounds))),
    historySystems: list(get("history-systems")),
    costJobs: num("cost-jobs", get("cost-jobs"), d.costJobs),
    costConcurrency: num("cost-concurrency", get("cost-concurrency"), 5),
    // Three by default: CPU per job is read over a few hundred 10 ms ticks of the whole host, and one reading has no spread.
    costRounds: Math.max(1, Math.round(num("cost-rounds", get("cost-rounds"), d.costRounds))),
    memoryRounds: Math.max(1, Math.round(num("memory-rounds", get("memory-rounds"), get("rounds") !== undefined ? rounds : d.memoryRounds))),
    memoryWaves: Math.max(3, Math.round(num("memory-waves", get("memory-waves"), 4))),
    memoryJobs: Math.max(1, Math.round(num("memory-jobs", get("memory-jobs"), d.memoryJobs))),
    memorySingles: Math.round(num("memory-singles", get("memory-singles"), d.memorySingles)),
    memoryConcurrency: Math.max(1, Math.round(num("memory-concurrency", get("memory-concurrency"), 5))),
    bossBatchSize: Math.max(1, Math.round(num("boss-batch-size", get("boss-batch-size"), 100))),
    quiet: truthy(get("quiet"))
  }
}
