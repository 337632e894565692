/**
 * skiplock, default worker configuration (LISTEN/NOTIFY wake-ups, claims of
 * up to 5 jobs, 5 s fallback poll) with `concurrency` = C. Jobs are
 * `report_generation`, one of the built-in job types, for one organization.
 * Enqueues go through JobQueue (payload checked against the job's Schema).
 *
 * - `skiplock`: queue and worker share LocalWorkers, as in the service
 *   (main.ts): an enqueue while the worker has a free slot claims for it in
 *   the same statement. Only the latency scenario enqueues while workers run.
 * - `skiplock-no-handoff`: without LocalWorkers, as an enqueue from a process
 *   that runs no worker: it only inserts, and NOTIFY wakes the worker. Runs
 *   in the latency scenario only; everywhere else it would repeat `skiplock`.
 *   The report also gives its ratio to each peer.
 * - `skiplock-prefetch`: `prefetch: 5`, the worker claims a batch ahead of its
 *   free slots. Drain scenario only; the report also gives its ratio to each peer.
 * - `skiplock-prefetch-20`: `prefetch: 20`, four batches ahead, so that several
 *   statements are in the database while Node runs jobs. Likewise.
 */
import { Effect, Fiber, Layer, Logger, LogLevel, ManagedRuntime, Schema } from "effect"
import { Db, Handler, JobDefinition, JobQueue, LocalWorkers, Migrator, Worker } from "../../src/index.js"
import type { ScenarioName } from "../config.js"
import type { BenchPayload, SystemAdapter, SystemInstance } from "./types.js"

const JOB_TYPE = "report_generation"
const ORGANIZATION = "6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f"
const BenchJob = JobDefinition.make(JOB_TYPE, Schema.Struct({ i: Schema.Number }))

const quiet = Logger.minimumLogLevel(LogLevel.Warning)

const dbLayer = (url: string, maxConnections: number, preparedStatements = true) =>
  Db.layer({ url, maxConnections, applicationName: "skiplock-bench", preparedStatements })

const packageVersion = async (): Promise<string> => {
  const { readFile } = await import("node:fs/promises")
  const json = JSON.parse(await readFile(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }
  return `${json.version} (working tree)`
}

interface Variant {
  readonly id: string
  readonly label: string
  readonly configuration: string
  readonly handOff: boolean
  readonly prefetch: number
  /** Jobs per claim (default 5, the runbook's). */
  readonly batchSize?: number
  readonly onlyScenarios?: ReadonlyArray<ScenarioName>
  readonly comparedWithPeers?: boolean
  /** Db.layer's `preparedStatements` (default true, as in the service). */
  readonly preparedStatements?: boolean
}

const makeSkiplock = ({ handOff, prefetch, batchSize, preparedStatements = true, ...variant }: Variant): SystemAdapter => ({
  ...variant,
  packageName: "skiplock",
  recordsPerJob:
    "its job_queue row (kept, completed), a job_runs row and two audit_logs entries (job_started, job_completed), written in the transactions of the claim and of the completion",
  idlePollMs: 0,

  probe: async () => ({ ok: true, version: await packageVersion() }),

  install: async (url) => {
    await Effect.runPromise(
      Migrator.migrate([Migrator.coreMigrations]).pipe(Effect.provide(Layer.merge(dbLayer(url, 1), quiet)))
    )
  },

  open: async (url, { poolSize }): Promise<SystemInstance> => {
    const queue = JobQueue.layer([BenchJob]).pipe(Layer.provideMerge(dbLayer(url, poolSize, preparedStatements)))
    const runtime = ManagedRuntime.make(Layer.mergeAll(handOff ? queue.pipe(Layer.provideMerge(LocalWorkers.layer)) : queue, quiet))
    // Built now, as the peers' open connects (makeWorkerUtils, PgBoss.start): a ManagedRuntime builds its
    // layers at first use, which would put the pool's start-up into the first measured operation.
    await runtime.runtime()
    let worker: Fiber.RuntimeFiber<never, unknown> | undefined
    const stopWorkers = async () => {
      const fiber = worker
      worker = undefined
      if (fiber !== undefined) await runtime.runPromise(Fiber.interrupt(fiber))
    }
    const input = (payload: BenchPayload) => ({ organizationId: ORGANIZATION, jobType: JOB_TYPE, payload })
    return {
      enqueueOne: async (payload) => {
        await runtime.runPromise(JobQueue.enqueue(input(payload)))
      },
      enqueueBatch: async (payloads) => {
        await runtime.runPromise(JobQueue.enqueueMany(payloads.map(input)))
      },
      startWorkers: async ({ concurrency, onJob }) => {
        const handler = Handler.make(BenchJob, { run: (payload) => Effect.sync(() => onJob(payload)) })
        worker = runtime.runFork(Layer.launch(Worker.layer({ handlers: [handler], concurrency, prefetch, ...(batchSize !== undefined ? { batchSize } : {}) })))
      },
      stopWorkers,
      close: async () => {
        await stopWorkers()
        await runtime.dispose()
      }
    }
  },

  unfinishedCount: async (client) => {
    const { rows } = await client.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM job_queue WHERE status IN ('pending', 'processing')"
    )
    return rows[0]!.n
  },

  discardUnfinished: async (client) => {
    await client.query("DELETE FROM job_queue WHERE status IN ('pending', 'processing')")
  },

  // A processed job leaves its job_queue row, its job_runs row and two
  // audit_logs entries (job_started, job_completed); one statement writes all.
  seedHistory: async (client, rows) => {
    await client.query(
      `WITH q AS (
         INSERT INTO job_queue (organization_id, job_type, payload, status, attempts, run_at, completed_at, created_at, updated_at)
         SELECT $1::uuid, $2, jsonb_build_object('i', -g), 'completed', 1, t, t + interval '5 ms', t, t + interval '5 ms'
         FROM generate_series(1, $3::int) AS g, LATERAL (SELECT now() - interval '1 day' + g * interval '50 ms' AS t) AS c
         RETURNING id, organization_id, job_type, trace_id, created_at, completed_at
       ), r AS (
         INSERT INTO job_runs (job_id, organization_id, job_type, idempotency_key, idempotency_status, status, attempts,
                               trace_id, worker_id, started_at, finished_at, created_at, updated_at)
         SELECT id, organization_id, job_type, id::text, 'completed', 'completed', 1,
                trace_id, 'bench-history', created_at, completed_at, created_at, completed_at
         FROM q
       )
       INSERT INTO audit_logs (organization_id, actor, event, job_id, trace_id, details, created_at)
       SELECT q.organization_id, 'bench-history', e.event, q.id, q.trace_id, jsonb_build_object('jobType', q.job_type, 'attempt', 1), q.created_at
       FROM q CROSS JOIN (VALUES ('job_started'), ('job_completed')) AS e(event)`,
      [ORGANIZATION, JOB_TYPE, rows]
    )
    await client.query("VACUUM ANALYZE job_queue, job_runs, audit_logs")
  },

  // complete_and_claim claims too (it also completes the jobs that finished since the last statement)
  isClaimQuery: (text) => /(claim_next_job|complete_and_claim|enqueue_and_claim)\s*\(/i.test(text)
})

export const skiplock = makeSkiplock({
  id: "skiplock",
  label: "skiplock",
  configuration:
    "defaults: LISTEN/NOTIFY, claims of up to 5 jobs (batchSize 5), pollInterval 5 s, no prefetch; `concurrency` = C; queue and worker share LocalWorkers (as in the service), so an enqueue hands its job to a free slot",
  handOff: true,
  prefetch: 0
})
export const skiplockNoHandOff = makeSkiplock({
  id: "skiplock-no-handoff",
  label: "skiplock (no hand-off)",
  configuration:
    "as skiplock, but the queue has no LocalWorkers (as when enqueued from a process without a worker): the enqueue only inserts, NOTIFY wakes the worker; latency scenario only",
  handOff: false,
  prefetch: 0,
  onlyScenarios: ["latency"],
  // Enqueuers that run no worker (an API process) get no hand-off: the latency target is theirs too.
  comparedWithPeers: true
})
export const skiplockPrefetch = makeSkiplock({
  id: "skiplock-prefetch",
  label: "skiplock (prefetch 5)",
  configuration:
    "as skiplock, with `prefetch: 5` (`WORKER_PREFETCH=5`): the worker claims up to 5 jobs ahead of its C handler slots, which start as handlers finish, so the database completes one batch and claims the next while the current one runs; drain scenario only",
  handOff: true,
  prefetch: 5,
  onlyScenarios: ["drain"],
  comparedWithPeers: true
})

export const skiplockPrefetch20 = makeSkiplock({
  id: "skiplock-prefetch-20",
  label: "skiplock (prefetch 20)",
  configuration:
    "as skiplock, with `prefetch: 20` (`WORKER_PREFETCH=20`): up to 20 jobs claimed ahead, still at most 5 a claim, so at concurrency 5 up to five statements are in flight at once (each completing one batch and claiming the next) while Node runs the current jobs; drain scenario only",
  handOff: true,
  prefetch: 20,
  onlyScenarios: ["drain"],
  comparedWithPeers: true
})

/** For probes (bench/probes/prefetchDepth.ts): skiplock with `prefetch: n` claimed ahead. */
export const skiplockWithPrefetch = (n: number) =>
  makeSkiplock({
    id: `skiplock-prefetch-${n}`,
    label: n === 0 ? "skiplock (defaults)" : `skiplock (prefetch ${n})`,
    configuration: `as skiplock, with \`prefetch: ${n}\``,
    handOff: true,
    prefetch: n
  })

/** For probes that compare (bench/probes/drainCpu.ts --unprepared): skiplock with every statement unnamed, as before prepared statements. */
export const skiplockUnprepared = makeSkiplock({
  id: "skiplock-unprepared",
  label: "skiplock (unprepared)",
  configuration: "as skiplock, with `DATABASE_PREPARED_STATEMENTS=false`: every statement unnamed, parsed and planned on each call",
  handOff: true,
  prefetch: 0,
  preparedStatements: false
})
export const skiplockPrefetchUnprepared = makeSkiplock({
  id: "skiplock-prefetch-unprepared",
  label: "skiplock (prefetch 5, unprepared)",
  configuration: "as skiplock-prefetch, with `DATABASE_PREPARED_STATEMENTS=false`",
  handOff: true,
  prefetch: 5,
  preparedStatements: false
})

/** For probes (bench/probes/tunedDrain.ts): skiplock tuned for throughput as pg-boss tuned is, 100 jobs a claim, 100 claimed ahead. */
export const skiplockTuned = makeSkiplock({
  id: "skiplock-tuned",
  label: "skiplock (tuned: batch 100, prefetch 100)",
  configuration: "as skiplock, with `batchSize: 100` and `prefetch: 100` (`WORKER_BATCH_SIZE=100`, `WORKER_PREFETCH=100`): claims of up to 100 jobs, against the runbook's 5",
  handOff: true,
  prefetch: 100,
  batchSize: 100
})

/** For probes (bench/probes/prefetchDepth.ts --batch-sizes): skiplock claiming at most `n` jobs a statement (`batchSize`), no prefetch. */
export const skiplockWithBatchSize = (n: number) =>
  makeSkiplock({
    id: `skiplock-batch-${n}`,
    label: `skiplock (batchSize ${n})`,
    configuration: `as skiplock, with \`batchSize: ${n}\``,
    handOff: true,
    prefetch: 0,
    batchSize: n
  })
