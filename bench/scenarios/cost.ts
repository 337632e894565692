/**
 * Cost: database transactions and statements per job. Each phase opens the
 * system, does its work and closes every connection; the phase's cost is the
 * change in pg_stat_database (xact_commit + xact_rollback) for the system's
 * database, read once no session is left (backends flush their statistics on
 * exit), minus an open-and-close baseline. Statements come from
 * pg_stat_statements when the server preloads it, otherwise from the
 * client-side count of statements the system sent.
 *
 * For processing it also gives the CPU time per job of this Node process and
 * of the PostgreSQL server (bench/cpu.ts) and the server's WAL flushes per job
 * (pg_stat_wal): what a job costs the machine, and the one resource every
 * worker of a deployment shares, the database.
 */
import pg from "pg"
import { processCpuMicros, serverCpuMicros, serverIsLocal } from "../cpu.js"
import { connect, statementCallsServer, transactionCount, waitForNoSessions, walFlushCount, type FreshDatabase } from "../db.js"
import { statementCount } from "../instrument.js"
import type { SystemAdapter, SystemInstance } from "../systems/types.js"
import { cutOffNote, drain, enqueueAll, fmtInt, metric, poolSizeFor, record, roundOrder, settleAfterClose, withFreshDatabase, type Context } from "./common.js"

interface Usage {
  readonly transactions: number
  readonly statements: number
  readonly nodeCpuMicros: number
  /** Undefined when the server's CPU time cannot be read (not on this host). */
  readonly serverCpuMicros: number | undefined
  /** Undefined without pg_stat_wal (PostgreSQL before 14). */
  readonly walFlushes: number | undefined
}

/** The note on a server CPU reading that other work on the server made meaningless (it came out below zero). */
export const SERVER_BUSY_ELSEWHERE = "not measured: other work on the server outweighed this system's (the reading fell below zero)"

const minus = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined ? undefined : a - b)

export const runCost = async (ctx: Context, serverStatements: boolean): Promise<void> => {
  const { costRounds, costJobs: n, costConcurrency: c, batchSize, drainTimeoutMs } = ctx.config
  const source = serverStatements ? "pg_stat_statements" : "client-side count"
  const m = {
    singleX: metric(ctx, "cost", "cost.single.xacts", "Transactions per job, single enqueue", "xacts/job", "lower"),
    singleS: metric(ctx, "cost", "cost.single.stmts", `Statements per job, single enqueue (${source})`, "stmts/job", "lower"),
    batchX: metric(ctx, "cost", "cost.batch.xacts", `Transactions per job, batch enqueue ×${fmtInt(batchSize)}`, "xacts/job", "lower"),
    batchS: metric(ctx, "cost", "cost.batch.stmts", `Statements per job, batch enqueue ×${fmtInt(batchSize)} (${source})`, "stmts/job", "lower"),
    workX: metric(ctx, "cost", "cost.work.xacts", `Transactions per job processed, concurrency ${c}`, "xacts/job", "lower"),
    workS: metric(ctx, "cost", "cost.work.stmts", `Statements per job processed, concurrency ${c} (${source})`, "stmts/job", "lower"),
    workNodeCpu: metric(ctx, "cost", "cost.work.cpu.node", `Worker process CPU per job processed, concurrency ${c}`, "µs/job", "lower"),
    workServerCpu: metric(ctx, "cost", "cost.work.cpu.server", `PostgreSQL server CPU per job processed, concurrency ${c}`, "µs/job", "lower"),
    workWalFlushes: metric(ctx, "cost", "cost.work.walflushes", `WAL flushes per job processed, concurrency ${c}`, "flushes/job", "lower")
  }
  // A PostgreSQL on this host that is not the measured server must not be counted.
  const localServer = serverIsLocal(ctx.config.serverUrl)
  const serverCpu = localServer ? serverCpuMicros : () => undefined
  const serverCpuNote = localServer ? "server processes not readable here" : "server not on this host"
  const walNote = "no pg_stat_wal (PostgreSQL before 14)"
  for (let round = 0; round < costRounds; round++) {
    for (const system of roundOrder(ctx.systems, round)) {
      await withFreshDatabase(ctx, system, "cost", async (db) => {
        const admin = await connect(ctx.config.serverUrl)
        try {
          const phase = (f: (instance: SystemInstance) => Promise<void>) => measure(ctx, admin, db, system, { serverStatements, serverCpu }, poolSizeFor(c), f)
          // The first open after install does once-per-interval housekeeping (pg-boss); keep it out of the baseline.
          await phase(async () => {})
          const baseline = await phase(async () => {})
          const net = (u: Usage): Usage => ({
            transactions: u.transactions - baseline.transactions,
            statements: u.statements - baseline.statements,
            nodeCpuMicros: u.nodeCpuMicros - baseline.nodeCpuMicros,
            serverCpuMicros: minus(u.serverCpuMicros, baseline.serverCpuMicros),
            walFlushes: minus(u.walFlushes, baseline.walFlushes)
          })
          const single = net(await phase(async (instance) => {
            for (let k = 0; k < n; k++) await instance.enqueueOne({ i: k })
          }))
          const batch = net(await phase((instance) => enqueueAll(instance, n, batchSize, n)))
          let completed = 0
          let cutOff = false
          let probes = 0
          const work = await phase(async (instance) => {
            const result = await drain(system, instance, await db.observer(), { jobs: 2 * n, concurrency: c, timeoutMs: drainTimeoutMs, statementCount })
            completed = result.completed
            cutOff = result.cutOff
            probes = result.probes
            await db.closeObserver()
          })
          // The harness's own unfinished-count queries ran in the system's database, one transaction
          // each, plus one for its connection's startup.
          const worked = net({ ...work, transactions: work.transactions - probes - 1, statements: work.statements - (serverStatements ? probes : 0) })
          const per = (u: Usage, jobs: number) => ({ x: u.transactions / jobs, s: u.statements / jobs })
          const ps = per(single, n)
          const pb = per(batch, n)
          const pw = per(worked, Math.max(1, completed))
          const cutNote = cutOff ? cutOffNote(drainTimeoutMs, "per job of the jobs finished by then") : undefined
          record(m.singleX, system.id, round, ps.x)
          record(m.singleS, system.id, round, ps.s)
          record(m.batchX, system.id, round, pb.x)
          record(m.batchS, system.id, round, pb.s)
          record(m.workX, system.id, round, completed > 0 ? pw.x : null, cutNote)
          record(m.workS, system.id, round, completed > 0 ? pw.s : null, cutNote)
          const perJob = (value: number | undefined) => (completed > 0 && value !== undefined ? value / completed : null)
          record(m.workNodeCpu, system.id, round, perJob(worked.nodeCpuMicros), cutNote)
          // The server's CPU is read over all its processes: other work on it (another database's clients, as when the
          // smoke run shares the server with the test suite) counts too, and can outweigh this system's small share.
          const serverCpuUnclear = worked.serverCpuMicros !== undefined && worked.serverCpuMicros < 0
          record(
            m.workServerCpu,
            system.id,
            round,
            serverCpuUnclear ? null : perJob(worked.serverCpuMicros),
            worked.serverCpuMicros === undefined ? serverCpuNote : serverCpuUnclear ? SERVER_BUSY_ELSEWHERE : cutNote
          )
          record(m.workWalFlushes, system.id, round, perJob(worked.walFlushes), worked.walFlushes === undefined ? walNote : cutNote)
          ctx.runs.push({ scenario: "cost", round, system: system.id, jobs: n, statementSource: source, baseline, single, batch, work: worked, completed })
          ctx.log(
            `cost round ${round + 1}/${costRounds} ${system.id}: single ${ps.x.toFixed(2)} xacts ${ps.s.toFixed(2)} stmts/job;` +
              ` batch ${pb.x.toFixed(3)} xacts ${pb.s.toFixed(3)} stmts/job; processing ${pw.x.toFixed(2)} xacts ${pw.s.toFixed(2)} stmts/job` +
              `, ${fmtInt(worked.nodeCpuMicros / Math.max(1, completed))} µs Node CPU` +
              `, ${worked.serverCpuMicros === undefined ? "?" : fmtInt(worked.serverCpuMicros / Math.max(1, completed))} µs server CPU` +
              `, ${worked.walFlushes === undefined ? "?" : (worked.walFlushes / Math.max(1, completed)).toFixed(2)} WAL flushes/job` +
              ` (${fmtInt(completed)} jobs${cutOff ? ", cut off" : ""}; baseline open+close ${baseline.transactions} xacts)`
          )
        } finally {
          await admin.end()
        }
      })
    }
  }
}

const measure = async (
  ctx: Context,
  admin: pg.Client,
  db: FreshDatabase,
  system: SystemAdapter,
  { serverStatements, serverCpu }: { readonly serverStatements: boolean; readonly serverCpu: () => number | undefined },
  poolSize: number,
  f: (instance: SystemInstance) => Promise<void>
): Promise<Usage> => {
  await db.closeObserver()
  await waitForNoSessions(admin, db.name)
  const s0 = serverStatements ? await statementCallsServer(db.url) : statementCount()
  if (serverStatements) await waitForNoSessions(admin, db.name)
  const x0 = await transactionCount(admin, db.name)
  const w0 = await walFlushCount(admin)
  const server0 = serverCpu()
  const node0 = processCpuMicros()
  const instance = await system.open(db.url, { poolSize })
  try {
    await f(instance)
  } finally {
    await instance.close()
  }
  await settleAfterClose(ctx, system, db)
  await waitForNoSessions(admin, db.name)
  const node1 = processCpuMicros()
  const server1 = serverCpu()
  const x1 = await transactionCount(admin, db.name)
  const w1 = await walFlushCount(admin)
  const s1 = serverStatements ? await statementCallsServer(db.url) : statementCount()
  return {
    transactions: x1 - x0,
    statements: s1 - s0,
    nodeCpuMicros: node1 - node0,
    serverCpuMicros: minus(server1, server0),
    walFlushes: minus(w1, w0)
  }
}
