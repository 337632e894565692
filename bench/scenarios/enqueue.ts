/** Enqueue: jobs/s for one-at-a-time inserts and for batch inserts, no workers running. */
import { performance } from "node:perf_hooks"
import { enqueueAll, fmtInt, metric, poolSizeFor, record, roundOrder, withFreshDatabase, withInstance, type Context } from "./common.js"

export const runEnqueue = async (ctx: Context): Promise<void> => {
  const { rounds, enqueueSingle, enqueueBatchJobs, batchSize } = ctx.config
  const single = metric(ctx, "enqueue", "enqueue.single", `Enqueue one job per call (${fmtInt(enqueueSingle)} sequential calls)`, "jobs/s", "higher")
  const batch = metric(ctx, "enqueue", "enqueue.batch", `Enqueue in batches of ${fmtInt(batchSize)} (${fmtInt(enqueueBatchJobs)} jobs)`, "jobs/s", "higher")
  for (let round = 0; round < rounds; round++) {
    for (const system of roundOrder(ctx.systems, round)) {
      const result = await withFreshDatabase(ctx, system, "enqueue", (db) =>
        withInstance(ctx, system, db, poolSizeFor(1), async (instance) => {
          for (let k = 0; k < 20; k++) await instance.enqueueOne({ i: -1 - k })
          await instance.enqueueBatch([{ i: -100 }, { i: -101 }])
          const t0 = performance.now()
          for (let k = 0; k < enqueueSingle; k++) await instance.enqueueOne({ i: k })
          const t1 = performance.now()
          await enqueueAll(instance, enqueueBatchJobs, batchSize, enqueueSingle)
          const t2 = performance.now()
          return {
            singlePerSec: (enqueueSingle / (t1 - t0)) * 1000,
            batchPerSec: (enqueueBatchJobs / (t2 - t1)) * 1000
          }
        })
      )
      record(single, system.id, round, result.singlePerSec)
      record(batch, system.id, round, result.batchPerSec)
      ctx.runs.push({ scenario: "enqueue", round, system: system.id, ...result })
      ctx.log(`enqueue round ${round + 1}/${rounds} ${system.id}: single ${fmtInt(result.singlePerSec)} jobs/s, batch ${fmtInt(result.batchPerSec)} jobs/s`)
    }
  }
}
