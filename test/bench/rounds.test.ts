// The order systems run in within the benchmark's rounds: as listed, then reversed, so that no system
// always runs first and every pair swaps places from one round to the next (the machine's drift and
// the first slot's cold start fall on each side in turn); the history scenario turns its two tables
// round the same way. Checked on every scenario, with stand-in systems that do nothing but note when
// they are opened, and on which table.
import { describe, expect, it } from "vitest"
import { parseConfig, type BenchConfig } from "../../bench/config.js"
import { roundOrder, type Context } from "../../bench/scenarios/common.js"
import { runCost } from "../../bench/scenarios/cost.js"
import { runDrain } from "../../bench/scenarios/drain.js"
import { runEnqueue } from "../../bench/scenarios/enqueue.js"
import { runHistory } from "../../bench/scenarios/history.js"
import { runLatency } from "../../bench/scenarios/latency.js"
import type { SystemInstance } from "../../bench/systems/types.js"
import { standInSystem } from "./standIn.js"

const serverUrl = process.env.DATABASE_URL || process.env.SKIPLOCK_TEST_ADMIN_URL || ""

const standIn = (id: string, opened: Array<string>) =>
  standInSystem(id, async (url): Promise<SystemInstance> => {
    // The history scenario's databases: a fresh empty one per run, the seeded one kept for all rounds.
    opened.push(`${id}${url.includes("_history_empty") ? " empty" : url.includes("_history") ? " full" : ""}`)
    return { enqueueOne: async () => {}, enqueueBatch: async () => {}, startWorkers: async () => {}, stopWorkers: async () => {}, close: async () => {} }
  })

describe("bench rounds", () => {
  it("run the systems as listed, then reversed", () => {
    expect([0, 1, 2, 3].map((round) => roundOrder(["a", "b", "c"], round).join(""))).toEqual(["abc", "cba", "abc", "cba"])
  })

  it("alternate that way in the drain, latency, enqueue and cost scenarios", async () => {
    expect(serverUrl, "no PostgreSQL server: set DATABASE_URL or run through vitest's globalSetup").not.toBe("")
    const zero = ["--drain-jobs", "0", "--latency-samples", "0", "--enqueue-single", "0", "--enqueue-batch-jobs", "0", "--cost-jobs", "0"]
    const config = parseConfig(["--smoke", "--quiet", "--rounds", "2", "--cost-rounds", "2", "--concurrency", "5", ...zero], { DATABASE_URL: serverUrl })
    expect(config).not.toBe("help")
    const scenarios = { drain: runDrain, latency: runLatency, enqueue: runEnqueue, cost: (ctx: Context) => runCost(ctx, false) }
    for (const [name, run] of Object.entries(scenarios)) {
      const opened: Array<string> = []
      const ctx: Context = {
        config: config as BenchConfig,
        systems: ["a", "b", "c"].map((id) => standIn(id, opened)),
        metrics: [],
        runs: [],
        log: () => {},
        warn: () => {}
      }
      await run(ctx)
      // Round 1 a b c, round 2 c b a: the two c runs meet in the middle. (The cost scenario opens each
      // system once per phase, so repeats in a row are one run.)
      expect(opened.filter((id, i) => id !== opened[i - 1]).join(", "), name).toBe("a, b, c, b, a")
    }
  }, 60_000)

  it("drain the history scenario's empty table first in one round and its full table first in the next", async () => {
    const config = parseConfig(["--smoke", "--quiet", "--history-rounds", "2", "--history-rows", "0", "--history-jobs", "0"], { DATABASE_URL: serverUrl })
    const opened: Array<string> = []
    const ctx: Context = { config: config as BenchConfig, systems: ["a", "b"].map((id) => standIn(id, opened)), metrics: [], runs: [], log: () => {}, warn: () => {} }
    await runHistory(ctx)
    expect(opened.join(", ")).toBe("a empty, a full, b empty, b full, b full, b empty, a full, a empty")
  }, 60_000)
})
