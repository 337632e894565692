/** Drain: N jobs already queued; start C workers; jobs/s until the queue is empty. */
import { statementCount } from "../instrument.js"
import { cutOffNote, drain, enqueueAll, fmtInt, metric, poolSizeFor, record, roundOrder, withFreshDatabase, withInstance, type Context } from "./common.js"

export const runDrain = async (ctx: Context): Promise<void> => {
  const { rounds, drainJobs, concurrency, drainTimeoutMs, batchSize } = ctx.config
  for (let round = 0; round < rounds; round++) {
    for (const c of concurrency) {
      const m = metric(ctx, "drain", `drain.c${c}`, `Drain ${fmtInt(drainJobs)} queued jobs, concurrency ${c}`, "jobs/s", "higher")
      for (const system of roundOrder(ctx.systems, round)) {
        const result = await withFreshDatabase(ctx, system, `drain_c${c}`, (db) =>
          withInstance(ctx, system, db, poolSizeFor(c), async (instance) => {
            await enqueueAll(instance, drainJobs, batchSize)
            const observer = await db.observer()
            return drain(system, instance, observer, { jobs: drainJobs, concurrency: c, timeoutMs: drainTimeoutMs, statementCount })
          })
        )
        const note = result.cutOff ? cutOffNote(drainTimeoutMs) : undefined
        record(m, system.id, round, result.jobsPerSec, note)
        ctx.runs.push({ scenario: "drain", round, system: system.id, ...result })
        ctx.log(
          `drain c=${c} round ${round + 1}/${rounds} ${system.id}: ${fmtInt(result.jobsPerSec)} jobs/s` +
            ` (${fmtInt(result.completed)}/${fmtInt(result.jobs)} in ${(result.elapsedMs / 1000).toFixed(2)} s` +
            `, ${(result.statements / Math.max(1, result.completed)).toFixed(2)} stmts/job${result.cutOff ? ", cut off" : ""})`
        )
      }
    }
  }
}
