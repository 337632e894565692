// The worker's maintenance under TestClock: registration and heartbeat,
// leases renewed while a handler runs, rescue of expired leases, retention.
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Clock, Deferred, Effect, Metric, Schema } from "effect"
import { Handler, JobDefinition, JobQueue, Metrics, Worker } from "../../src/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { auditEvents, jobRow, ORG } from "../support/jobs.js"
import { advance, eventually, pauseLive, settled } from "../support/live.js"

const Report = JobDefinition.make("report_generation", Schema.Struct({ n: Schema.Number }))

const reset = Effect.flatMap(SqlClient.SqlClient, (sql) => sql`DELETE FROM job_queue`).pipe(Effect.zipRight(Clock.currentTimeMillis))
const enqueue = (n: number) => JobQueue.enqueueJob(Report, { n }, { organizationId: ORG }).pipe(Effect.provide(JobQueue.layer([Report])))

interface WorkerRow {
  readonly host: string
  readonly pid: number
  readonly jobTypes: ReadonlyArray<string>
  readonly jobsInHand: ReadonlyArray<string>
  readonly lastHeartbeatAt: Date
}
const workerRow = (workerId: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<WorkerRow>`SELECT host, pid, job_types AS "jobTypes", jobs_in_hand AS "jobsInHand", last_heartbeat_at AS "lastHeartbeatAt"
                   FROM job_workers WHERE worker_id = ${workerId}`
  ).pipe(Effect.map((rows) => rows[0]))

describe("worker maintenance under TestClock", () => {
  it.layer(TestDatabase.layer())((it) => {
    it.scoped("a worker registers, reports the jobs in hand with each heartbeat, and unregisters on a clean stop", () =>
      Effect.gen(function* () {
        const t0 = yield* reset
        const gate = yield* Deferred.make<void>()
        const handler = Handler.make(Report, { run: () => Deferred.await(gate) })
        const job = yield* enqueue(1)
        const worker = yield* Effect.scoped(
          Effect.gen(function* () {
            const worker = yield* Worker.make({ handlers: [handler], listen: false, workerId: "w-registry" })
            yield* Effect.addFinalizer(() => Deferred.succeed(gate, undefined))
            yield* settled(worker, { running: 1 })
            expect(yield* workerRow("w-registry")).toMatchObject({ pid: process.pid, jobTypes: ["report_generation"], jobsInHand: [] })
            yield* advance(worker, "10 seconds", "5 seconds", { running: 1 })
            yield* eventually(Effect.map(workerRow("w-registry"), (row) => row?.jobsInHand.length === 1), "the heartbeat reported the job")
            const row = (yield* workerRow("w-registry"))!
            expect(row.jobsInHand).toEqual([job.id])
            expect(row.lastHeartbeatAt.getTime() - t0).toBe(10_000)
            return worker
          })
        )
        expect(worker.workerId).toBe("w-registry")
        expect(yield* workerRow("w-registry")).toBeUndefined()
      }))

    it.effect("a worker registered again under the same id (restarted after a crash) starts afresh: its start time, no jobs in hand", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const at = (seconds: number) => new Date(Date.parse("2026-12-06T10:00:00Z") + seconds * 1000)
        const dead = "0190a0b0-0000-7000-8000-00000000dead"
        yield* sql`SELECT register_worker('fixed-id', 'host-a', 100, ARRAY['report_generation'], 5, ${at(0)})`
        yield* sql`SELECT worker_heartbeat('fixed-id', ARRAY[${dead}]::uuid[], ${at(10)})`
        // kill -9, and the same WORKER_ID again 5 s later.
        yield* sql`SELECT register_worker('fixed-id', 'host-a', 200, ARRAY['report_generation'], 5, ${at(15)})`
        const [row] = yield* sql<{ pid: number; startedAt: Date; beat: Date; jobsInHand: ReadonlyArray<string>; until: Date | null }>`
          SELECT pid, started_at AS "startedAt", last_heartbeat_at AS beat, jobs_in_hand AS "jobsInHand", jobs_in_hand_until AS until
          FROM job_workers WHERE worker_id = 'fixed-id'`
        expect(row).toEqual({ pid: 200, startedAt: at(15), beat: at(15), jobsInHand: [], until: null })
        // The same process registering again (its first registration committed, the answer came too late)
        // keeps its start time, the jobs it reported in hand and when it reported them: a registration is no heartbeat (0031).
        yield* sql`SELECT worker_heartbeat('fixed-id', ARRAY[${dead}]::uuid[], ${at(20)})`
        yield* sql`SELECT register_worker('fixed-id', 'host-a', 200, ARRAY['report_generation'], 5, ${at(22)})`
        const [again] = yield* sql<{ startedAt: Date; beat: Date; jobsInHand: ReadonlyArray<string>; until: Date | null }>`
          SELECT started_at AS "startedAt", last_heartbeat_at AS beat, jobs_in_hand AS "jobsInHand", jobs_in_hand_until AS until
          FROM job_workers WHERE worker_id = 'fixed-id'`
        expect(again).toEqual({ startedAt: at(15), beat: at(20), jobsInHand: [dead], until: at(50) })
      }))

    it.scoped("a worker whose row was forgotten (after a long outage) registers again at its next heartbeat, with the jobs in hand", () =>
      Effect.gen(function* () {
        const t0 = yield* reset
        const sql = yield* SqlClient.SqlClient
        const gate = yield* Deferred.make<void>()
        const handler = Handler.make(Report, { run: () => Deferred.await(gate), timeout: "1 hour" })
        const job = yield* enqueue(4)
        const worker = yield* Worker.make({ handlers: [handler], listen: false, workerId: "w-forgotten" })
        yield* Effect.addFinalizer(() => Deferred.succeed(gate, undefined))
        yield* settled(worker, { running: 1 })
        // What forget_dead_workers does to a row unrenewed for an hour (the worker was cut off from the database).
        yield* sql`DELETE FROM job_workers WHERE worker_id = 'w-forgotten'`
        yield* advance(worker, "10 seconds", "5 seconds", { running: 1 })
        yield* eventually(Effect.map(workerRow("w-forgotten"), (row) => row?.jobsInHand.length === 1), "the worker registered again")
        const row = (yield* workerRow("w-forgotten"))!
        expect(row).toMatchObject({ pid: process.pid, jobTypes: ["report_generation"], jobsInHand: [job.id] })
        expect(row.lastHeartbeatAt.getTime() - t0).toBe(10_000)
      }))

    it.scoped("by default a claim holds its job for 30 s, and each heartbeat (every 10 s) renews it to 30 s from then", () =>
      Effect.gen(function* () {
        const t0 = yield* reset
        const sql = yield* SqlClient.SqlClient
        const gate = yield* Deferred.make<void>()
        const handler = Handler.make(Report, { run: () => Deferred.await(gate), timeout: "1 hour" })
        const job = yield* enqueue(5)
        const worker = yield* Worker.make({ handlers: [handler], listen: false })
        yield* Effect.addFinalizer(() => Deferred.succeed(gate, undefined))
        yield* settled(worker, { running: 1 })
        const leaseEnd = Effect.map(
          sql<{ leaseExpiresAt: Date }>`SELECT lease_expires_at AS "leaseExpiresAt" FROM job_queue WHERE id = ${job.id}`,
          (rows) => rows[0]!.leaseExpiresAt.getTime() - t0
        )
        expect(yield* leaseEnd).toBe(30_000)
        yield* advance(worker, "10 seconds", "5 seconds", { running: 1 })
        yield* eventually(Effect.map(leaseEnd, (end) => end === 40_000), "the heartbeat renewed the lease")
        yield* advance(worker, "10 seconds", "5 seconds", { running: 1 })
        yield* eventually(Effect.map(leaseEnd, (end) => end === 50_000), "the next heartbeat renewed it again")
      }))

    it.scoped("a job whose handler is still running is never rescued: the heartbeat keeps its lease", () =>
      Effect.gen(function* () {
        yield* reset
        const gate = yield* Deferred.make<void>()
        const handler = Handler.make(Report, { run: () => Deferred.await(gate), timeout: "1 hour" })
        const job = yield* enqueue(2)
        const worker = yield* Worker.make({ handlers: [handler], listen: false })
        yield* Effect.addFinalizer(() => Deferred.succeed(gate, undefined))
        yield* settled(worker, { running: 1 })
        yield* advance(worker, "2 minutes", "5 seconds", { running: 1 }) // 4 lease lengths
        expect(yield* jobRow(job.id)).toMatchObject({ status: "processing", attempts: 1, lockedBy: worker.workerId })
        yield* Deferred.succeed(gate, undefined)
        yield* eventually(Effect.map(jobRow(job.id), (row) => row.status === "completed"), "the job completed")
        expect(yield* auditEvents(job.id)).toEqual(["job_started", "job_completed"])
      }))

    it.scoped("a job whose worker died is rescued after its lease expires, counting the attempt, and runs again", () =>
      Effect.gen(function* () {
        const t0 = yield* reset
        const sql = yield* SqlClient.SqlClient
        const job = yield* enqueue(3)
        // Another worker claimed it at t0 and then vanished (kill -9): nobody renews its 30 s lease.
        yield* sql`SELECT id FROM claim_next_job('dead-worker', NULL, 1, ${new Date(t0)})`
        let runs = 0
        const handler = Handler.make(Report, { run: () => Effect.sync(() => runs++) })
        const worker = yield* Worker.make({ handlers: [handler], listen: false })
        yield* settled(worker)
        yield* advance(worker, "30 seconds", "5 seconds")
        // The rescue the clock just triggered runs on its own fiber (settled waits for the claim loop only): let it land.
        yield* pauseLive("300 millis")
        expect(yield* jobRow(job.id)).toMatchObject({ status: "processing", lockedBy: "dead-worker" }) // expiry is strict
        yield* advance(worker, "5 seconds")
        // Rescued at t0 + 35 s, then claimed and run again with the clock standing still.
        yield* eventually(Effect.map(jobRow(job.id), (row) => row.status === "completed"), "the rescued job ran again")
        expect(yield* jobRow(job.id)).toMatchObject({ status: "completed", attempts: 2 })
        expect(runs).toBe(1)
        expect(yield* auditEvents(job.id)).toEqual(["job_started", "job_rescued", "job_started", "job_completed"])
        const [rescue] = yield* sql<{ actor: string; details: { deadWorker: string; newStatus: string } }>`
          SELECT actor, details FROM audit_logs WHERE job_id = ${job.id} AND event = 'job_rescued'`
        expect(rescue).toMatchObject({ actor: worker.workerId, details: { deadWorker: "dead-worker", newStatus: "pending" } })
      }))

    it.scoped("a rescued job with no attempts left fails, naming the dead worker", () =>
      Effect.gen(function* () {
        const t0 = yield* reset
        const sql = yield* SqlClient.SqlClient
        const job = yield* JobQueue.enqueueJob(Report, { n: 4 }, { organizationId: ORG, maxAttempts: 1 }).pipe(Effect.provide(JobQueue.layer([Report])))
        yield* sql`SELECT id FROM claim_next_job('dead-worker', NULL, 1, ${new Date(t0)})`
        const failedCounter = Metrics.forJobType(Metrics.jobsFailed, "report_generation")
        const failedBefore = (yield* Metric.value(failedCounter)).count
        const worker = yield* Worker.make({ handlers: [Handler.make(Report, { run: () => Effect.void })], listen: false })
        yield* settled(worker)
        yield* advance(worker, "35 seconds", "5 seconds")
        yield* eventually(Effect.map(jobRow(job.id), (row) => row.status === "failed"), "the job was rescued")
        const row = yield* jobRow(job.id)
        expect(row).toMatchObject({ status: "failed", attempts: 1 })
        expect(row.error).toBe("lease expired: worker dead-worker stopped renewing it")
        // Counted as failed by the worker that rescued it (its own worker is gone): an alert on failures sees it.
        yield* eventually(Effect.map(Metric.value(failedCounter), ({ count }) => count - failedBefore === 1), "the rescuer counted it failed")
      }))

    it.scoped("finished jobs are pruned after the retention period; pending jobs and the history stay", () =>
      Effect.gen(function* () {
        yield* reset
        const sql = yield* SqlClient.SqlClient
        const handler = Handler.make(Report, { run: (payload) => (payload.n === 0 ? Effect.void : Effect.fail(new Error("no"))) })
        const done = yield* enqueue(0)
        const failed = yield* JobQueue.enqueueJob(Report, { n: 1 }, { organizationId: ORG, maxAttempts: 1 }).pipe(Effect.provide(JobQueue.layer([Report])))
        const later = yield* JobQueue.enqueueJob(Report, { n: 0 }, { organizationId: ORG, runAt: new Date((yield* Clock.currentTimeMillis) + 86_400_000) }).pipe(
          Effect.provide(JobQueue.layer([Report]))
        )
        const worker = yield* Worker.make({ handlers: [handler], listen: false, retention: "1 hour", pruneInterval: "1 minute" })
        yield* settled(worker)
        expect((yield* jobRow(done.id)).status).toBe("completed")
        expect((yield* jobRow(failed.id)).status).toBe("failed")

        yield* advance(worker, "59 minutes", "1 minute")
        const kept = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM job_queue`
        expect(kept[0]!.n).toBe(3)

        yield* advance(worker, "2 minutes", "1 minute")
        // the prune that the clock just triggered runs on its own fiber: wait for its DELETE to land
        const left = sql<{ id: string }>`SELECT id FROM job_queue`
        yield* eventually(Effect.map(left, (rows) => rows.length === 1), "the finished jobs are pruned")
        expect((yield* left).map((row) => row.id)).toEqual([later.id])
        const runs = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM job_runs WHERE job_id IN (${done.id}, ${failed.id})`
        expect(runs[0]!.n).toBe(2)
        expect(yield* auditEvents(done.id)).toEqual(["job_started", "job_completed"])
      }))
  })
})
