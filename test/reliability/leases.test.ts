// Leases under TestClock, against a real database: a worker that lost its
// lease stops the job's handler and never completes it, even when the handler
// ignores the interruption; a rescued job goes back to its place in line.
// (Renewal while running and rescue of a dead worker's job: test/core/maintenance.test.ts.)
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Clock, Deferred, Duration, Effect, Fiber, Ref, Schema, TestClock } from "effect"
import * as Jobs from "../../src/Jobs.js"
import { Audit, Handler, JobDefinition, JobQueue, Worker } from "../../src/index.js"
import type { Outcome } from "../../src/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { auditEvents, jobRow, ORG } from "../support/jobs.js"
import { advance, eventually, pauseLive, settled } from "../support/live.js"

const Report = JobDefinition.make("report_generation", Schema.Struct({ n: Schema.Number }))

const reset = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  Effect.zipRight(sql`DELETE FROM job_queue`, sql`CREATE TABLE IF NOT EXISTS lease_effects (job_id uuid NOT NULL, worker text NOT NULL)`)
).pipe(Effect.zipRight(Clock.currentTimeMillis))

const enqueue = (n: number) => JobQueue.enqueueJob(Report, { n }, { organizationId: ORG }).pipe(Effect.provide(JobQueue.layer([Report])))

/** What "another worker" does to a job it finds with an expired lease: rescue it and claim it (attempt 2). */
const rescueAndClaimElsewhere = (jobId: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.gen(function* () {
      const at = (yield* Clock.currentTimeMillis) + 1
      // The job's lease expired (its worker was paused, or cut off from the database).
      yield* sql`UPDATE job_queue SET lease_expires_at = ${new Date(at - 1)} WHERE id = ${jobId}`
      const rescued = yield* sql<{ id: string; deadWorker: string }>`SELECT id, dead_worker AS "deadWorker" FROM rescue_expired_jobs('other-worker', ${new Date(at)})`
      const claimed = yield* sql<{ id: string; attempts: number }>`SELECT id, attempts FROM claim_next_job('other-worker', NULL, 1, ${new Date(at)})`
      return { rescued, claimed }
    })
  )

/**
 * A worker running one job whose k-th run waits for gate k (two gates): records the attempts it ran
 * and how many run at once, and the outcomes. The gates open when the scope closes, before the
 * worker's own finalizer, which waits for running handlers.
 */
const gatedWorker = (workerId: string, options: { readonly heartbeatInterval?: Duration.DurationInput } = {}) =>
  Effect.gen(function* () {
    const gates = [yield* Deferred.make<void>(), yield* Deferred.make<void>()]
    const attempts: Array<number> = []
    const outcomes: Array<Outcome["_tag"]> = []
    let inHandler = 0
    const handler = Handler.make(Report, {
      run: (_, job) =>
        Effect.suspend(() => {
          const gate = gates[attempts.length]!
          attempts.push(job.attempt)
          inHandler++
          return Deferred.await(gate).pipe(Effect.ensuring(Effect.sync(() => inHandler--)))
        }),
      timeout: "1 hour"
    })
    const worker = yield* Worker.make({
      handlers: [handler], listen: false, workerId, concurrency: 2, rescueInterval: "1 hour", ...options,
      onOutcome: (_, outcome) => outcomes.push(outcome._tag)
    })
    yield* Effect.addFinalizer(() => Effect.forEach(gates, (gate) => Deferred.succeed(gate, undefined)))
    yield* settled(worker, { running: 1 })
    return { worker, attempts, outcomes, inHandler: () => inHandler, open: (k: number) => Deferred.succeed(gates[k]!, undefined) }
  })

describe("leases", () => {
  it.layer(TestDatabase.layer())((it) => {
    it.scoped("a worker that lost a job's lease interrupts its handler at the next heartbeat and does not complete it", () =>
      Effect.gen(function* () {
        yield* reset
        const interrupted = yield* Ref.make(false)
        const outcomes: Array<Outcome["_tag"]> = []
        const handler = Handler.make(Report, {
          run: () => Effect.never.pipe(Effect.onInterrupt(() => Ref.set(interrupted, true))),
          timeout: "1 hour"
        })
        const job = yield* enqueue(1)
        const worker = yield* Worker.make({
          handlers: [handler], listen: false, workerId: "paused-worker", heartbeatInterval: "10 seconds", rescueInterval: "1 hour",
          onOutcome: (_, outcome) => outcomes.push(outcome._tag)
        })
        yield* settled(worker, { running: 1 })

        const { rescued, claimed } = yield* rescueAndClaimElsewhere(job.id)
        expect(rescued).toEqual([{ id: job.id, deadWorker: "paused-worker" }])
        expect(claimed).toEqual([{ id: job.id, attempts: 2 }])

        yield* TestClock.adjust("10 seconds") // the heartbeat finds the job gone...
        yield* eventually(Effect.map(worker.status, (status) => status.running === 0), "the handler was stopped")
        expect(yield* Ref.get(interrupted)).toBe(true)
        expect(outcomes).toEqual(["LeaseLost"])
        // ...and left it alone: it is the other worker's now.
        expect(yield* jobRow(job.id)).toMatchObject({ status: "processing", attempts: 2, lockedBy: "other-worker" })
        expect(yield* auditEvents(job.id)).toEqual(["job_started", "job_rescued", "job_started"])
      }))

    it.scoped("a handler that ignores the interruption and returns after its job was rescued completes nothing", () =>
      Effect.gen(function* () {
        yield* reset
        const sql = yield* SqlClient.SqlClient
        const outcomes: Array<Outcome["_tag"]> = []
        const make = (transactional: boolean, gate: Deferred.Deferred<void>) =>
          Handler.make(Report, {
            transactional,
            run: (_, job) =>
              Effect.uninterruptible(
                Effect.zipRight(sql`INSERT INTO lease_effects (job_id, worker) VALUES (${job.jobId}, ${job.workerId})`, Deferred.await(gate))
              )
          })
        for (const transactional of [false, true]) {
          yield* sql`DELETE FROM job_queue`
          yield* sql`DELETE FROM lease_effects`
          const job = yield* enqueue(2)
          const gate = yield* Deferred.make<void>()
          yield* Effect.scoped(
            Effect.gen(function* () {
              const worker = yield* Worker.make({
                handlers: [make(transactional, gate)], listen: false, workerId: "slow-worker", rescueInterval: "1 hour",
                onOutcome: (_, outcome) => outcomes.push(outcome._tag)
              })
              yield* settled(worker, { running: 1 })
              yield* rescueAndClaimElsewhere(job.id)
              yield* advance(worker, "10 seconds", "5 seconds", { running: 1 }) // the heartbeat asks the handler to stop; it does not
              yield* Deferred.succeed(gate, undefined) // ...and returns later
              yield* eventually(Effect.map(worker.status, (status) => status.running === 0), "the handler returned")
            })
          )
          expect(outcomes.pop()).toBe("LeaseLost")
          // Not completed by the slow worker: the other worker still holds it.
          expect(yield* jobRow(job.id)).toMatchObject({ status: "processing", attempts: 2, lockedBy: "other-worker" })
          expect(yield* auditEvents(job.id)).toEqual(["job_started", "job_rescued", "job_started"])
          // A transactional handler's effects were rolled back with the refused completion.
          const effects = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM lease_effects WHERE job_id = ${job.id}`
          expect(effects[0]!.n).toBe(transactional ? 0 : 1)
        }
      }))

    it.scoped("a job rescued from this worker while it stalled and claimed by it again: the earlier attempt stops, the new one is held and runs once", () =>
      Effect.gen(function* () {
        yield* reset
        const sql = yield* SqlClient.SqlClient
        const job = yield* enqueue(3)
        const { worker, attempts, outcomes, inHandler, open } = yield* gatedWorker("stalled-worker")
        // Its lease ran out while the worker stalled; another worker rescued it, and this one claims it again (attempt 2).
        const at = (yield* Clock.currentTimeMillis) + 31_000
        expect(yield* sql`SELECT id FROM rescue_expired_jobs('other-worker', ${new Date(at)})`).toEqual([{ id: job.id }])
        yield* TestClock.adjust("5 seconds") // the poll
        yield* eventually(Effect.sync(() => attempts.length === 2), "attempt 2 started here")
        // Attempt 1 no longer holds the job: it is stopped at once, and only attempt 2 counts as running.
        yield* eventually(Effect.sync(() => inHandler() === 1), "attempt 1 was stopped")
        yield* eventually(Effect.map(worker.status, (status) => status.running === 1), "one job runs")
        expect(outcomes).toEqual(["LeaseLost"])
        // Attempt 2's lease is renewed: a minute later it is still this worker's, and not rescued again.
        yield* advance(worker, "60 seconds", "5 seconds", { running: 1 })
        const now = yield* Clock.currentTimeMillis
        expect(yield* sql`SELECT id FROM rescue_expired_jobs('other-worker', ${new Date(now + 1)})`).toEqual([])
        expect(yield* jobRow(job.id)).toMatchObject({ status: "processing", attempts: 2, lockedBy: "stalled-worker" })
        yield* open(1)
        yield* eventually(Effect.map(jobRow(job.id), (row) => row.status === "completed"), "attempt 2 completed")
        expect(attempts).toEqual([1, 2])
        expect(outcomes).toEqual(["LeaseLost", "Completed"])
        expect(yield* auditEvents(job.id)).toEqual(["job_started", "job_rescued", "job_started", "job_completed"])
      }))

    it.scoped("a heartbeat's answer about an earlier attempt does not stop the attempt claimed while it was on its way", () =>
      Effect.gen(function* () {
        yield* reset
        const sql = yield* SqlClient.SqlClient
        const t0 = yield* Clock.currentTimeMillis
        const job = yield* enqueue(5)
        // Heartbeat at 7 s, polls every 5 s.
        const { worker, attempts, outcomes, inHandler } = yield* gatedWorker("racing-worker", { heartbeatInterval: "7 seconds" })
        yield* advance(worker, "5 seconds", "5 seconds", { running: 1 }) // a poll, nothing to claim
        // Another session holds the worker's row: the next heartbeat waits in its registration update.
        const release = yield* Deferred.make<void>()
        const locked = yield* Deferred.make<void>()
        const holder = yield* Effect.fork(sql.withTransaction(
          sql`SELECT 1 FROM job_workers WHERE worker_id = 'racing-worker' FOR UPDATE`.pipe(
            Effect.zipRight(Deferred.succeed(locked, undefined)),
            Effect.zipRight(Deferred.await(release))
          )
        ))
        yield* Deferred.await(locked)
        // The lease of attempt 1 ran out while the worker stalled; another worker rescued it.
        expect(yield* sql`SELECT id FROM rescue_expired_jobs('other-worker', ${new Date(t0 + 40_000)})`).toEqual([{ id: job.id }])
        yield* TestClock.adjust("2 seconds") // the heartbeat asks about attempt 1, and waits for the row
        const waiting = sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '%worker_heartbeat(%' AND wait_event_type = 'Lock'`
        yield* eventually(Effect.map(waiting, (rows) => rows[0]!.n === 1), "the heartbeat waits")
        yield* TestClock.adjust("3 seconds") // the poll claims the job again: attempt 2, attempt 1 is stopped
        yield* eventually(Effect.sync(() => attempts.length === 2 && inHandler() === 1), "attempt 2 runs alone")
        yield* Deferred.succeed(release, undefined)
        yield* Fiber.join(holder)
        yield* eventually(Effect.map(waiting, (rows) => rows[0]!.n === 0), "the heartbeat answered")
        yield* pauseLive("300 millis")
        // The answer (attempt 1 is not held) was about attempt 1 only: attempt 2 runs on, held.
        expect(outcomes).toEqual(["LeaseLost"])
        expect(inHandler()).toBe(1)
        expect(yield* jobRow(job.id)).toMatchObject({ status: "processing", attempts: 2, lockedBy: "racing-worker" })
      }))

    it.scoped("a job failed by hand while it runs is retried only once its worker stopped the handler, and then runs alone", () =>
      Effect.gen(function* () {
        yield* reset
        const job = yield* enqueue(4)
        const { worker, attempts, outcomes, inHandler, open } = yield* gatedWorker("busy-worker")
        yield* TestClock.adjust("3 seconds") // after the worker's last heartbeat, before its next
        yield* Jobs.fail(job.id, { actor: "cli:test", reason: "stuck on the bank's server" })
        // Requeued now, this worker could claim it again with the same attempt number while the handler still runs.
        const refused = yield* Effect.flip(Jobs.retry(job.id, { actor: "cli:test" }))
        expect(refused.message).toBe(
          `cannot retry job ${job.id}: it is failed, but its handler may still run on worker busy-worker, which stops it at its next heartbeat and reports it stopped at the one after: retry in about 20 seconds`
        )
        // The handler, still running, logs an entry of its own for the job: that changes nothing.
        const audit = yield* Audit.make
        yield* audit.record({ event: "report_rendered", actor: "busy-worker", jobId: job.id, organizationId: ORG })
        expect((yield* Effect.flip(Jobs.retry(job.id, { actor: "cli:test" }))).message).toBe(refused.message)
        // Failing or cancelling it again is refused for its state, not with the retry's "in a few seconds".
        expect((yield* Effect.flip(Jobs.fail(job.id, { actor: "cli:test", reason: "again" }))).message).toBe(
          `cannot fail job ${job.id}: it is failed (allowed: pending, processing)`
        )
        expect((yield* Effect.flip(Jobs.cancel(job.id, { actor: "cli:test" }))).message).toBe(`cannot cancel job ${job.id}: it is failed (allowed: pending)`)
        yield* TestClock.adjust("7 seconds") // the heartbeat: the job is no longer held, its handler stops
        yield* eventually(Effect.map(worker.status, (status) => status.running === 0 && inHandler() === 0), "the handler stopped")
        expect(outcomes).toEqual(["LeaseLost"])
        // That heartbeat still reported the handler running; the next one says it has stopped.
        expect((yield* Effect.flip(Jobs.retry(job.id, { actor: "cli:test" }))).message).toBe(refused.message)
        yield* TestClock.adjust("10 seconds")
        yield* eventually(
          Effect.map(Effect.either(Jobs.retry(job.id, { actor: "cli:test" })), (result) => result._tag === "Right"),
          "the retry is accepted"
        )
        yield* TestClock.adjust("5 seconds") // the poll
        yield* eventually(Effect.sync(() => attempts.length === 2), "the job started again")
        expect(inHandler()).toBe(1)
        yield* open(1)
        yield* eventually(Effect.map(jobRow(job.id), (row) => row.status === "completed"), "the job completed")
        expect(attempts).toEqual([1, 1])
        expect(outcomes).toEqual(["LeaseLost", "Completed"])
        expect(yield* auditEvents(job.id)).toEqual(["job_started", "job_failed_manually", "report_rendered", "job_requeued", "job_started", "job_completed"])
      }))

    it.scoped("a rescued job goes back to its place in line, ahead of the jobs enqueued after it", () =>
      Effect.gen(function* () {
        const t0 = yield* reset
        const sql = yield* SqlClient.SqlClient
        const first = yield* enqueue(1)
        yield* sql`SELECT id FROM claim_next_job('dead-worker', NULL, 1, ${new Date(t0)})`
        // A backlog arrives after it, while its worker is dead.
        const later = yield* JobQueue.enqueueMany(
          Array.from({ length: 5 }, (_, n) => ({ organizationId: ORG, jobType: "report_generation", payload: { n: n + 10 }, runAt: new Date(t0 + 1_000 + n) }))
        ).pipe(Effect.provide(JobQueue.layer([Report])))
        const rescued = yield* sql<{ id: string }>`SELECT id FROM rescue_expired_jobs('rescuer', ${new Date(t0 + 31_000)})`
        expect(rescued.map((row) => row.id)).toEqual([first.id])
        const next = yield* sql<{ id: string }>`SELECT id FROM claim_next_job('rescuer', NULL, 1, ${new Date(t0 + 31_000)})`
        expect(next.map((row) => row.id)).toEqual([first.id])
        expect(later).toHaveLength(5)
      }))

    it.scoped("a job released on shutdown also keeps its place in line", () =>
      Effect.gen(function* () {
        const t0 = yield* reset
        const sql = yield* SqlClient.SqlClient
        const first = yield* enqueue(1)
        const [claimed] = yield* sql<{ attempts: number }>`SELECT attempts FROM claim_next_job('stopping-worker', NULL, 1, ${new Date(t0)})`
        yield* TestClock.adjust("1 second")
        yield* enqueue(2) // enqueued after it
        yield* sql`SELECT release_job(${first.id}, 'stopping-worker', ${claimed!.attempts}, ${new Date(t0 + 5_000)})`
        const next = yield* sql<{ id: string; attempts: number }>`SELECT id, attempts FROM claim_next_job('w', NULL, 1, ${new Date(t0 + 5_000)})`
        expect(next).toEqual([{ id: first.id, attempts: 1 }])
      }))
  })
})
