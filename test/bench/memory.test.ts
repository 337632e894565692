// The benchmark's memory scenario tells a system whose heap grows with the jobs it processes from one whose
// heap stays flat, and reports what a system holds while it runs. Two stand-in systems run in process (their
// "jobs" never touch the database; the scenario's fresh databases are real): one keeps 2 KB of every job it
// has run, one keeps nothing; both hold a fixed 8 MB while open.
import { describe, expect, it } from "vitest"
import { parseConfig, type BenchConfig } from "../../bench/config.js"
import type { Context, Metric } from "../../bench/scenarios/common.js"
import { runMemory, slope } from "../../bench/scenarios/memory.js"
import type { BenchPayload, SystemAdapter } from "../../bench/systems/types.js"
import { standInSystem } from "./standIn.js"

const serverUrl = process.env.DATABASE_URL || process.env.SKIPLOCK_TEST_ADMIN_URL || ""

const standIn = (id: string, bytesKeptPerJob: number) =>
  standInSystem(id, async () => {
    const heldWhileOpen = new Array<number>(1024 * 1024).fill(0.5) // 8 MB of doubles on the heap (a typed array's would not be)
    const kept: Array<Array<number>> = []
    let onJob: ((payload: BenchPayload) => void) | undefined
    const run = (payload: BenchPayload) => {
      if (bytesKeptPerJob > 0) kept.push(new Array<number>(bytesKeptPerJob / 8).fill(payload.i + 0.5))
      onJob?.(payload)
    }
    return {
      enqueueOne: async (payload) => run(payload),
      enqueueBatch: async (payloads) => payloads.forEach(run),
      startWorkers: async (options) => void (onJob = options.onJob),
      stopWorkers: async () => void (onJob = undefined),
      close: async () => void (heldWhileOpen[0] = kept.length)
    }
  })

const runWith = async (systems: ReadonlyArray<SystemAdapter>) => {
  const smoke = parseConfig(["--smoke", "--quiet"], {}) as BenchConfig
  const config: BenchConfig = { ...smoke, serverUrl, memoryRounds: 1, memoryWaves: 4, memoryJobs: 2000, memorySingles: 100 }
  const metrics: Array<Metric> = []
  const ctx: Context = { config, systems, metrics, runs: [], log: () => {}, warn: () => {} }
  await runMemory(ctx)
  const value = (key: string, system: string) => metrics.find((m) => m.key === key)!.values[system]![0]!
  return { value }
}

describe("bench memory scenario", () => {
  it("the slope of equally spaced readings is their trend, not their ends", () => {
    expect(slope([10, 20, 30, 40])).toBe(10)
    expect(slope([5, 5, 5])).toBe(0)
    expect(slope([0, 10, 0])).toBe(0)
  })

  it("reports 2 KB a job kept as about 20,000 KB per 10,000 jobs, a flat heap as about 0, and what each holds open", async () => {
    const { value } = await runWith([standIn("leaks", 2048), standIn("flat", 0)])
    expect(value("memory.growth", "leaks")).toBeGreaterThan(15_000)
    expect(value("memory.growth", "leaks")).toBeLessThan(30_000)
    expect(Math.abs(value("memory.growth", "flat"))).toBeLessThan(1_000)
    expect(value("memory.held", "flat")).toBeGreaterThan(7.5)
    expect(value("memory.held", "flat")).toBeLessThan(12)
  })
})
