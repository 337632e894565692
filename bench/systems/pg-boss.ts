/**
 * pg-boss in two configurations:
 * - `pg-boss`: its defaults. One job per fetch (batchSize 1), each of the C
 *   workers (`localConcurrency`) polls every 2 s and waits out the interval
 *   after every fetch; no LISTEN/NOTIFY.
 * - `pg-boss-tuned`: tuned for throughput. Batches of `batchSize` jobs, the
 *   shortest allowed poll (0.5 s), back-to-back fetches while batches come
 *   back full, and NOTIFY wake-ups (useListenNotify + a `notify` queue).
 */
import { PgBoss } from "pg-boss"
import { installedVersion } from "./version.js"
import type { BenchPayload, SystemAdapter, SystemInstance } from "./types.js"

const QUEUE = "bench_noop"

const onError = (error: unknown) => {
  process.stderr.write(`[pg-boss] ${error instanceof Error ? (process.env.BENCH_DEBUG ? error.stack : error.message) : String(error)}\n`)
}

export const makePgBoss = (tuned: boolean, tunedBatchSize = 100): SystemAdapter => ({
  id: tuned ? "pg-boss-tuned" : "pg-boss",
  label: tuned ? "pg-boss (tuned)" : "pg-boss (default)",
  packageName: "pg-boss",
  recordsPerJob: "its job row, kept after completion (its maintenance deletes it 7 days later, by default)",
  configuration: tuned
    ? `localConcurrency C, batchSize ${tunedBatchSize}, pollingIntervalSeconds 0.5, burstWhenBatchFull, useListenNotify + queue notify (notifyPollingIntervalSeconds 0.5)`
    : "defaults: localConcurrency C, batchSize 1, pollingIntervalSeconds 2, no LISTEN/NOTIFY",
  idlePollMs: tuned ? 0 : 2000,

  probe: async () => {
    try {
      return { ok: true, version: installedVersion("pg-boss") }
    } catch (error) {
      return { ok: false, reason: `pg-boss is not installed: ${String(error)}` }
    }
  },

  install: async (url) => {
    const boss = new PgBoss({ connectionString: url, supervise: false, schedule: false })
    boss.on("error", onError)
    await boss.start()
    await boss.createQueue(QUEUE, tuned ? { notify: true } : {})
    await boss.stop({ graceful: false, close: true })
  },

  open: async (url, { poolSize }): Promise<SystemInstance> => {
    const boss = new PgBoss({ connectionString: url, max: poolSize, ...(tuned ? { useListenNotify: true } : {}) })
    boss.on("error", onError)
    await boss.start()
    let working = false
    const stopWorkers = async () => {
      if (!working) return
      working = false
      await boss.offWork(QUEUE, { wait: true })
    }
    return {
      enqueueOne: async (payload: BenchPayload) => {
        await boss.send(QUEUE, payload)
      },
      enqueueBatch: async (payloads) => {
        await boss.insert(QUEUE, payloads.map((data) => ({ data })))
      },
      startWorkers: async ({ concurrency, onJob }) => {
        const handler = async (jobs: Array<{ data: BenchPayload }>) => {
          for (const job of jobs) onJob(job.data)
        }
        working = true
        if (tuned) {
          await boss.work<BenchPayload>(
            QUEUE,
            {
              localConcurrency: concurrency,
              batchSize: tunedBatchSize,
              pollingIntervalSeconds: 0.5,
              notifyPollingIntervalSeconds: 0.5,
              burstWhenBatchFull: true
            },
            handler
          )
        } else {
          await boss.work<BenchPayload>(QUEUE, { localConcurrency: concurrency }, handler)
        }
      },
      stopWorkers,
      close: async () => {
        await stopWorkers()
        await boss.stop({ graceful: true, close: true })
      }
    }
  },

  unfinishedCount: async (client) => {
    const { rows } = await client.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM pgboss.job WHERE name = $1 AND state IN ('created', 'retry', 'active')",
      [QUEUE]
    )
    return rows[0]!.n
  },

  discardUnfinished: async (client) => {
    await client.query("DELETE FROM pgboss.job WHERE name = $1 AND state IN ('created', 'retry', 'active')", [QUEUE])
  },

  // pg-boss keeps completed jobs (retention 14 days, deletion 7 days after completion).
  seedHistory: async (client, rows) => {
    await client.query(
      `INSERT INTO pgboss.job (name, data, state, policy, created_on, start_after, started_on, completed_on, keep_until)
       SELECT $1, jsonb_build_object('i', -g), 'completed', 'standard', c.at, c.at, c.at, c.at + interval '5 ms', now() + interval '14 days'
       FROM generate_series(1, $2::int) AS g, LATERAL (SELECT now() - interval '1 day' + g * interval '50 ms' AS at) AS c`,
      [QUEUE, rows]
    )
    await client.query("VACUUM ANALYZE pgboss.job_common")
  },

  isClaimQuery: (text) => /update\s+\S+\s+j\s+set\s+state\s*=\s*'active'/i.test(text)
})
