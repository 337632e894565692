/**
 * History: the same drain on an empty table and on one that keeps N finished
 * jobs (seeded once per system with one INSERT … SELECT generate_series).
 * Reports drain speed and the client-side time of the claim statement.
 */
import { performance } from "node:perf_hooks"
import { createFreshDatabase, type FreshDatabase } from "../db.js"
import { statementCount, timeStatements } from "../instrument.js"
import { median, quantile } from "../stats.js"
import type { SystemAdapter } from "../systems/types.js"
import { cutOffNote, drain, enqueueAll, fmtInt, metric, poolSizeFor, record, withFreshDatabase, withInstance, type Context, type DrainResult } from "./common.js"

export const defaultHistorySystems = (ids: ReadonlyArray<string>): Array<string> => ids.filter((id) => id !== "pg-boss")

export const runHistory = async (ctx: Context): Promise<void> => {
  const { historyRows, historyJobs, historyConcurrency: c, historyRounds, drainTimeoutMs, batchSize } = ctx.config
  const wanted = ctx.config.historySystems ?? defaultHistorySystems(ctx.systems.map((s) => s.id))
  const systems = ctx.systems.filter((s) => wanted.includes(s.id))
  if (systems.length === 0) return
  const rows = fmtInt(historyRows)
  const rateEmpty = metric(ctx, "history", "history.empty.rate", `Drain ${fmtInt(historyJobs)} jobs, c=${c}, empty table`, "jobs/s", "higher")
  const rateFull = metric(ctx, "history", "history.full.rate", `Drain ${fmtInt(historyJobs)} jobs, c=${c}, ${rows} finished jobs kept`, "jobs/s", "higher")
  const kept = metric(ctx, "history", "history.kept", `Drain speed kept with ${rows} finished jobs (full ÷ empty)`, "×", "higher")
  const claimEmpty = metric(ctx, "history", "history.empty.claim", `Claim statement, median, empty table`, "ms", "lower")
  const claimFull = metric(ctx, "history", "history.full.claim", `Claim statement, median, ${rows} finished jobs kept`, "ms", "lower")

  const historyDbs = new Map<string, FreshDatabase>()
  try {
    for (const system of systems) {
      const db = await createFreshDatabase(ctx.config.serverUrl, `${system.id}_history`)
      historyDbs.set(system.id, db)
      await system.install(db.url)
      const t0 = performance.now()
      await system.seedHistory(await db.observer(), historyRows)
      const seedMs = performance.now() - t0
      ctx.runs.push({ scenario: "history", phase: "seed", system: system.id, rows: historyRows, seedMs })
      ctx.log(`history seed ${system.id}: ${rows} finished jobs in ${(seedMs / 1000).toFixed(1)} s`)
    }

    const measured = async (system: SystemAdapter, db: FreshDatabase) =>
      withInstance(ctx, system, db, poolSizeFor(c), async (instance) => {
        const observer = await db.observer()
        await system.discardUnfinished(observer)
        await enqueueAll(instance, historyJobs, batchSize)
        const stop = timeStatements((text) => system.isClaimQuery(text))
        try {
          const result = await drain(system, instance, observer, { jobs: historyJobs, concurrency: c, timeoutMs: drainTimeoutMs, statementCount })
          return { result, claims: stop() }
        } finally {
          stop()
        }
      })

    for (let round = 0; round < historyRounds; round++) {
      for (const system of systems) {
        const empty = await withFreshDatabase(ctx, system, "history_empty", (db) => measured(system, db))
        const full = await measured(system, historyDbs.get(system.id)!)
        const cut = (r: DrainResult) => (r.cutOff ? cutOffNote(drainTimeoutMs) : undefined)
        record(rateEmpty, system.id, round, empty.result.jobsPerSec, cut(empty.result))
        record(rateFull, system.id, round, full.result.jobsPerSec, cut(full.result))
        record(kept, system.id, round, full.result.jobsPerSec / empty.result.jobsPerSec)
        record(claimEmpty, system.id, round, empty.claims.length > 0 ? median(empty.claims) : null)
        record(claimFull, system.id, round, full.claims.length > 0 ? median(full.claims) : null)
        for (const [table, run] of [["empty", empty], ["full", full]] as const) {
          ctx.runs.push({
            scenario: "history",
            round,
            system: system.id,
            table,
            ...run.result,
            claimStatements: run.claims.length,
            claimMsP50: run.claims.length > 0 ? median(run.claims) : null,
            claimMsP95: run.claims.length > 0 ? quantile(run.claims, 0.95) : null
          })
        }
        ctx.log(
          `history round ${round + 1}/${historyRounds} ${system.id}: empty ${fmtInt(empty.result.jobsPerSec)} jobs/s` +
            ` (${fmtInt(empty.claims.length)} claims, median ${median(empty.claims).toFixed(2)} ms${empty.result.cutOff ? ", cut off" : ""}),` +
            ` ${rows} kept ${fmtInt(full.result.jobsPerSec)} jobs/s (${fmtInt(full.claims.length)} claims, median ${median(full.claims).toFixed(2)} ms${full.result.cutOff ? ", cut off" : ""})`
        )
      }
    }
  } finally {
    for (const db of historyDbs.values()) await db.drop().catch(() => {})
  }
}
