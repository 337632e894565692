// The real service (`node --import tsx src/main.ts`, what `npm start` runs) as a
// child process against a fresh database: readiness, the runbook's SQL path,
// /metrics, graceful shutdown, and the ways start-up refuses to go on.
import { SqlClient } from "@effect/sql"
import { describe, expect, it, layer } from "@effect/vitest"
import { ConfigProvider, Effect } from "effect"
import pg from "pg"
import { load, migrationSets } from "../../src/app/jobs.js"
import { launch } from "../../src/app/launch.js"
import { StartupError } from "../../src/app/StartupError.js"
import { serviceConfig } from "../../src/config/ServiceConfig.js"
import { ServiceLive } from "../../src/main.js"
import { coreMigrations } from "../../src/Migrator.js"
import { acquireTestDatabase, TestDatabase } from "../../src/testing/TestDatabase.js"
import { auditEvents, jobRow } from "../support/jobs.js"
import { silenceableProxy } from "../support/proxy.js"
import {
  FIXTURE_HANDLERS,
  freePort,
  get,
  ORG,
  sample,
  startService,
  waitForExit,
  waitForReady,
  waitUntil
} from "./support.js"

// WORKER_RUNBOOK.de.md, "Job einreihen", with 'org-uuid' replaced by a real UUID.
const RUNBOOK_INSERT = `INSERT INTO job_queue (organization_id, job_type, payload, status)
VALUES ('org-uuid', 'sepa_export', '{"batchId":"test-1"}'::jsonb, 'pending');`.replace("org-uuid", ORG)
// "Verifizieren"
const RUNBOOK_JOBS = "SELECT id, job_type, status, error, created_at FROM job_queue ORDER BY created_at DESC LIMIT 10;"
const RUNBOOK_RUNS = "SELECT job_id, status, last_error, trace_id FROM job_runs ORDER BY created_at DESC LIMIT 10;"

const registerTestType = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  sql`INSERT INTO job_types (name, description) VALUES ('test_sleep', 'test only: sleeps') ON CONFLICT DO NOTHING`
)

const insertSleep = (ms: number) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ id: string }>`INSERT INTO job_queue (organization_id, job_type, payload)
                        VALUES (${ORG}, 'test_sleep', ${JSON.stringify({ ms })}::jsonb) RETURNING id`
  ).pipe(Effect.map((rows) => rows[0]!.id))

const statusOf = (id: string) => Effect.map(jobRow(id), (row) => row.status)

const serviceEnv = (url: string, port: number, extra: Record<string, string> = {}) => ({
  DATABASE_URL: url,
  PORT: String(port),
  HOST: "127.0.0.1",
  SKIPLOCK_HANDLER_MODULES: FIXTURE_HANDLERS,
  ...extra
})

describe("the service", () => {
  layer(TestDatabase.layer({ migrations: migrationSets }), { excludeTestServices: true, timeout: 120_000 })((it) => {
    it.scoped("turns ready, runs a job inserted with the runbook's SQL, and counts it in /metrics", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const { url } = yield* TestDatabase
        const port = yield* freePort
        const service = yield* startService(serviceEnv(url, port))

        const health = yield* waitUntil("/healthz answers", get(port, "/healthz"), service)
        expect(health.status).toBe(200)
        const ready = yield* waitForReady(service, port)
        // Its pool (13 connections with the defaults) fits the server: no warning about it.
        expect(service.logs().some((line) => String(line.message).startsWith("the database pool may open"))).toBe(false)
        expect(JSON.parse(ready.body)).toMatchObject({
          ready: true,
          status: "ready",
          checks: { database: { ok: true }, migrations: { ok: true }, worker: { ok: true } }
        })
        // Before any job: the counters of the handled types are there, at 0.
        const fresh = (yield* get(port, "/metrics"))!.body
        for (const counter of ["claimed", "completed", "failed", "retried", "released"]) {
          expect(sample(fresh, `skiplock_jobs_${counter}_total`, { job_type: "sepa_export" })).toBe(0)
        }
        expect(sample(fresh, "skiplock_leases_lost_total", { job_type: "sepa_export" })).toBe(0)
        expect(sample(fresh, "skiplock_jobs_rescued_total")).toBe(0)

        yield* sql.unsafe(RUNBOOK_INSERT)
        const [job] = yield* sql<{ id: string }>`SELECT id FROM job_queue WHERE job_type = 'sepa_export' AND organization_id = ${ORG}`
        yield* waitUntil("the job completes", Effect.map(statusOf(job!.id), (s) => (s === "completed" ? s : undefined)), service)

        // The runbook's verification queries show it, with a W3C trace id.
        const jobs = yield* sql.unsafe<{ id: string; status: string; error: string | null }>(RUNBOOK_JOBS)
        expect(jobs[0]).toMatchObject({ id: job!.id, status: "completed", error: null })
        const runs = yield* sql.unsafe<{ job_id: string; status: string; trace_id: string }>(RUNBOOK_RUNS)
        expect(runs[0]).toMatchObject({ job_id: job!.id, status: "completed" })
        expect(runs[0]!.trace_id).toMatch(/^[0-9a-f]{32}$/)
        expect(yield* auditEvents(job!.id)).toEqual(["job_started", "job_completed"])

        // Its log lines carry the job's id, type, organization and trace id.
        const jobLog = service.logs().find((line) => line.message === "exported SEPA batch test-1")
        expect(jobLog?.annotations).toMatchObject({ jobId: job!.id, jobType: "sepa_export", organizationId: ORG, traceId: runs[0]!.trace_id })

        const metrics = yield* get(port, "/metrics")
        expect(metrics?.status).toBe(200)
        expect(metrics?.contentType).toContain("text/plain; version=0.0.4")
        const body = metrics!.body
        expect(sample(body, "skiplock_jobs_claimed_total", { job_type: "sepa_export" })).toBe(1)
        expect(sample(body, "skiplock_jobs_completed_total", { job_type: "sepa_export" })).toBe(1)
        expect(sample(body, "skiplock_handler_duration_seconds_count", { job_type: "sepa_export" })).toBe(1)
        expect(sample(body, "skiplock_jobs", { job_type: "sepa_export", status: "completed" })).toBe(1)
        expect(sample(body, "skiplock_jobs", { job_type: "sepa_export", status: "pending" })).toBe(0)
        expect(sample(body, "skiplock_database_up")).toBe(1)
        expect(body).toContain("# TYPE skiplock_jobs_completed_total counter")
        expect(body).toContain("# TYPE skiplock_handler_duration_seconds histogram")
        expect(body).toMatch(/^skiplock_worker_claiming\{worker_id="[^"]+"\} 1$/m)
        expect(body).toMatch(/^skiplock_worker_prefetched_jobs\{worker_id="[^"]+"\} 0$/m)
        // The service's worker is registered in job_workers and counted alive.
        expect(sample(body, "skiplock_workers", { state: "alive" })).toBe(1)
        expect(body).toMatch(/^skiplock_worker_heartbeat_age_seconds\{worker_id="[^"]+",host="[^"]+"\} [0-9.]+$/m)

        // A registered type without a handler here waits, and /metrics says how many and how long.
        yield* sql`INSERT INTO job_queue (organization_id, job_type, payload, run_at)
                   VALUES (${ORG}, 'dunning_run', '{}'::jsonb, now() - interval '2 minutes')`
        const waiting = yield* get(port, "/metrics")
        expect(sample(waiting!.body, "skiplock_jobs_waiting_without_handler", { job_type: "dunning_run" })).toBe(1)
        expect(sample(waiting!.body, "skiplock_jobs_waiting_without_handler", { job_type: "sepa_export" })).toBeUndefined()
        expect(sample(waiting!.body, "skiplock_oldest_runnable_job_age_seconds", { job_type: "dunning_run" })).toBeGreaterThanOrEqual(120)
        yield* sql`DELETE FROM job_queue WHERE job_type = 'dunning_run'`

        service.child.kill("SIGTERM")
        expect(yield* waitForExit(service)).toEqual({ code: 0, signal: null })
      }))

    it.scoped("a handler's follow-up job goes straight to a free slot, announced to no one (hand-off); with WORKER_HAND_OFF=false it goes through NOTIFY", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const { url } = yield* TestDatabase
        yield* sql`INSERT INTO job_types (name, description) VALUES ('test_follow_up', 'test only: enqueues a sepa_export job') ON CONFLICT DO NOTHING`
        // What skiplock_jobs announces while the service runs a test_follow_up job, up to a marker job inserted after.
        const announcements = (handOff: boolean, batchId: string) =>
          Effect.scoped(Effect.gen(function* () {
            const port = yield* freePort
            const service = yield* startService(serviceEnv(url, port, { WORKER_HAND_OFF: String(handOff) }))
            yield* waitForReady(service, port)
            const listener = new pg.Client({ connectionString: url })
            yield* Effect.acquireRelease(Effect.promise(() => listener.connect()), () => Effect.promise(() => listener.end()))
            const received: Array<string> = []
            listener.on("notification", (message) => received.push(message.payload ?? ""))
            yield* Effect.promise(() => listener.query("LISTEN skiplock_jobs"))

            yield* sql`INSERT INTO job_queue (organization_id, job_type, payload) VALUES (${ORG}, 'test_follow_up', ${JSON.stringify({ batchId })}::jsonb)`
            const followUpDone = sql`SELECT 1 FROM job_queue WHERE job_type = 'sepa_export' AND payload->>'batchId' = ${batchId} AND status = 'completed'`
            yield* waitUntil("the follow-up job completes", Effect.map(followUpDone, (rows) => (rows.length === 1 ? true : undefined)), service)
            // Notifications arrive in commit order: once the marker's is here, the follow-up's would have been.
            yield* sql`INSERT INTO job_queue (organization_id, job_type, payload) VALUES (${ORG}, 'dunning_run', '{}'::jsonb)`
            yield* waitUntil("the marker is announced", Effect.sync(() => (received.includes("dunning_run") ? true : undefined)), service)
            yield* sql`DELETE FROM job_queue WHERE job_type = 'dunning_run'`
            service.child.kill("SIGTERM")
            expect(yield* waitForExit(service)).toEqual({ code: 0, signal: null })
            return [...received]
          }))
        expect(yield* announcements(true, "handed-off")).toEqual(["test_follow_up", "dunning_run"])
        expect(yield* announcements(false, "notified")).toEqual(["test_follow_up", "sepa_export", "dunning_run"])
      }))

    it.scoped("SIGTERM during a slow job: /readyz says stopping, the job finishes, the process exits 0", () =>
      Effect.gen(function* () {
        yield* registerTestType
        const { url } = yield* TestDatabase
        const port = yield* freePort
        const service = yield* startService(serviceEnv(url, port, { WORKER_SHUTDOWN_TIMEOUT: "30s" }))
        yield* waitForReady(service, port)
        const id = yield* insertSleep(2500)
        yield* waitUntil("the job runs", Effect.map(statusOf(id), (s) => (s === "processing" ? s : undefined)), service)

        service.child.kill("SIGTERM")
        const stopping = yield* waitUntil(
          "/readyz says stopping",
          Effect.map(get(port, "/readyz"), (result) => (result?.status === 503 ? result : undefined)),
          service
        )
        expect(JSON.parse(stopping.body)).toMatchObject({ ready: false, status: "stopping" })
        expect(yield* waitForExit(service)).toEqual({ code: 0, signal: null })
        expect(yield* jobRow(id)).toMatchObject({ status: "completed", attempts: 1, lockedBy: null })
        expect(yield* auditEvents(id)).toEqual(["job_started", "job_completed"])
      }))

    it.scoped("a job longer than WORKER_SHUTDOWN_TIMEOUT is released to pending without counting the attempt", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* registerTestType
        const { url } = yield* TestDatabase
        const port = yield* freePort
        const service = yield* startService(serviceEnv(url, port, { WORKER_SHUTDOWN_TIMEOUT: "1s" }))
        yield* waitForReady(service, port)
        const id = yield* insertSleep(120_000)
        yield* waitUntil("the job runs", Effect.map(statusOf(id), (s) => (s === "processing" ? s : undefined)), service)

        const signalled = Date.now()
        service.child.kill("SIGTERM")
        expect(yield* waitForExit(service)).toEqual({ code: 0, signal: null })
        expect(Date.now() - signalled).toBeGreaterThanOrEqual(900)
        expect(yield* jobRow(id)).toMatchObject({ status: "pending", attempts: 0, lockedBy: null })
        expect(yield* auditEvents(id)).toEqual(["job_started", "job_released"])
        const [processing] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM job_queue WHERE status = 'processing'`
        expect(processing!.n).toBe(0)
        yield* sql`DELETE FROM job_queue WHERE id = ${id}`
      }))

    it.scoped("the same SIGTERM delivered twice at once (npm forwarding it to its process group) still stops gracefully", () =>
      Effect.gen(function* () {
        yield* registerTestType
        const { url } = yield* TestDatabase
        const port = yield* freePort
        const service = yield* startService(serviceEnv(url, port, { WORKER_SHUTDOWN_TIMEOUT: "1s" }))
        yield* waitForReady(service, port)
        const id = yield* insertSleep(120_000)
        yield* waitUntil("the job runs", Effect.map(statusOf(id), (s) => (s === "processing" ? s : undefined)), service)
        service.child.kill("SIGTERM")
        service.child.kill("SIGTERM")
        expect(yield* waitForExit(service, "20 seconds")).toEqual({ code: 0, signal: null })
        expect(service.output()).not.toContain("second SIGTERM")
        expect(yield* statusOf(id)).toBe("pending") // released, not left to its lease
      }))

    it.scoped("a second signal exits at once, without waiting for the running job", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* registerTestType
        const { url } = yield* TestDatabase
        const port = yield* freePort
        const service = yield* startService(serviceEnv(url, port, { WORKER_SHUTDOWN_TIMEOUT: "5m" }))
        yield* waitForReady(service, port)
        const id = yield* insertSleep(120_000)
        yield* waitUntil("the job runs", Effect.map(statusOf(id), (s) => (s === "processing" ? s : undefined)), service)

        service.child.kill("SIGTERM")
        yield* waitUntil(
          "the worker waits for the job",
          Effect.sync(() => (service.logs().some((line) => line.message.startsWith("stopping: waiting up to 5m")) ? true : undefined)),
          service
        )
        // A person's second signal, not the first one delivered twice (those within 250 ms are one stop).
        yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 400)))
        const second = Date.now()
        service.child.kill("SIGTERM")
        expect(yield* waitForExit(service, "10 seconds")).toEqual({ code: 143, signal: null })
        expect(Date.now() - second).toBeLessThan(5000)
        expect(service.output()).toContain("second SIGTERM: exiting at once")
        // Left to the lease: another worker rescues it once the lease expires.
        expect(yield* statusOf(id)).toBe("processing")
        yield* sql`DELETE FROM job_queue WHERE id = ${id}`
      }))

    it.scoped("options the worker refuses stop start-up with a StartupError naming them, before the worker registers", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const { url } = yield* TestDatabase
        // The configuration's bounds are the worker's own: what is left are jobs not made by AppJobs.load, which
        // refuses two handlers for one job type itself.
        const config = yield* serviceConfig.pipe(
          Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["DATABASE_URL", url], ["PORT", "0"], ["HOST", "127.0.0.1"]])))
        )
        const jobs = yield* load([])
        const twice = { ...jobs, handlers: [...jobs.handlers, jobs.handlers[0]!] }
        // The file's earlier services (child processes) leave their rows: this one must add none.
        const workersBefore = yield* sql`SELECT worker_id FROM job_workers ORDER BY worker_id`
        const error = yield* Effect.flip(launch(ServiceLive(config, twice)))
        expect(error).toBeInstanceOf(StartupError)
        expect(error.message).toBe(
          `cannot start the worker: invalid worker options: handlers must have one handler per job type, got two for "${jobs.handlers[0]!.definition.jobType}"`
        )
        expect(yield* sql`SELECT worker_id FROM job_workers ORDER BY worker_id`).toEqual(workersBefore)
      }))
  })

  it.scopedLive("its pool has a connection for every running handler: twelve transactional handlers at once all complete", () =>
    Effect.gen(function* () {
      const { url } = yield* acquireTestDatabase({ migrations: migrationSets })
      const client = new pg.Client({ connectionString: url })
      yield* Effect.acquireRelease(Effect.promise(() => client.connect()), () => Effect.promise(() => client.end()))
      yield* Effect.promise(() => client.query(`INSERT INTO job_types (name, description) VALUES ('test_tx_sleep', 'test only: sleeps in a transaction')`))
      const port = yield* freePort
      const service = yield* startService(serviceEnv(url, port, { WORKER_CONCURRENCY: "12" }))
      yield* waitForReady(service, port)
      // Each holds a connection for 6 s, longer than the pool waits for a free one (5 s): with too small a
      // pool, the last ones failed as if the database were gone, and went back to pending.
      yield* Effect.promise(() => client.query(`INSERT INTO job_queue (organization_id, job_type, payload, max_attempts)
                                                 SELECT '${ORG}', 'test_tx_sleep', '{"ms":6000}', 1 FROM generate_series(1, 12)`))
      // Done: all completed, or one of them has an error (failed, or released back to pending).
      const outcomes = Effect.promise(() => client.query<{ status: string; error: string | null }>(
        "SELECT status, error FROM job_queue WHERE job_type = 'test_tx_sleep'"))
      const rows = yield* waitUntil("the jobs are done", Effect.map(outcomes, (result) =>
        result.rows.every((row) => row.status === "completed") || result.rows.some((row) => row.error !== null) ? result.rows : undefined), service, "60 seconds")
      expect(rows.filter((row) => row.status !== "completed")).toEqual([])
      expect(service.output()).not.toContain("database connection lost")
    }), 90_000)

  it.scopedLive("says at start when its pool may open more connections than the server takes", () =>
    Effect.gen(function* () {
      const { url } = yield* acquireTestDatabase({ migrations: migrationSets })
      const client = new pg.Client({ connectionString: url })
      yield* Effect.acquireRelease(Effect.promise(() => client.connect()), () => Effect.promise(() => client.end()))
      const { rows: [limits] } = yield* Effect.promise(() => client.query<{ max: number; reserved: number }>(
        "SELECT current_setting('max_connections')::int AS max, current_setting('superuser_reserved_connections')::int AS reserved"))
      const port = yield* freePort
      // One more running job than the server has connections for.
      const service = yield* startService(serviceEnv(url, port, { WORKER_CONCURRENCY: String(limits!.max) }))
      yield* waitForReady(service, port)
      const warning = service.logs().find((line) => String(line.message).startsWith("the database pool may open"))
      expect(warning?.message).toContain(`but the server takes ${limits!.max - limits!.reserved} (max_connections ${limits!.max} less ${limits!.reserved} reserved)`)
      expect(warning?.message).toContain("lower WORKER_CONCURRENCY, or raise max_connections")
    }), 60_000)

  it.scopedLive("a database that stops answering makes /readyz say so within its 2 s, and /metrics within its 5 s", () =>
    Effect.gen(function* () {
      const { url } = yield* acquireTestDatabase({ migrations: migrationSets })
      const proxy = yield* silenceableProxy(url)
      const port = yield* freePort
      const service = yield* startService(serviceEnv(proxy.url, port))
      yield* waitForReady(service, port)
      // The host stops answering (a network partition): connections stay open, nothing comes back.
      proxy.silence()
      const timed = (path: string) =>
        Effect.promise(async () => {
          const started = Date.now()
          const response = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(30_000) })
          return { status: response.status, body: await response.text(), ms: Date.now() - started }
        })
      const ready = yield* timed("/readyz")
      expect(ready.status).toBe(503)
      expect(JSON.parse(ready.body)).toMatchObject({ checks: { database: { ok: false, detail: "no answer within 2 seconds" } } })
      // Not after the query's cancellation, which waits for a connection of its own (5 s).
      expect(ready.ms).toBeLessThan(4_000)
      const metrics = yield* timed("/metrics")
      expect(sample(metrics.body, "skiplock_database_up")).toBe(0)
      expect(metrics.ms).toBeLessThan(8_000) // Prometheus gives a scrape 10 s by default
      // Every scrape of the outage fails; the log says so once (then every 10th), in one line.
      yield* timed("/metrics")
      const scrapeWarnings = service.logs().filter((line) => String(line.message).startsWith("collecting queue metrics"))
      expect(scrapeWarnings.map((line) => line.message)).toEqual([expect.stringMatching(/^collecting queue metrics failed: /)])
    }), 60_000)

  it.scopedLive("a burst of scrapes against a table held by a lock takes one connection of the pool: the worker still claims and completes jobs, and /readyz answers", () =>
    Effect.gen(function* () {
      const { url } = yield* acquireTestDatabase({ migrations: migrationSets })
      const client = (name: string) =>
        Effect.acquireRelease(
          Effect.promise(async () => {
            const c = new pg.Client({ connectionString: url, application_name: name })
            await c.connect()
            return c
          }),
          (c) => Effect.promise(() => c.end())
        )
      const admin = yield* client("test-admin")
      const locker = yield* client("test-locker")
      const port = yield* freePort
      const service = yield* startService(serviceEnv(url, port))
      yield* waitForReady(service, port)
      yield* Effect.promise(() => admin.query("INSERT INTO job_types (name, description) VALUES ('test_sleep', 'test only: sleeps') ON CONFLICT DO NOTHING"))
      // Due in a second, so the worker's poll claims it while the lock is held.
      const { rows: [job] } = yield* Effect.promise(() =>
        admin.query<{ id: string }>(`INSERT INTO job_queue (organization_id, job_type, payload, run_at) VALUES ($1, 'test_sleep', '{"ms": 10}', now() + interval '1 second') RETURNING id`, [ORG])
      )
      // job_types is read by every scrape (the registered types) and by neither claims nor completions.
      yield* Effect.promise(() => locker.query("BEGIN; LOCK TABLE job_types IN ACCESS EXCLUSIVE MODE"))
      const scrapes = Array.from({ length: 30 }, () =>
        fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(30_000) }).then((response) => response.text())
      )
      yield* Effect.sleep("1500 millis")
      const { rows: [waiting] } = yield* Effect.promise(() =>
        admin.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")
      )
      expect(waiting!.n).toBeLessThanOrEqual(1)
      // /readyz has a connection of its own: the scrapes waiting for theirs do not make it say the database is gone.
      expect((yield* get(port, "/readyz"))?.status).toBe(200)
      yield* waitUntil(
        "the job completes while the lock is held",
        Effect.map(Effect.promise(() => admin.query<{ status: string }>("SELECT status FROM job_queue WHERE id = $1", [job!.id])), ({ rows }) =>
          rows[0]?.status === "completed" ? true : undefined),
        service,
        "15 seconds"
      )
      // Every scrape answered, those that found the table locked with the database down for their purpose.
      const bodies = yield* Effect.promise(() => Promise.all(scrapes))
      expect(bodies.every((body) => sample(body, "skiplock_database_up") === 0 || sample(body, "skiplock_database_up") === 1)).toBe(true)
      yield* Effect.promise(() => locker.query("ROLLBACK"))
      yield* waitForReady(service, port)
    }), { timeout: 90_000 })

  it.scopedLive("refuses to start when migrations are missing, and says to run `npm run migrate`", () =>
    Effect.gen(function* () {
      const { url } = yield* acquireTestDatabase({ migrations: [coreMigrations] })
      const port = yield* freePort
      const service = yield* startService(serviceEnv(url, port))
      expect((yield* waitForExit(service)).code).toBe(1)
      const fatal = service.logs().find((line) => line.logLevel === "FATAL")
      expect(fatal?.message).toContain("missing")
      expect(fatal?.message).toContain("billing/0001_organizations")
      expect(fatal?.message).toContain("run `npm run migrate`")
      expect(service.output()).not.toMatch(/^\s+at /m)
    }), { timeout: 60_000 })

  it.scopedLive("refuses to start when an applied migration was changed since, naming it", () =>
    Effect.gen(function* () {
      const { url } = yield* acquireTestDatabase({ migrations: migrationSets })
      // The ledger as a database keeps it that applied another text of core/0001 than this version's.
      yield* Effect.acquireUseRelease(
        Effect.promise(async () => {
          const client = new pg.Client({ connectionString: url })
          await client.connect()
          return client
        }),
        (client) => Effect.promise(() => client.query("UPDATE skiplock_migrations SET checksum = 'another text' WHERE set_name = 'core' AND version = 1")),
        (client) => Effect.promise(() => client.end())
      )
      const port = yield* freePort
      const service = yield* startService(serviceEnv(url, port))
      expect((yield* waitForExit(service)).code).toBe(1)
      const fatal = service.logs().find((line) => line.logLevel === "FATAL")
      expect(fatal?.message).toContain("applied 1 migration(s) from a text other than this version's (core/0001_job_types)")
    }), { timeout: 60_000 })

  it.scopedLive("waits for an unreachable database with a clear message: alive, not ready, stops on SIGTERM", () =>
    Effect.gen(function* () {
      const closedPort = yield* freePort
      const port = yield* freePort
      const service = yield* startService(serviceEnv(`postgres://postgres@127.0.0.1:${closedPort}/skiplock`, port))
      yield* waitUntil(
        "it reports the database unreachable",
        Effect.sync(() => service.logs().find((line) => line.message.startsWith(`cannot reach the database postgres://postgres@127.0.0.1:${closedPort}/skiplock`))),
        service
      )
      expect(service.logs().find((line) => line.logLevel === "WARN")?.message).toMatch(/ECONNREFUSED.*retrying in \d+s \(attempt 1\)/)
      expect((yield* get(port, "/healthz"))?.status).toBe(200)
      const readiness = yield* get(port, "/readyz")
      expect(readiness?.status).toBe(503)
      expect(JSON.parse(readiness!.body)).toMatchObject({ ready: false, status: "starting", detail: expect.stringContaining("waiting for the database") })
      service.child.kill("SIGTERM")
      expect(yield* waitForExit(service)).toEqual({ code: 0, signal: null })
      expect(service.output()).not.toMatch(/^\s+at /m)
    }), { timeout: 60_000 })

  it.scopedLive("a bad configuration value stops start-up, naming the variable and what it accepts", () =>
    Effect.gen(function* () {
      const service = yield* startService({ PORT: "eighty", WORKER_POLL_INTERVAL: "5", WORKER_CONCURRENCY: "0" })
      expect((yield* waitForExit(service)).code).toBe(1)
      const output = service.output()
      expect(output).toContain("invalid configuration")
      expect(output).toContain('PORT="eighty" is not valid: expected a whole number from 0 to 65535')
      expect(output).toContain('WORKER_POLL_INTERVAL="5" is not valid: expected a duration')
      expect(output).toContain('WORKER_CONCURRENCY="0" is not valid: expected a whole number from 1 to 1000')
    }), { timeout: 60_000 })
})
