// An enqueue in the worker's own process (LocalWorkers) claims for a free slot in the same statement
// (enqueue_and_claim): the job starts without a notification or a poll. Real clock; the workers here
// neither listen nor poll (1 hour) unless a test says so, so only a hand-off can start a job.
import { SqlClient } from "@effect/sql"
import { describe, expect, layer } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Scope, Schema } from "effect"
import pg from "pg"
import { Handler, JobDefinition, JobQueue, LocalWorkers, UnknownJobType, Worker } from "../../src/index.js"
import type { ClaimedJob } from "../../src/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { auditEvents, jobRow, ORG } from "../support/jobs.js"
import { eventually, pauseLive, settled } from "../support/live.js"

const Report = JobDefinition.make("report_generation", Schema.Struct({ n: Schema.Number }))
const Unregistered = JobDefinition.make("not_in_job_types", Schema.Struct({ n: Schema.Number }))

const report = (n: number, extra: Partial<JobQueue.EnqueueOptions> = {}) => ({ organizationId: ORG, jobType: "report_generation", payload: { n }, ...extra })

// A LISTEN connection of its own on skiplock_jobs, collecting the payloads it receives.
const listener = Effect.acquireRelease(
  Effect.gen(function* () {
    const { url } = yield* TestDatabase
    const client = new pg.Client({ connectionString: url })
    const received: Array<string> = []
    yield* Effect.promise(() => client.connect())
    client.on("notification", (message) => received.push(message.payload ?? ""))
    yield* Effect.promise(() => client.query("LISTEN skiplock_jobs"))
    return { client, received }
  }),
  ({ client }) => Effect.promise(() => client.end())
)

describe("hand-off to a worker of the enqueuing process", () => {
  layer(TestDatabase.layer(), { excludeTestServices: true })((it) => {
    const fresh = Effect.flatMap(SqlClient.SqlClient, (sql) => sql`DELETE FROM job_queue`)

    it.effect("an enqueue starts its job in a free slot at once, recorded as any claim; a repeated idempotency key returns the first job", () =>
      Effect.gen(function* () {
        yield* fresh
        const started = yield* Deferred.make<number>()
        const handler = Handler.make(Report, { run: (payload) => Deferred.succeed(started, payload.n) })
        const worker = yield* Worker.make({ handlers: [handler], workerId: "local", listen: false, pollInterval: "1 hour" })
        yield* settled(worker)

        const job = yield* JobQueue.enqueue(report(1, { idempotencyKey: "k-1" }))
        expect(yield* Deferred.await(started).pipe(Effect.timeout("5 seconds"))).toBe(1)
        yield* eventually(Effect.map(jobRow(job.id), (row) => row.status === "completed"), "the job completed")
        expect(yield* auditEvents(job.id)).toEqual(["job_started", "job_completed"])
        const sql = yield* SqlClient.SqlClient
        const runs = yield* sql<{ workerId: string; status: string }>`SELECT worker_id AS "workerId", status FROM job_runs WHERE job_id = ${job.id}`
        expect(runs).toEqual([{ workerId: "local", status: "completed" }])
        expect(job).toMatchObject({ status: "processing", existing: false, idempotencyKey: "k-1" })

        const again = yield* JobQueue.enqueue(report(2, { idempotencyKey: "k-1" }))
        expect(again).toMatchObject({ id: job.id, existing: true })
      }).pipe(Effect.provide(JobQueue.layer([Report])), Effect.provide(LocalWorkers.layer), Effect.scoped))

    it.effect("an enqueue whose insert waits on a lock does not hand off: the job is inserted when the lock ends and runs once", () =>
      Effect.gen(function* () {
        yield* fresh
        const { url } = yield* TestDatabase
        let started = 0
        const handler = Handler.make(Report, { run: () => Effect.sync(() => void started++) })
        // A lease shorter than the wait: a claim made after the wait would hand over jobs whose lease ran out.
        const worker = yield* Worker.make({
          handlers: [handler], workerId: "local", listen: false, pollInterval: "100 millis",
          leaseDuration: "2 seconds", heartbeatInterval: "500 millis", rescueInterval: "500 millis"
        })
        yield* settled(worker)
        // Another session inserts the same idempotency key in a transaction it keeps open.
        const other = new pg.Client({ connectionString: url })
        yield* Effect.acquireRelease(Effect.promise(() => other.connect()), () => Effect.promise(() => other.end()))
        yield* Effect.promise(() => other.query(`BEGIN; INSERT INTO job_queue (organization_id, job_type, payload, idempotency_key)
                                                 VALUES ('${ORG}', 'report_generation', '{"n":0}', 'k-locked')`))
        const enqueueing = yield* Effect.fork(JobQueue.enqueue(report(1, { idempotencyKey: "k-locked", maxAttempts: 1 })))
        yield* pauseLive("3 seconds")
        yield* Effect.promise(() => other.query("ROLLBACK"))
        const job = yield* Fiber.join(enqueueing)
        expect(job).toMatchObject({ existing: false })
        yield* eventually(Effect.map(jobRow(job.id), (row) => row.status === "completed"), "the job completed", "5 seconds")
        expect(started).toBe(1)
        expect(yield* auditEvents(job.id)).toEqual(["job_started", "job_completed"])
      }).pipe(Effect.provide(JobQueue.layer([Report])), Effect.provide(LocalWorkers.layer), Effect.scoped), { timeout: 30_000 })

    it.effect("the enqueue_and_claim that workers of the version before 0023 call still waits for a lock as long as it takes", () =>
      Effect.gen(function* () {
        yield* fresh
        const { url } = yield* TestDatabase
        const sql = yield* SqlClient.SqlClient
        const other = new pg.Client({ connectionString: url })
        yield* Effect.acquireRelease(Effect.promise(() => other.connect()), () => Effect.promise(() => other.end()))
        yield* Effect.promise(() => other.query(`BEGIN; INSERT INTO job_queue (organization_id, job_type, payload, idempotency_key)
                                                 VALUES ('${ORG}', 'report_generation', '{"n":0}', 'k-old-worker')`))
        const job = JSON.stringify([{ id: "0192b3c4-d5e6-7f80-9a1b-2c3d4e5f6a7b", organization_id: ORG, job_type: "report_generation", payload: { n: 1 },
                                      priority: 0, max_attempts: 3, run_at: new Date().toISOString(), idempotency_key: "k-old-worker", created_by: null }])
        // As the code before 0023 sends it: eight arguments.
        const calling = yield* Effect.fork(sql<{ enqueued: unknown }>`
          SELECT enqueued FROM enqueue_and_claim(${job}::jsonb, NULL, NULL, ${new Date()}, 'old-worker', ARRAY['report_generation'], 1, '30 seconds')`)
        yield* pauseLive("1500 millis")
        yield* Effect.promise(() => other.query("ROLLBACK"))
        const rows = yield* Fiber.join(calling)
        expect(rows[0]!.enqueued).toEqual([expect.objectContaining({ id: "0192b3c4-d5e6-7f80-9a1b-2c3d4e5f6a7b" })])
      }).pipe(Effect.scoped))

    it.effect("inside a transaction the job is not handed off: it must not start before the caller commits", () =>
      Effect.gen(function* () {
        yield* fresh
        const sql = yield* SqlClient.SqlClient
        const handler = Handler.make(Report, { run: () => Effect.void })
        const worker = yield* Worker.make({ handlers: [handler], listen: false, pollInterval: "1 hour" })
        yield* settled(worker)
        const job = yield* sql.withTransaction(JobQueue.enqueue(report(1)))
        yield* pauseLive("300 millis")
        expect(yield* jobRow(job.id)).toMatchObject({ status: "pending", lockedBy: null })
      }).pipe(Effect.provide(JobQueue.layer([Report])), Effect.provide(LocalWorkers.layer), Effect.scoped))

    it.effect("the claim keeps claim_next_job's order: a more urgent job waiting first is taken, and the new one is announced", () =>
      Effect.gen(function* () {
        yield* fresh
        const sql = yield* SqlClient.SqlClient
        const started: Array<number> = []
        const handler = Handler.make(Report, { run: (payload) => Effect.zipRight(Effect.sync(() => started.push(payload.n)), Effect.never) })
        const worker = yield* Worker.make({ handlers: [handler], concurrency: 1, listen: false, pollInterval: "1 hour", shutdownTimeout: "10 millis" })
        yield* settled(worker)
        const urgent = yield* sql.withTransaction(JobQueue.enqueue(report(1, { priority: -1 })))
        const { received } = yield* listener

        const later = yield* JobQueue.enqueue(report(2))
        yield* eventually(Effect.sync(() => started.length === 1), "a job started")
        expect(started).toEqual([1])
        expect(yield* jobRow(urgent.id)).toMatchObject({ status: "processing" })
        expect(yield* jobRow(later.id)).toMatchObject({ status: "pending", lockedBy: null })
        yield* eventually(Effect.sync(() => received.length === 1), "the pending job was announced")
        expect(received).toEqual(["report_generation"])
      }).pipe(Effect.provide(JobQueue.layer([Report])), Effect.provide(LocalWorkers.layer), Effect.scoped))

    it.effect("a job claimed by its enqueue is not announced with NOTIFY (no worker wakes for it)", () =>
      Effect.gen(function* () {
        yield* fresh
        const started = yield* Deferred.make<number>()
        const handler = Handler.make(Report, { run: (payload) => Deferred.succeed(started, payload.n) })
        const worker = yield* Worker.make({ handlers: [handler], listen: false, pollInterval: "1 hour" })
        yield* settled(worker)
        const { received } = yield* listener

        yield* JobQueue.enqueue(report(1))
        expect(yield* Deferred.await(started).pipe(Effect.timeout("5 seconds"))).toBe(1)
        // Notifications arrive in commit order: once the later one is here, the earlier would have been.
        yield* JobQueue.enqueue({ organizationId: ORG, jobType: "sepa_export", payload: { batchId: "b-1" } })
        yield* eventually(Effect.sync(() => received.length > 0), "the sepa_export job was announced")
        expect(received).toEqual(["sepa_export"])
      }).pipe(Effect.provide(JobQueue.layer([Report])), Effect.provide(LocalWorkers.layer), Effect.scoped))

    it.effect("enqueues never run more than `concurrency` jobs at once; the rest wait for the worker's own claims", () =>
      Effect.gen(function* () {
        yield* fresh
        const gate = yield* Deferred.make<void>()
        let running = 0
        let most = 0
        let done = 0
        const handler = Handler.make(Report, {
          run: () =>
            Effect.acquireUseRelease(
              Effect.sync(() => {
                running++
                most = Math.max(most, running)
              }),
              () => Deferred.await(gate),
              () => Effect.sync(() => {
                running--
                done++
              })
            )
        })
        const worker = yield* Worker.make({ handlers: [handler], concurrency: 2, pollInterval: "1 hour" })
        yield* settled(worker)
        const jobs = yield* Effect.forEach([1, 2, 3, 4], (n) => JobQueue.enqueue(report(n)))
        yield* eventually(Effect.sync(() => running === 2), "two jobs run")
        yield* pauseLive("200 millis")
        expect(running).toBe(2)
        const pendingNow = yield* Effect.forEach(jobs, (job) => Effect.map(jobRow(job.id), (row) => row.status))
        expect(pendingNow.filter((status) => status === "pending")).toHaveLength(2)

        yield* Deferred.succeed(gate, undefined)
        yield* eventually(Effect.sync(() => done === 4), "all four jobs ran")
        expect(most).toBe(2)
      }).pipe(Effect.provide(JobQueue.layer([Report])), Effect.provide(LocalWorkers.layer), Effect.scoped))

    it.effect("a worker that stops while a hand-off is on its way takes the job, runs it and records it before it stops", () =>
      Effect.gen(function* () {
        yield* fresh
        const { url } = yield* TestDatabase
        const handler = Handler.make(Report, { run: () => Effect.void })
        const scope = yield* Scope.make()
        const worker = yield* Worker.make({ handlers: [handler], listen: false, pollInterval: "1 hour" }).pipe(Scope.extend(scope))
        yield* settled(worker)
        // Another session holds job_queue in SHARE mode: the hand-off's insert waits for it.
        const blocker = new pg.Client({ connectionString: url })
        yield* Effect.acquireRelease(Effect.promise(() => blocker.connect()), () => Effect.promise(() => blocker.end()))
        yield* Effect.promise(() => blocker.query("BEGIN; LOCK TABLE job_queue IN SHARE MODE"))
        const enqueueing = yield* Effect.fork(JobQueue.enqueue(report(1)))
        const sql = yield* SqlClient.SqlClient
        yield* eventually(
          Effect.map(sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '%enqueue_and_claim%' AND wait_event_type = 'Lock'`, (rows) => rows[0]!.n === 1),
          "the hand-off waits for the lock"
        )
        const stopping = yield* Effect.fork(Scope.close(scope, Exit.void))
        yield* pauseLive("200 millis")
        yield* Effect.promise(() => blocker.query("ROLLBACK"))
        const job = yield* Fiber.join(enqueueing)
        yield* Fiber.join(stopping)
        expect(yield* jobRow(job.id)).toMatchObject({ status: "completed", lockedBy: null })
        expect(yield* auditEvents(job.id)).toEqual(["job_started", "job_completed"])
      }).pipe(Effect.provide(JobQueue.layer([Report])), Effect.provide(LocalWorkers.layer), Effect.scoped), { timeout: 30_000 })

    it.effect("enqueueMany hands several jobs to the free slots in one statement", () =>
      Effect.gen(function* () {
        yield* fresh
        const claims: Array<ReadonlyArray<ClaimedJob>> = []
        const handler = Handler.make(Report, { run: () => Effect.void })
        const worker = yield* Worker.make({ handlers: [handler], listen: false, pollInterval: "1 hour", onClaim: (jobs) => claims.push(jobs) })
        yield* settled(worker)
        const jobs = yield* JobQueue.enqueueMany([report(1), report(2), report(3)])
        yield* eventually(Effect.sync(() => claims.length === 1), "one claim")
        expect(claims[0]!.map((job) => job.id).sort()).toEqual(jobs.map((job) => job.id).sort())
        // With idempotency keys too (their check against other job types runs before the statement).
        const keyed = yield* JobQueue.enqueueMany([report(4, { idempotencyKey: "r-4" }), report(5)])
        expect(keyed.map((job) => job.status)).toEqual(["processing", "processing"])
        yield* eventually(Effect.sync(() => claims.length === 2), "a second claim")
      }).pipe(Effect.provide(JobQueue.layer([Report])), Effect.provide(LocalWorkers.layer), Effect.scoped))

    it.effect("an enqueue returns the status its statement left each job in: processing for the jobs it handed off, pending for the rest", () =>
      Effect.gen(function* () {
        yield* fresh
        const handler = Handler.make(Report, { run: () => Effect.never })
        const worker = yield* Worker.make({ handlers: [handler], concurrency: 2, listen: false, pollInterval: "1 hour", shutdownTimeout: "10 millis" })
        yield* settled(worker)
        const batch = yield* JobQueue.enqueueMany([report(1), report(2), report(3)])
        expect(batch.map((job) => job.status)).toEqual(["processing", "processing", "pending"])
        const single = yield* JobQueue.enqueue(report(4)) // no slot left
        expect(single.status).toBe("pending")
        // As the rows say (the handlers never return, so nothing has moved on since).
        const jobs = [...batch, single]
        expect(yield* Effect.forEach(jobs, (job) => Effect.map(jobRow(job.id), (row) => row.status))).toEqual(jobs.map((job) => job.status))
      }).pipe(Effect.provide(JobQueue.layer([Report])), Effect.provide(LocalWorkers.layer), Effect.scoped))

    it.effect("an enqueue that fails (unknown job type) inserts nothing, says why, and gives the slots back", () =>
      Effect.gen(function* () {
        yield* fresh
        const started = yield* Deferred.make<number>()
        const handlers = [
          Handler.make(Unregistered, { run: () => Effect.void }),
          Handler.make(Report, { run: (payload) => Deferred.succeed(started, payload.n) })
        ] as const
        const worker = yield* Worker.make({ handlers, concurrency: 1, listen: false, pollInterval: "1 hour" })
        yield* settled(worker)
        const error = yield* Effect.flip(JobQueue.enqueue({ organizationId: ORG, jobType: "not_in_job_types", payload: { n: 1 } }))
        expect(error).toBeInstanceOf(UnknownJobType)
        expect(error).toMatchObject({ jobType: "not_in_job_types" })
        const sql = yield* SqlClient.SqlClient
        expect(yield* sql`SELECT 1 FROM job_queue`).toHaveLength(0)
        // The one slot is free again: the next enqueue is handed off.
        yield* JobQueue.enqueue(report(7))
        expect(yield* Deferred.await(started).pipe(Effect.timeout("5 seconds"))).toBe(7)
      }).pipe(Effect.provide(JobQueue.layer([Report, Unregistered])), Effect.provide(LocalWorkers.layer), Effect.scoped))
  })
})
