/**
 * Graphile Worker, default configuration: LISTEN/NOTIFY wake-ups, one job per
 * fetch, 2 s fallback poll. The producer (WorkerUtils) and the runner share
 * one pg pool of the run's size.
 *
 * - `graphile-worker-local-queue`: with its `localQueue` (off by default), its
 *   counterpart of skiplock's prefetch: the pool fetches and locks a batch of
 *   C + 1 jobs (the size its documentation suggests as a start) and hands them
 *   to its workers. Drain scenario only.
 */
import { Logger, makeWorkerUtils, run, runMigrations, type Runner, type WorkerUtils } from "graphile-worker"
import pg from "pg"
import { installedVersion } from "./version.js"
import type { BenchPayload, SystemAdapter, SystemInstance } from "./types.js"

const TASK = "bench_noop"

const quietLogger = new Logger(() => (level, message) => {
  if (level === "error") process.stderr.write(`[graphile-worker] ${message}\n`)
})

const makeGraphileWorker = (localQueue: boolean): SystemAdapter => ({
  ...(localQueue
    ? {
        id: "graphile-worker-local-queue",
        label: "Graphile Worker (local queue)",
        configuration: "as Graphile Worker, with `localQueue.size` = C + 1: the pool fetches and locks C + 1 jobs at a time and hands them to its workers; drain scenario only",
        onlyScenarios: ["drain"] as const
      }
    : {
        id: "graphile-worker",
        label: "Graphile Worker",
        configuration: "defaults: LISTEN/NOTIFY, 1 job per fetch, pollInterval 2000 ms; `concurrency` = C"
      }),
  packageName: "graphile-worker",
  recordsPerJob: "its job row, deleted when the job completes",
  idlePollMs: 0,

  probe: async () => {
    try {
      return { ok: true, version: installedVersion("graphile-worker") }
    } catch (error) {
      return { ok: false, reason: `graphile-worker is not installed: ${String(error)}` }
    }
  },

  install: async (url) => {
    await runMigrations({ connectionString: url, logger: quietLogger })
  },

  open: async (url, { poolSize }): Promise<SystemInstance> => {
    const pool = new pg.Pool({ connectionString: url, max: poolSize })
    // Graphile Worker wants these on a pool it did not create (idle clients can error).
    pool.on("error", () => {})
    pool.on("connect", (client) => client.on("error", () => {}))
    const utils: WorkerUtils = await makeWorkerUtils({ pgPool: pool, logger: quietLogger })
    let runner: Runner | undefined
    const stopWorkers = async () => {
      const current = runner
      runner = undefined
      if (current !== undefined) await current.stop()
    }
    return {
      enqueueOne: async (payload: BenchPayload) => {
        await utils.addJob(TASK, payload)
      },
      enqueueBatch: async (payloads) => {
        await utils.addJobs(payloads.map((payload) => ({ identifier: TASK, payload })))
      },
      startWorkers: async ({ concurrency, onJob }) => {
        runner = await run({
          pgPool: pool,
          concurrency,
          noHandleSignals: true,
          ...(localQueue ? { preset: { worker: { localQueue: { size: concurrency + 1 } } } } : {}),
          logger: quietLogger,
          crontab: "",
          taskList: {
            [TASK]: async (payload) => {
              onJob(payload as BenchPayload)
            }
          }
        })
      },
      stopWorkers,
      close: async () => {
        await stopWorkers()
        await utils.release()
        await pool.end()
      }
    }
  },

  unfinishedCount: async (client) => {
    const { rows } = await client.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM graphile_worker._private_jobs WHERE attempts < max_attempts OR locked_at IS NOT NULL"
    )
    return rows[0]!.n
  },

  discardUnfinished: async (client) => {
    await client.query("DELETE FROM graphile_worker._private_jobs WHERE attempts < max_attempts OR locked_at IS NOT NULL")
  },

  // Graphile Worker deletes a job when it completes, so the only finished jobs
  // it keeps are permanently failed ones (attempts = max_attempts): those are
  // what the history scenario seeds.
  seedHistory: async (client, rows) => {
    await client.query(`INSERT INTO graphile_worker._private_tasks (identifier) VALUES ($1) ON CONFLICT (identifier) DO NOTHING`, [TASK])
    await client.query(
      `INSERT INTO graphile_worker._private_jobs (task_id, payload, attempts, max_attempts, last_error, run_at, created_at, updated_at)
       SELECT t.id, json_build_object('i', -g), 25, 25, 'Error: permanently failed', c.at, c.at, c.at
       FROM generate_series(1, $1::int) AS g,
            LATERAL (SELECT now() - interval '1 day' + g * interval '50 ms' AS at) AS c,
            (SELECT id FROM graphile_worker._private_tasks WHERE identifier = $2) AS t`,
      [rows, TASK]
    )
    await client.query("VACUUM ANALYZE graphile_worker._private_jobs")
  },

  isClaimQuery: (text) => /update\s+"?graphile_worker"?\._private_jobs\s+as\s+jobs\s+set\s+attempts\s*=\s*jobs\.attempts\s*\+\s*1/i.test(text)
})

export const graphileWorker = makeGraphileWorker(false)
export const graphileWorkerLocalQueue = makeGraphileWorker(true)
