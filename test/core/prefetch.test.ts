// prefetch: the worker claims jobs ahead of its free handler slots. At most `concurrency` handlers
// run; the others wait, held and renewed, and start in claim order; a stop releases them unstarted.
// Most tests use TestClock against a real database; the workers neither listen nor poll unless time moves.
import { SqlClient } from "@effect/sql"
import { describe, expect, it, layer } from "@effect/vitest"
import { Clock, Deferred, Duration, Effect, Exit, Fiber, FiberId, Metric, Schema, Scope, TestClock } from "effect"
import { Handler, JobDefinition, JobQueue, Metrics, Worker } from "../../src/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { auditEvents, jobRow, ORG, statusCounts } from "../support/jobs.js"
import { advance, eventually, pauseLive } from "../support/live.js"

const Report = JobDefinition.make("report_generation", Schema.Struct({ n: Schema.Number }))

const reset = Effect.flatMap(SqlClient.SqlClient, (sql) => sql`DELETE FROM job_queue`)

// Jobs 1..count, claimed in that order (priority n).
const enqueueReports = (count: number) =>
  JobQueue.enqueueMany(
    Array.from({ length: count }, (_, i) => ({ organizationId: ORG, jobType: "report_generation", payload: { n: i + 1 }, priority: i + 1 }))
  ).pipe(Effect.provide(JobQueue.layer([Report])))

// A handler that records which jobs started and how many ran at once, and waits for each job's gate
// (all opened when the test's scope closes, so a failing test does not leave the worker's stop waiting).
const gatedHandler = Effect.gen(function* () {
  const gates = new Map<number, Deferred.Deferred<void>>()
  const gate = (n: number) => {
    let found = gates.get(n)
    if (found === undefined) gates.set(n, (found = Deferred.unsafeMake<void>(FiberId.none)))
    return found
  }
  const started: Array<number> = []
  // Which attempts of each job started, e.g. { 2: [1, 2] }.
  const attempts: Record<number, Array<number>> = {}
  let running = 0
  let mostAtOnce = 0
  const handler = Handler.make(Report, {
    run: (payload, job) =>
      Effect.gen(function* () {
        started.push(payload.n)
        ;(attempts[payload.n] ??= []).push(job.attempt)
        running++
        mostAtOnce = Math.max(mostAtOnce, running)
        yield* Deferred.await(gate(payload.n))
        running--
      })
  })
  const open = (...ns: Array<number>) => Effect.forEach(ns, (n) => Deferred.succeed(gate(n), undefined), { discard: true })
  yield* Effect.addFinalizer(() => Effect.forEach([...gates.values()], (d) => Deferred.succeed(d, undefined), { discard: true }))
  return { handler, started, attempts, open, mostAtOnce: () => mostAtOnce }
})

const processingBy = (workerId: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ n: number }>`SELECT count(*)::int AS n FROM job_queue WHERE status = 'processing' AND locked_by = ${workerId}`
  ).pipe(Effect.map((rows) => rows[0]!.n))

const quiet = { listen: false, pollInterval: "1 hour" } as const

// Job 1 running and job 2 claimed ahead, their leases (10 s) renewed by no heartbeat: another transaction holds
// audit_logs, so the claim (which writes job_started entries) waits in the database. Sent at 0 s, it answers at 9 s,
// after the heartbeat at 8 s, which had no job to renew; the next one is due at 16 s.
const claimedAheadUnrenewed = (workerId: string, rescueInterval: Duration.DurationInput) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const jobs = yield* gatedHandler
    const [, second] = yield* enqueueReports(2)
    const locked = yield* Deferred.make<void>()
    const release = yield* Deferred.make<void>()
    const holder = yield* sql
      .withTransaction(sql`LOCK TABLE audit_logs IN SHARE MODE`.pipe(Effect.zipRight(Deferred.succeed(locked, undefined)), Effect.zipRight(Deferred.await(release))))
      .pipe(Effect.fork)
    yield* Deferred.await(locked)
    const worker = yield* Worker.make({
      handlers: [jobs.handler], workerId, concurrency: 1, prefetch: 1,
      leaseDuration: "10 seconds", heartbeatInterval: "8 seconds", rescueInterval, ...quiet
    })
    const claimWaits = Effect.map(
      sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity
                         WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%FROM claim_next_job(%'`,
      (rows) => rows[0]!.n === 1
    )
    yield* eventually(claimWaits, "the worker's claim waits for the lock")
    yield* TestClock.adjust("9 seconds")
    yield* Deferred.succeed(release, undefined)
    yield* Fiber.join(holder)
    yield* eventually(Effect.map(worker.status, (status) => status.running === 1 && status.prefetched === 1), "job 1 runs and job 2 waits")
    return { jobs, worker, second: second! }
  })

describe("prefetch", () => {
  it.layer(TestDatabase.layer())((it) => {
    it.scoped("holds concurrency + prefetch jobs, runs at most concurrency at once, starts the others in claim order as handlers finish", () =>
      Effect.gen(function* () {
        yield* reset
        const jobs = yield* gatedHandler
        yield* enqueueReports(10)
        const claimedCounter = Metrics.forJobType(Metrics.jobsClaimed, "report_generation")
        const claimedBefore = (yield* Metric.value(claimedCounter)).count
        const worker = yield* Worker.make({ handlers: [jobs.handler], workerId: "ahead", concurrency: 2, prefetch: 3, ...quiet })

        yield* eventually(Effect.map(processingBy("ahead"), (n) => n === 5), "the worker holds 2 + 3 jobs")
        expect(jobs.started).toEqual([1, 2])
        expect(yield* worker.status).toMatchObject({ running: 2, prefetched: 3 })
        // skiplock_jobs_claimed_total counts them all, not only the two started.
        expect((yield* Metric.value(claimedCounter)).count - claimedBefore).toBe(5)
        // Claimed ahead means claimed: processing, held by the worker, and started in the audit trail.
        const waiting = yield* Effect.flatMap(SqlClient.SqlClient, (sql) =>
          sql<{ id: string }>`SELECT id FROM job_queue WHERE (payload->>'n')::int = 3`
        )
        expect(yield* jobRow(waiting[0]!.id)).toMatchObject({ status: "processing", lockedBy: "ahead", attempts: 1 })
        expect(yield* auditEvents(waiting[0]!.id)).toEqual(["job_started"])

        // Job 1 finishes: job 3 (the next in claim order) starts, and the worker claims one more (job 6).
        yield* jobs.open(1)
        yield* eventually(Effect.sync(() => jobs.started.length === 3), "the next prefetched job started")
        expect(jobs.started).toEqual([1, 2, 3])
        yield* eventually(Effect.map(statusCounts, (c) => c.completed === 1 && c.processing === 5), "one completed, 5 held again")

        yield* jobs.open(...Array.from({ length: 10 }, (_, i) => i + 1))
        yield* eventually(Effect.map(statusCounts, (c) => c.completed === 10), "all completed")
        expect(jobs.started).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
        expect(jobs.mostAtOnce()).toBe(2)
      }))

    it.scoped("a prefetched job's lease is renewed while it waits: a minute behind a long job, it is not rescued, and starts once", () =>
      Effect.gen(function* () {
        yield* reset
        const jobs = yield* gatedHandler
        const [, second] = yield* enqueueReports(2)
        // Lease 30 s, heartbeat every 10 s, rescue every 5 s (defaults): the worker rescues expired leases itself.
        const worker = yield* Worker.make({ handlers: [jobs.handler], workerId: "patient", concurrency: 1, prefetch: 1, listen: false })
        yield* eventually(Effect.map(processingBy("patient"), (n) => n === 2), "the worker holds both jobs")

        yield* advance(worker, "65 seconds", "5 seconds", { running: 1 })
        const [lease] = yield* Effect.flatMap(SqlClient.SqlClient, (sql) =>
          sql<{ expires: Date }>`SELECT lease_expires_at AS expires FROM job_queue WHERE id = ${second!.id}`
        )
        expect(lease!.expires.getTime()).toBeGreaterThan(yield* Clock.currentTimeMillis)
        expect(yield* jobRow(second!.id)).toMatchObject({ status: "processing", lockedBy: "patient", attempts: 1 })
        expect(jobs.started).toEqual([1])

        yield* jobs.open(1, 2)
        yield* eventually(Effect.map(statusCounts, (c) => c.completed === 2), "both completed")
        expect(yield* auditEvents(second!.id)).toEqual(["job_started", "job_completed"])
        expect(jobs.started).toEqual([1, 2])
      }))

    it.scoped("a handler's timeout counts from its start, not from the claim", () =>
      Effect.gen(function* () {
        yield* reset
        // Each job takes 8 s of a 10 s timeout; the second waits 8 s before it starts.
        const handler = Handler.make(Report, { timeout: "10 seconds", run: () => Effect.sleep("8 seconds") })
        const [first, second] = yield* enqueueReports(2)
        const worker = yield* Worker.make({ handlers: [handler], workerId: "timed", concurrency: 1, prefetch: 1, ...quiet })
        yield* eventually(Effect.map(processingBy("timed"), (n) => n === 2), "the worker holds both jobs")
        // (Timed out at 10 s after the claim, the second job would go back to pending and nothing would run.)
        yield* advance(worker, "15 seconds", "1 second", { running: 1 })
        yield* advance(worker, "1 second")
        expect(yield* statusCounts).toEqual({ completed: 2 })
        expect(yield* jobRow(first!.id)).toMatchObject({ attempts: 1, error: null })
        expect(yield* jobRow(second!.id)).toMatchObject({ attempts: 1, error: null })
      }))

    it.scoped("a stop releases the prefetched jobs at once, unstarted and their attempt not counted, and lets the running one finish", () =>
      Effect.gen(function* () {
        yield* reset
        const jobs = yield* gatedHandler
        const [first, ...waiting] = yield* enqueueReports(3)
        const scope = yield* Scope.make()
        const worker = yield* Worker.make({ handlers: [jobs.handler], workerId: "stopper", concurrency: 1, prefetch: 2, ...quiet }).pipe(Scope.extend(scope))
        yield* eventually(Effect.map(processingBy("stopper"), (n) => n === 3), "the worker holds all three")
        expect(yield* worker.status).toMatchObject({ running: 1, prefetched: 2 })

        const stopping = yield* Effect.fork(Scope.close(scope, Exit.void))
        for (const job of waiting) {
          yield* eventually(Effect.map(jobRow(job.id), (row) => row.status === "pending"), "a prefetched job is back to pending")
          expect(yield* jobRow(job.id)).toMatchObject({ status: "pending", attempts: 0, lockedBy: null })
          expect(yield* auditEvents(job.id)).toEqual(["job_started", "job_released"])
        }
        yield* jobs.open(1, 2, 3)
        yield* Fiber.join(stopping)
        expect(yield* jobRow(first!.id)).toMatchObject({ status: "completed", attempts: 1 })
        expect(jobs.started).toEqual([1])
      }))

    it.scoped("a prefetched job's lease runs from when its claim was sent, as in the database: a claim slow to answer does not stretch it", () =>
      Effect.gen(function* () {
        yield* reset
        const { jobs, worker } = yield* claimedAheadUnrenewed("slow-claim", "1 hour")
        // At 12 s job 1 returns. Job 2's lease ran out at 10 s (the rescuer may have taken it): it must not start.
        yield* TestClock.adjust("3 seconds")
        yield* jobs.open(1, 2)
        yield* eventually(Effect.map(worker.status, (status) => status.running === 0 && status.prefetched === 0), "job 1 finished and job 2 was let go")
        yield* pauseLive("200 millis")
        expect(jobs.started).toEqual([1])
      }))

    it.scoped("a prefetched job whose lease ran out while it waited (not renewed) is not started: it was rescued, and runs once, when claimed again", () =>
      Effect.gen(function* () {
        yield* reset
        const { jobs, worker, second } = yield* claimedAheadUnrenewed("stale", "1 second")
        // At 11 s the worker's rescue takes both back (the first too, its handler still running: unrenewed, the
        // worker is as good as paused).
        yield* TestClock.adjust("2 seconds")
        yield* eventually(Effect.map(jobRow(second.id), (row) => row.status === "pending"), "the second job was rescued")
        expect(yield* worker.status).toMatchObject({ prefetched: 1 })

        // Once the first job's handler returns, the worker claims both again (attempt 2) and runs them.
        yield* jobs.open(1, 2)
        yield* eventually(Effect.map(statusCounts, (c) => c.completed === 2), "both completed")
        // The second job's first attempt, claimed ahead and expired, never started; its second did.
        expect(jobs.attempts[2]).toEqual([2])
        expect(yield* jobRow(second.id)).toMatchObject({ status: "completed", attempts: 2 })
      }))

    // Found by a review: the claim used to start the job waiting ahead in the slot the handler freed.
    it.scoped("a job claimed ahead before a stop is released unstarted, also when a claim on its way answers after a handler returned", () =>
      Effect.gen(function* () {
        yield* reset
        const sql = yield* SqlClient.SqlClient
        const jobs = yield* gatedHandler
        const [, second] = yield* enqueueReports(2)
        const scope = yield* Scope.make()
        const worker = yield* Worker.make({
          handlers: [jobs.handler], workerId: "stopper", concurrency: 1, prefetch: 2, listen: false, pollInterval: "5 seconds"
        }).pipe(Scope.extend(scope))
        // Job 1 runs, job 2 waits ahead; the claim came back short.
        yield* eventually(Effect.map(worker.status, (s) => s.running === 1 && s.prefetched === 1 && s.nextPollAt !== undefined), "job 1 runs, job 2 waits")
        expect(jobs.started).toEqual([1])
        const waitsForLock = (statement: string) =>
          Effect.map(
            sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity
                               WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE ${`%FROM ${statement}(%`}`,
            (rows) => rows[0]!.n === 1
          )

        // Another session holds audit_logs: the next claim (which writes job_started) waits for it.
        const locked = yield* Deferred.make<void>()
        const unlock = yield* Deferred.make<void>()
        const holder = yield* sql
          .withTransaction(sql`LOCK TABLE audit_logs IN SHARE MODE`.pipe(Effect.zipRight(Deferred.succeed(locked, undefined)), Effect.zipRight(Deferred.await(unlock))))
          .pipe(Effect.fork)
        yield* Deferred.await(locked)
        yield* JobQueue.enqueueJob(Report, { n: 3 }, { organizationId: ORG, priority: 3 }).pipe(Effect.provide(JobQueue.layer([Report])))
        yield* TestClock.adjust("5 seconds") // the poll: a claim for the one job of prefetch room left
        yield* eventually(waitsForLock("claim_next_job"), "the claim waits for the lock")

        // The stop begins while that claim is on its way; then job 1's handler returns (its slot is free), and
        // its completion waits for the lock too.
        const stopping = yield* Effect.fork(Scope.close(scope, Exit.void))
        yield* eventually(Effect.map(worker.status, (s) => !s.claiming), "the stop began")
        yield* jobs.open(1)
        yield* eventually(waitsForLock("complete_and_claim"), "job 1's completion waits for the lock")
        // The claim answers.
        yield* Deferred.succeed(unlock, undefined)
        yield* Fiber.join(holder)
        yield* eventually(Effect.map(jobRow(second!.id), (row) => row.status !== "processing" || jobs.started.includes(2)), "job 2 was released or started")
        yield* pauseLive("300 millis")
        const startedDuringStop = [...jobs.started]
        const secondRow = yield* jobRow(second!.id)
        const secondAudit = yield* auditEvents(second!.id)
        yield* jobs.open(1, 2, 3)
        yield* Fiber.join(stopping)
        // Job 2 was claimed ahead before the stop: it goes back to pending unstarted, its attempt not counted.
        expect(startedDuringStop).toEqual([1])
        expect(secondRow).toMatchObject({ status: "pending", attempts: 0 })
        expect(secondAudit).toEqual(["job_started", "job_released"])
      }))
  })

  // A lease lost: with the real clock, because this test waits for the worker's own statements (heartbeat)
  // while its jobs finish, and TestClock.adjust waits for every fiber to be suspended.
  layer(TestDatabase.layer(), { excludeTestServices: true })((it) => {
    it.scoped("a prefetched job the worker lost (taken over elsewhere) is dropped at the next heartbeat, never started", () =>
      Effect.gen(function* () {
        yield* reset
        const sql = yield* SqlClient.SqlClient
        const jobs = yield* gatedHandler
        const [, second] = yield* enqueueReports(2)
        const worker = yield* Worker.make({ handlers: [jobs.handler], workerId: "loser", concurrency: 1, prefetch: 1, heartbeatInterval: "100 millis", ...quiet })
        yield* eventually(Effect.map(processingBy("loser"), (n) => n === 2), "the worker holds both jobs")
        // As if another worker had rescued it (a lease that ran out while this one could not reach the database).
        yield* sql`UPDATE job_queue SET locked_by = 'other' WHERE id = ${second!.id}`

        yield* eventually(Effect.map(worker.status, (status) => status.prefetched === 0), "the heartbeat dropped the job")
        expect(yield* worker.status).toMatchObject({ running: 1, prefetched: 0 })
        yield* jobs.open(1, 2)
        yield* eventually(Effect.map(statusCounts, (c) => c.completed === 1), "the first completed")
        yield* pauseLive("300 millis") // its slot free: the lost job would have started by now
        expect(jobs.started).toEqual([1])
        expect(yield* jobRow(second!.id)).toMatchObject({ status: "processing", lockedBy: "other" })
        expect(yield* auditEvents(second!.id)).toEqual(["job_started"])
      }))
  })
})
