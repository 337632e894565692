/**
 * Memory: what a running system keeps on the Node heap, and whether that
 * grows with the jobs it has processed (a leak would). The workers run
 * throughout, as in a service, while waves of jobs arrive (each wave: some
 * single enqueues, one at a time, then the rest in batches) and are processed;
 * after each wave the heap is measured after full collections. The first wave
 * is the warm-up (code compiled, pools filled); growth is the slope of the
 * readings from the second wave on. The harness shares the process, so only differences
 * are reported: held = heap after the first wave − heap before the system was
 * opened.
 */
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"
import { sleep } from "../db.js"
import { defaultHistorySystems } from "./history.js"
import { enqueueAll, fmtInt, metric, poolSizeFor, record, roundOrder, withFreshDatabase, withInstance, type Context } from "./common.js"

// Full collections on demand without asking every caller to start node with --expose-gc.
const collector = (): (() => void) => {
  const exposed = (globalThis as { gc?: () => void }).gc
  if (exposed !== undefined) return exposed
  setFlagsFromString("--expose-gc")
  return runInNewContext("gc") as () => void
}

/** Heap used after full collections, once it stops shrinking (finalizers and weak references settle over a few). */
const settledHeap = async (gc: () => void): Promise<number> => {
  let previous = Number.POSITIVE_INFINITY
  for (let i = 0; i < 6; i++) {
    gc()
    await sleep(20)
    const used = process.memoryUsage().heapUsed
    if (used >= previous) return Math.min(used, previous)
    previous = used
  }
  return previous
}

const MB = 2 ** 20

/** Least-squares slope of values taken at equal steps: a single late reading moves it less than last − first. */
export const slope = (values: ReadonlyArray<number>): number => {
  const n = values.length
  if (n < 2) return Number.NaN
  const meanX = (n - 1) / 2
  const meanY = values.reduce((sum, v) => sum + v, 0) / n
  let num = 0
  let den = 0
  values.forEach((v, x) => {
    num += (x - meanX) * (v - meanY)
    den += (x - meanX) ** 2
  })
  return num / den
}

export const runMemory = async (ctx: Context): Promise<void> => {
  const { memoryRounds, memoryWaves, memoryJobs, memorySingles, memoryConcurrency: c, batchSize, drainTimeoutMs } = ctx.config
  const systems = ctx.systems.filter((s) => defaultHistorySystems(ctx.systems.map((x) => x.id)).includes(s.id))
  if (systems.length === 0) return
  const gc = collector()
  // The slope runs over the readings after the second wave on: the jobs of the waves after it.
  const measuredJobs = (memoryWaves - 2) * memoryJobs
  // No ratio for either: what a system holds depends on what ran in the process before it (0.3 MB first, 0.9 MB
  // last in one round), and growth is near zero.
  const held = metric(ctx, "memory", "memory.held", `Heap held by the running system, c=${c} (after full collections)`, "MB", "lower", false)
  const growth = metric(ctx, "memory", "memory.growth", `Heap growth per 10,000 jobs, over the last ${fmtInt(measuredJobs)} of ${fmtInt(memoryWaves * memoryJobs)} jobs`, "KB", "lower", false)
  for (let round = 0; round < memoryRounds; round++) {
    for (const system of roundOrder(systems, round)) {
      const waves = await withFreshDatabase(ctx, system, "memory", async (db) => {
        const before = await settledHeap(gc)
        return withInstance(ctx, system, db, poolSizeFor(c), async (instance) => {
          let started = 0
          await instance.startWorkers({ concurrency: c, onJob: () => void started++ })
          const observer = await db.observer()
          const heaps: Array<number> = []
          for (let wave = 0; wave < memoryWaves; wave++) {
            const first = wave * memoryJobs
            const singles = Math.min(memorySingles, memoryJobs)
            for (let i = 0; i < singles; i++) await instance.enqueueOne({ i: first + i })
            await enqueueAll(instance, memoryJobs - singles, batchSize, first + singles)
            const deadline = performance.now() + 4 * drainTimeoutMs
            while (started < first + memoryJobs || (await system.unfinishedCount(observer)) > 0) {
              if (performance.now() > deadline) throw new Error(`${system.id}: memory wave ${wave + 1} not processed within ${(4 * drainTimeoutMs) / 1000} s`)
              await sleep(10)
            }
            heaps.push((await settledHeap(gc)) - before)
          }
          return heaps
        })
      })
      const heldMb = waves[0]! / MB
      const growthKb = (slope(waves.slice(1)) / 1024 / memoryJobs) * 10_000
      record(held, system.id, round, heldMb)
      record(growth, system.id, round, growthKb)
      ctx.runs.push({ scenario: "memory", round, system: system.id, jobsPerWave: memoryJobs, heapAfterWaveBytes: waves })
      ctx.log(
        `memory round ${round + 1}/${memoryRounds} ${system.id}: held ${heldMb.toFixed(1)} MB, ` +
          `after each wave ${waves.map((b) => (b / MB).toFixed(1)).join(" / ")} MB, growth ${growthKb.toFixed(0)} KB per 10,000 jobs`
      )
    }
  }
}
