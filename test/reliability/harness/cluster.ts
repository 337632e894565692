/**
 * The fault scenarios' harness: a queue of numbered jobs, worker processes
 * (fixtures/workerProcess.ts) started and killed at will, and a tally that
 * says for every job whether it completed, and how often its effect committed.
 * Used by the short tests in test/reliability and by `npm run chaos`.
 */
import { Duration, Effect, Scope } from "effect"
import { spawn, type ChildProcess } from "node:child_process"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import pg from "pg"

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..")
const WORKER_SCRIPT = join(ROOT, "test", "reliability", "fixtures", "workerProcess.ts")
export const ORG = "7d1f4a2e-5b3c-4e6d-8f90-1a2b3c4d5e6f"
export const JOB_TYPE = "bulk_invoice_upsert"

/** Timing and size of one worker process; every duration in milliseconds. */
export interface WorkerSettings {
  readonly leaseMs: number
  readonly heartbeatMs: number
  readonly rescueMs: number
  readonly pollMs: number
  readonly concurrency: number
  readonly batchSize: number
  /** Jobs claimed ahead of free slots (Worker's `prefetch`); default 0. */
  readonly prefetch?: number
  /** How long each handler sleeps inside its transaction, after writing its effect. */
  readonly handlerMs: number
  readonly maxConnections: number
  readonly retryBackoffMs: number
  readonly shutdownMs: number
}

/** Short settings for tests: a lost job is back within about 2.5 s. */
export const fastSettings: WorkerSettings = {
  leaseMs: 2_000,
  heartbeatMs: 500,
  rescueMs: 500,
  pollMs: 500,
  concurrency: 4,
  batchSize: 4,
  handlerMs: 20,
  maxConnections: 8,
  retryBackoffMs: 100,
  shutdownMs: 5_000
}

/**
 * For an outage shorter than the lease: as with the defaults (30 s lease, 10 s heartbeat), the workers
 * renew or release their jobs when it is over and no attempt is counted. With `fastSettings`' 2 s lease,
 * shorter than the 3 s a cut-off worker stops its jobs ahead of their leases' end, every outage ends the
 * running jobs as a dead worker's (rescued, the attempt counted), and a job caught three times fails
 * (README, "Database outages shorter than the lease"). The 100 ms backoff stays: a job cut off again and
 * again during a few seconds of dropped connections is released many times, none counted, because a lost
 * connection counts only once the first of ten releases is five minutes old, or after 100 releases
 * (README, "How it works"): at about 2 releases a second, storms of well under 50 s.
 */
export const outageSettings: WorkerSettings = { ...fastSettings, leaseMs: 30_000, heartbeatMs: 10_000 }

// ---------------------------------------------------------------------------
// SQL from the outside (a separate connection, as an operator or a test would)

/** Runs one statement on a new connection. */
export const query = <R extends pg.QueryResultRow = pg.QueryResultRow>(url: string, text: string, params: ReadonlyArray<unknown> = []) =>
  Effect.tryPromise({
    try: async () => {
      const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 })
      client.on("error", () => undefined)
      await client.connect()
      try {
        return (await client.query<R>(text, params as Array<unknown>)).rows
      } finally {
        await client.end().catch(() => undefined)
      }
    },
    catch: (cause) => new Error(`query failed: ${text.slice(0, 80)}: ${cause instanceof Error ? cause.message : String(cause)}`)
  })

/** A connection kept open for the scope (for transactions held across steps). */
export const connection = (url: string, applicationName = "skiplock-chaos-other") =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const client = new pg.Client({ connectionString: url, application_name: applicationName })
      client.on("error", () => undefined)
      await client.connect()
      return client
    }),
    (client) => Effect.promise(() => client.end().catch(() => undefined)).pipe(Effect.timeoutOption("2 seconds"))
  )

/** An empty queue and the effects table the fixture handler writes into. */
export const prepareQueue = (url: string) =>
  Effect.gen(function* () {
    yield* query(url, `CREATE TABLE IF NOT EXISTS effects (
      job_id uuid NOT NULL, n int NOT NULL, worker_id text NOT NULL, attempt int NOT NULL,
      at timestamptz NOT NULL DEFAULT clock_timestamp())`)
    yield* query(url, "TRUNCATE effects")
    // How many numbered jobs were enqueued (1 to the highest `upto`): what the tally checks, job by number,
    // so that a job whose row went missing or was duplicated counts too.
    yield* query(url, "CREATE TABLE IF NOT EXISTS enqueued_numbers (upto int NOT NULL)")
    yield* query(url, "TRUNCATE enqueued_numbers")
    yield* query(url, "DELETE FROM job_queue")
    yield* query(url, "DELETE FROM job_runs")
  })

/** Enqueues `count` numbered jobs in one statement (the runbook's SQL; the insert notifies the workers). */
export const enqueueJobs = (url: string, count: number) =>
  Effect.zipRight(
    enqueuedUpTo(url, count),
    query(url,
      `INSERT INTO job_queue (organization_id, job_type, payload, max_attempts)
       SELECT $1, $2, jsonb_build_object('n', n), 3 FROM generate_series(1, $3) n`,
      [ORG, JOB_TYPE, count])
  )

/** Records that jobs numbered 1 to `upto` are enqueued (a scenario that enqueues them itself says so too). */
export const enqueuedUpTo = (url: string, upto: number) => query(url, "INSERT INTO enqueued_numbers (upto) VALUES ($1)", [upto])

export interface Tally {
  readonly enqueued: number
  readonly completed: number
  readonly failed: number
  readonly pending: number
  readonly processing: number
  /** Jobs that are not completed with exactly one committed effect. */
  readonly lost: number
  /** Jobs whose effect committed more than once. */
  readonly runTwice: number
  /** Completed jobs without a committed effect (should be none). */
  readonly completedWithoutEffect: number
  /** Attempts started in total (`job_started` audit entries): more than `enqueued` when jobs were rescued or retried. */
  readonly started: number
  /** `job_rescued` audit entries. */
  readonly rescued: number
}

// Job by number (payload n, 1 to the highest enqueued): a number is lost unless exactly one job row carries
// it, completed, with exactly one committed effect; run twice when its effect committed more than once.
// Counted by number rather than by row, so that a row that vanished or a duplicated job shows.
export const tally = (url: string) =>
  Effect.map(
    query<{
      enqueued: number; completed: number; failed: number; pending: number; processing: number
      lost: number; runTwice: number; completedWithoutEffect: number; started: number; rescued: number
    }>(url, `
      WITH expected AS (SELECT generate_series(1, coalesce((SELECT max(upto) FROM enqueued_numbers), 0)) AS n),
           jobs AS (SELECT (payload->>'n')::int AS n, count(*) AS rows, count(*) FILTER (WHERE status = 'completed') AS completed
                    FROM job_queue WHERE job_type = '${JOB_TYPE}' GROUP BY 1),
           e AS (SELECT n, count(*) AS effects FROM effects GROUP BY n)
      SELECT count(*)::int AS enqueued,
             count(*) FILTER (WHERE j.status = 'completed')::int AS completed,
             count(*) FILTER (WHERE j.status = 'failed')::int AS failed,
             count(*) FILTER (WHERE j.status = 'pending')::int AS pending,
             count(*) FILTER (WHERE j.status = 'processing')::int AS processing,
             (SELECT count(*) FROM expected x LEFT JOIN jobs USING (n) LEFT JOIN e USING (n)
              WHERE coalesce(jobs.rows, 0) <> 1 OR coalesce(jobs.completed, 0) <> 1 OR coalesce(e.effects, 0) <> 1)::int AS lost,
             (SELECT count(*) FROM e WHERE e.effects > 1)::int AS "runTwice",
             count(*) FILTER (WHERE j.status = 'completed' AND NOT EXISTS (SELECT 1 FROM effects f WHERE f.job_id = j.id))::int AS "completedWithoutEffect",
             (SELECT count(*) FROM audit_logs a JOIN job_queue q ON q.id = a.job_id WHERE a.event = 'job_started')::int AS started,
             (SELECT count(*) FROM audit_logs a JOIN job_queue q ON q.id = a.job_id WHERE a.event = 'job_rescued')::int AS rescued
      FROM job_queue j
      WHERE j.job_type = '${JOB_TYPE}'`),
    (rows) => rows[0]! as Tally
  )

/** Polls until every job is finished (completed or failed), or `timeout` passes; returns the last tally. */
export const awaitFinished = (url: string, timeout: Duration.DurationInput) =>
  Effect.gen(function* () {
    const deadline = Date.now() + Duration.toMillis(Duration.decode(timeout))
    while (true) {
      const counts = yield* tally(url)
      if (counts.pending + counts.processing === 0 || Date.now() > deadline) return counts
      yield* Effect.sleep("100 millis")
    }
  })

/** Polls until at least `n` jobs are completed. */
export const awaitCompleted = (url: string, n: number, timeout: Duration.DurationInput = "60 seconds") =>
  Effect.gen(function* () {
    const deadline = Date.now() + Duration.toMillis(Duration.decode(timeout))
    while (true) {
      const [row] = yield* query<{ n: number }>(url, "SELECT count(*)::int AS n FROM job_queue WHERE status = 'completed'")
      if (row!.n >= n) return row!.n
      if (Date.now() > deadline) return yield* Effect.fail(new Error(`only ${row!.n} of ${n} jobs completed within ${Duration.format(timeout)}`))
      yield* Effect.sleep("50 millis")
    }
  })

// ---------------------------------------------------------------------------
// Worker processes

export interface LogLine {
  readonly message: string
  readonly logLevel: string
  readonly annotations?: Record<string, unknown>
}

export interface WorkerProcess {
  readonly id: string
  readonly child: ChildProcess
  readonly lines: Array<string>
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  /** The JSON log lines so far. */
  readonly logs: () => ReadonlyArray<LogLine>
  /** The `{ phase, jobId }` lines so far (CHAOS_PHASES=1). */
  readonly phases: () => ReadonlyArray<{ phase: string; jobId: string }>
  readonly output: () => string
}

const parsed = <A>(lines: ReadonlyArray<string>, keep: (value: any) => boolean): Array<A> =>
  lines.flatMap((line) => {
    try {
      const value = JSON.parse(line)
      return typeof value === "object" && value !== null && keep(value) ? [value as A] : []
    } catch {
      return []
    }
  })

/** Starts a worker process; it is killed (SIGKILL) when the scope closes if still running. */
export const spawnWorker = (
  url: string,
  id: string,
  settings: WorkerSettings,
  extraEnv: Record<string, string> = {}
): Effect.Effect<WorkerProcess, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync((): WorkerProcess => {
      const env: NodeJS.ProcessEnv = {
        ...process.env,
        CHAOS_DATABASE_URL: url,
        CHAOS_WORKER_ID: id,
        CHAOS_LEASE_MS: String(settings.leaseMs),
        CHAOS_HEARTBEAT_MS: String(settings.heartbeatMs),
        CHAOS_RESCUE_MS: String(settings.rescueMs),
        CHAOS_POLL_MS: String(settings.pollMs),
        CHAOS_CONCURRENCY: String(settings.concurrency),
        CHAOS_BATCH_SIZE: String(settings.batchSize),
        CHAOS_PREFETCH: String(settings.prefetch ?? 0),
        CHAOS_HANDLER_MS: String(settings.handlerMs),
        CHAOS_MAX_CONNECTIONS: String(settings.maxConnections),
        CHAOS_RETRY_BACKOFF_MS: String(settings.retryBackoffMs),
        CHAOS_SHUTDOWN_MS: String(settings.shutdownMs),
        ...extraEnv
      }
      const child = spawn(process.execPath, ["--import", "tsx", WORKER_SCRIPT], { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] })
      const lines: Array<string> = []
      let partial = { out: "", err: "" }
      const collect = (stream: "out" | "err") => (chunk: Buffer) => {
        const text = partial[stream] + chunk.toString("utf8")
        const parts = text.split("\n")
        partial = { ...partial, [stream]: parts.pop() ?? "" }
        lines.push(...parts.filter((line) => line !== ""))
      }
      child.stdout!.on("data", collect("out"))
      child.stderr!.on("data", collect("err"))
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) =>
        child.once("exit", (code, signal) => done({ code, signal }))
      )
      return {
        id,
        child,
        lines,
        exited,
        logs: () => parsed<LogLine>(lines, (value) => "message" in value && "logLevel" in value),
        phases: () => parsed<{ phase: string; jobId: string }>(lines, (value) => "phase" in value),
        output: () => lines.join("\n")
      }
    }),
    (worker) =>
      Effect.promise(async () => {
        if (worker.child.exitCode === null && worker.child.signalCode === null) {
          worker.child.kill("SIGKILL")
          await worker.exited
        }
      })
  )

/** Waits until the worker logged that it started (its database connection and LISTEN are being set up). */
export const awaitStarted = (worker: WorkerProcess, timeout: Duration.DurationInput = "30 seconds") =>
  Effect.gen(function* () {
    const deadline = Date.now() + Duration.toMillis(Duration.decode(timeout))
    while (!worker.logs().some((line) => String(line.message).startsWith("worker started"))) {
      if (worker.child.exitCode !== null) return yield* Effect.fail(new Error(`worker ${worker.id} exited at start:\n${worker.output()}`))
      if (Date.now() > deadline) return yield* Effect.fail(new Error(`worker ${worker.id} did not start:\n${worker.output()}`))
      yield* Effect.sleep("50 millis")
    }
  })

/** Sends a signal and waits for the process to exit. */
export const stopWorker = (worker: WorkerProcess, signal: NodeJS.Signals, timeout: Duration.DurationInput = "30 seconds") =>
  Effect.gen(function* () {
    worker.child.kill(signal)
    return yield* Effect.promise(() => worker.exited).pipe(
      Effect.timeoutFail({ duration: timeout, onTimeout: () => new Error(`worker ${worker.id} did not exit after ${signal}:\n${worker.output()}`) })
    )
  })

/** Log lines at WARN or above (the "error storm" measure). */
export const warnings = (worker: WorkerProcess) =>
  worker.logs().filter((line) => line.logLevel === "WARN" || line.logLevel === "ERROR" || line.logLevel === "FATAL")

/** Warnings not about one job (no jobId): the worker's own complaints about the database, which must stay few in an outage. */
export const outageWarnings = (worker: WorkerProcess) => warnings(worker).filter((line) => line.annotations?.["jobId"] === undefined)
