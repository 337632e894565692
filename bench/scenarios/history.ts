/**
 * History: the same drain on an empty table and on one that keeps N finished
 * jobs (seeded once per system with one INSERT … SELECT generate_series).
 * Reports drain speed, the client-side time of the claim statement, and the
 * WAL each job costs (enqueue and drain, starting from a CHECKPOINT): after a
 * checkpoint the first change to an index page writes the whole page to the
 * WAL, so inserts spread over a large index cost far more than appends.
 */
import { performance } from "node:perf_hooks"
import type pg from "pg"
import { createFreshDatabase, type FreshDatabase } from "../db.js"
import { statementCount, timeStatements } from "../instrument.js"
import { median, quantile } from "../stats.js"
import type { SystemAdapter } from "../systems/types.js"
import { cutOffNote, drain, enqueueAll, fmtInt, metric, poolSizeFor, record, roundOrder, withFreshDatabase, withInstance, type Context, type DrainResult } from "./common.js"

// The WAL position right after a CHECKPOINT; undefined when the user may not checkpoint (then no WAL figure).
const checkpointedWalPosition = async (observer: pg.Client): Promise<string | undefined> => {
  try {
    await observer.query("CHECKPOINT")
  } catch {
    return undefined
  }
  const { rows } = await observer.query<{ lsn: string }>("SELECT pg_current_wal_lsn()::text AS lsn")
  return rows[0]!.lsn
}

// WAL of the whole server: the bench runs one system at a time, so it is this run's (plus any autovacuum).
const walBytesSince = async (observer: pg.Client, from: string): Promise<number> => {
  const { rows } = await observer.query<{ bytes: string }>("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::text AS bytes", [from])
  return Number(rows[0]!.bytes)
}

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
  const walEmpty = metric(ctx, "history", "history.empty.wal", `WAL per job (enqueue + drain, after a checkpoint), empty table`, "KB", "lower")
  const walFull = metric(ctx, "history", "history.full.wal", `WAL per job (enqueue + drain, after a checkpoint), ${rows} finished jobs kept`, "KB", "lower")

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
        const walFrom = await checkpointedWalPosition(observer)
        await enqueueAll(instance, historyJobs, batchSize)
        const stop = timeStatements((text) => system.isClaimQuery(text))
        try {
          const result = await drain(system, instance, observer, { jobs: historyJobs, concurrency: c, timeoutMs: drainTimeoutMs, statementCount })
          const claims = stop()
          const walKbPerJob = walFrom === undefined ? null : (await walBytesSince(observer, walFrom)) / 1024 / historyJobs
          return { result, claims, walKbPerJob }
        } finally {
          stop()
        }
      })

    for (let round = 0; round < historyRounds; round++) {
      for (const system of roundOrder(systems, round)) {
        // The tables take turns going first, as the systems do: the second drain runs in a process
        // warmed by the first, which would otherwise always favour the full table's.
        const drained: Partial<Record<"empty" | "full", Awaited<ReturnType<typeof measured>>>> = {}
        for (const table of roundOrder(["empty", "full"] as const, round)) {
          drained[table] =
            table === "empty"
              ? await withFreshDatabase(ctx, system, "history_empty", (db) => measured(system, db))
              : await measured(system, historyDbs.get(system.id)!)
        }
        const empty = drained.empty!
        const full = drained.full!
        const cut = (r: DrainResult) => (r.cutOff ? cutOffNote(drainTimeoutMs) : undefined)
        record(rateEmpty, system.id, round, empty.result.jobsPerSec, cut(empty.result))
        record(rateFull, system.id, round, full.result.jobsPerSec, cut(full.result))
        record(kept, system.id, round, full.result.jobsPerSec / empty.result.jobsPerSec)
        record(claimEmpty, system.id, round, empty.claims.length > 0 ? median(empty.claims) : null)
        record(claimFull, system.id, round, full.claims.length > 0 ? median(full.claims) : null)
        record(walEmpty, system.id, round, empty.walKbPerJob)
        record(walFull, system.id, round, full.walKbPerJob)
        for (const [table, run] of [["empty", empty], ["full", full]] as const) {
          ctx.runs.push({
            scenario: "history",
            round,
            system: system.id,
            table,
            ...run.result,
            claimStatements: run.claims.length,
            claimMsP50: run.claims.length > 0 ? median(run.claims) : null,
            claimMsP95: run.claims.length > 0 ? quantile(run.claims, 0.95) : null,
            walKbPerJob: run.walKbPerJob
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
