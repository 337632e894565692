// Leases under TestClock, against a real database: a worker that lost its
// lease stops the job's handler and never completes it, even when the handler
// ignores the interruption; a rescued job goes back to its place in line.
// (Renewal while running and rescue of a dead worker's job: test/core/maintenance.test.ts.)
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Clock, Deferred, Effect, Ref, Schema, TestClock } from "effect"
import { Handler, JobDefinition, JobQueue, Worker } from "../../src/index.js"
import type { Outcome } from "../../src/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { auditEvents, jobRow, ORG } from "../support/jobs.js"
import { advance, eventually, settled } from "../support/live.js"

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
