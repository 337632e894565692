// The database goes away for a few seconds, shorter than a lease, and comes back: the jobs that ran
// through it are recorded once it is back, and the worker does not take its own running jobs for
// dead. An outcome is not written once the worker's lease ran out, and a stop is not held up by one.
// Real clock, the worker's pool behind a proxy that goes down and comes back.
import { SqlClient } from "@effect/sql"
import { describe, expect, layer } from "@effect/vitest"
import { Deferred, type Duration, Effect, Exit, Layer, Schema, Scope } from "effect"
import { Db, Handler, JobDefinition, JobQueue, Worker } from "../../src/index.js"
import type { Outcome } from "../../src/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { ORG } from "../support/jobs.js"
import { eventually, pauseLive } from "../support/live.js"
import { restartableProxy, silenceableProxy } from "../support/proxy.js"

const Report = JobDefinition.make("report_generation", Schema.Struct({ n: Schema.Number }))

/** One job queued, and a proxy to the database for the worker's pool. */
const queuedBehindProxy = Effect.gen(function* () {
  const { url } = yield* TestDatabase
  const sql = yield* SqlClient.SqlClient
  yield* sql`DELETE FROM job_queue`
  const proxy = yield* restartableProxy(url)
  const { id } = yield* JobQueue.enqueueJob(Report, { n: 1 }, { organizationId: ORG }).pipe(Effect.provide(JobQueue.layer([Report])))
  return { sql, proxy, id }
})

const setUp = (options: { readonly leaseDuration: Duration.DurationInput; readonly heartbeatInterval: Duration.DurationInput }) =>
  Effect.gen(function* () {
    const { sql, proxy, id } = yield* queuedBehindProxy
    const started = yield* Deferred.make<void>()
    const finish = yield* Deferred.make<void>()
    const outcomes: Array<Outcome["_tag"]> = []
    const outcome = yield* Deferred.make<Outcome>()
    // The handler does not touch the database: only the worker's own statements meet the outage.
    const handler = Handler.make(Report, { run: () => Effect.zipRight(Deferred.succeed(started, undefined), Deferred.await(finish)) })
    const pool = yield* Layer.build(Db.layer({ url: proxy.url, connectTimeout: "1 second" }))
    yield* Worker.make({
      handlers: [handler], pollInterval: "500 millis", rescueInterval: "500 millis", listen: false, ...options,
      onOutcome: (_, result) => {
        outcomes.push(result._tag)
        Deferred.unsafeDone(outcome, Effect.succeed(result))
      }
    }).pipe(Effect.provide(pool))
    yield* Deferred.await(started)
    const events = Effect.map(
      sql<{ event: string }>`SELECT event FROM audit_logs WHERE job_id = ${id} ORDER BY id`,
      (rows) => rows.map((row) => row.event)
    )
    const jobRow = Effect.map(sql<{ status: string; attempts: number }>`SELECT status, attempts FROM job_queue WHERE id = ${id}`, (rows) => rows[0])
    return { proxy, finish, outcome, outcomes, events, jobRow }
  })

describe("database outages", () => {
  layer(TestDatabase.layer(), { excludeTestServices: true })((it) => {
    it.scoped("a job that finished during it is recorded completed once the database is back, its attempt not counted again", () =>
      Effect.gen(function* () {
        const { proxy, finish, outcome, events, jobRow } = yield* setUp({ leaseDuration: "15 seconds", heartbeatInterval: "2 seconds" })
        proxy.down()
        yield* Deferred.succeed(finish, undefined)
        yield* pauseLive("6 seconds") // longer than five tries of recording it (about 3 s)
        proxy.up()
        expect((yield* Deferred.await(outcome))._tag).toBe("Completed")
        expect(yield* jobRow).toEqual({ status: "completed", attempts: 1 })
        expect(yield* events).toEqual(["job_started", "job_completed"])
      }), 60_000)

    it.scoped("a job whose lease runs out during an outage is stopped before it does (a rescuer elsewhere may take it from then on), then rescued and run again", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const { proxy, finish, outcome, outcomes, events, jobRow } = yield* setUp({ leaseDuration: "6 seconds", heartbeatInterval: "5 seconds" })
        // Right after a heartbeat (at t): the lease in the database runs to t + 6 s; the next beat, due at
        // t + 5 s, fails and is tried again every second.
        const lastBeat = Effect.map(sql<{ at: Date }>`SELECT last_heartbeat_at AS at FROM job_workers`, (rows) => rows[0]!.at.getTime())
        const before = yield* lastBeat
        while ((yield* lastBeat) === before) yield* pauseLive("20 millis")
        const t = yield* lastBeat
        proxy.down()
        expect((yield* Deferred.await(outcome))._tag).toBe("LeaseLost")
        expect(Date.now()).toBeLessThan(t + 6_000)
        // Back after the lease ran out; the worker's own rescuer (every half second) gives the job back, and it runs again.
        yield* pauseLive(`${t + 6_700 - Date.now()} millis`)
        proxy.up()
        yield* Deferred.succeed(finish, undefined)
        yield* eventually(Effect.map(jobRow, (row) => row?.status === "completed"), "the job ran again and completed")
        // The outcome is reported once the completion's statement has answered, a moment after its commit shows here.
        yield* eventually(Effect.sync(() => outcomes.length >= 2), "the second run's outcome reported")
        expect(outcomes).toEqual(["LeaseLost", "Completed"])
        expect(yield* jobRow).toEqual({ status: "completed", attempts: 2 })
        expect(yield* events).toEqual(["job_started", "job_rescued", "job_started", "job_completed"])
      }), 60_000)

    it.scoped("an outcome not recorded while the worker held the job is not sent afterwards: it cannot complete the job's next run", () =>
      Effect.gen(function* () {
        const { sql, proxy, id } = yield* queuedBehindProxy
        const runs: Array<number> = []
        const firstStarted = yield* Deferred.make<void>()
        const finishFirst = yield* Deferred.make<void>()
        const secondStarted = yield* Deferred.make<void>()
        const outcomes: Array<Outcome["_tag"]> = []
        const handler = Handler.make(Report, {
          run: (_, job) =>
            Effect.suspend(() => {
              runs.push(job.attempt)
              return runs.length === 1
                ? Effect.zipRight(Deferred.succeed(firstStarted, undefined), Deferred.await(finishFirst))
                : Effect.zipRight(Deferred.succeed(secondStarted, undefined), Effect.never) // the second run takes its time
            })
        })
        const pool = yield* Layer.build(Db.layer({ url: proxy.url, connectTimeout: "1 second" }))
        yield* Worker.make({
          handlers: [handler], workerId: "cut-off", pollInterval: "300 millis", listen: false,
          leaseDuration: "6 seconds", heartbeatInterval: "2 seconds", rescueInterval: "1 minute", shutdownTimeout: "1 second",
          onOutcome: (_, outcome) => void outcomes.push(outcome._tag)
        }).pipe(Effect.provide(pool))
        yield* Deferred.await(firstStarted)
        // Cut off right after a heartbeat (at t); the first run finishes, its outcome cannot be written.
        const lastBeat = Effect.map(sql<{ at: Date }>`SELECT last_heartbeat_at AS at FROM job_workers`, (rows) => rows[0]!.at.getTime())
        const before = yield* lastBeat
        while ((yield* lastBeat) === before) yield* pauseLive("20 millis")
        const t = yield* lastBeat
        proxy.down()
        yield* Deferred.succeed(finishFirst, undefined)
        // An operator fails the job by hand and retries it as soon as the guard lets them (the worker's
        // lease, t + 6 s, has run out); the worker, back, claims it again: attempt 1 again.
        yield* sql`SELECT * FROM fail_job_manually(${id}, 'worker unreachable', 'ops')`
        while ((yield* Effect.either(sql`SELECT * FROM requeue_failed_job(${id}, 'ops', 'run it again')`))._tag === "Left") yield* pauseLive("100 millis")
        expect(Date.now()).toBeGreaterThanOrEqual(t + 6_000)
        proxy.up()
        yield* Deferred.await(secondStarted)
        yield* pauseLive("4 seconds")
        // The first run's outcome stayed unrecorded; the second run goes on, its job processing.
        expect(runs).toEqual([1, 1])
        expect(outcomes).toEqual(["Unrecorded"])
        const [row] = yield* sql<{ status: string; attempts: number }>`SELECT status, attempts FROM job_queue WHERE id = ${id}`
        expect(row).toEqual({ status: "processing", attempts: 1 })
      }), 60_000)

    it.scoped("a heartbeat that fails for another reason than an outage (a lock wait cut off) does not stop this worker from rescuing a dead worker's job", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        yield* sql`DELETE FROM job_workers`
        // Its statements give up lock waits after 300 ms; an operator's open transaction holds its job_workers row.
        const withLockTimeout = new URL(url)
        withLockTimeout.searchParams.set("options", "-c lock_timeout=300")
        const pool = yield* Layer.build(Db.layer({ url: withLockTimeout.toString() }))
        const handler = Handler.make(Report, { run: () => Effect.void })
        yield* Worker.make({
          handlers: [handler], workerId: "locked-out", pollInterval: "500 millis", heartbeatInterval: "1 second", rescueInterval: "500 millis", listen: false
        }).pipe(Effect.provide(pool))
        yield* eventually(Effect.map(sql`SELECT 1 FROM job_workers WHERE worker_id = 'locked-out'`, (rows) => rows.length === 1), "the worker registered")
        const locked = yield* Deferred.make<void>()
        yield* Effect.fork(sql.withTransaction(
          Effect.zipRight(sql`SELECT 1 FROM job_workers WHERE worker_id = 'locked-out' FOR UPDATE`, Effect.zipRight(Deferred.succeed(locked, undefined), Effect.never))
        ))
        yield* Deferred.await(locked)
        yield* pauseLive("1500 millis") // its heartbeat has failed meanwhile
        // A job of a worker that died a minute ago.
        const [job] = yield* sql<{ id: string }>`INSERT INTO job_queue (organization_id, job_type, payload, run_at)
          VALUES (${ORG}, 'report_generation', '{"n": 1}', now() - interval '2 minutes') RETURNING id`
        yield* sql`SELECT id FROM claim_next_job('dead-worker', ARRAY['report_generation'], 1, now() - interval '1 minute', interval '1 second')`
        yield* eventually(
          Effect.map(sql<{ status: string }>`SELECT status FROM job_queue WHERE id = ${job!.id}`, (rows) => rows[0]!.status === "completed"),
          "the dead worker's job was rescued and run",
          "10 seconds"
        )
      }), 60_000)

    it.scoped("a stop during an outage is not held up by an outcome that cannot be written (default lease and shutdown timeout)", () =>
      Effect.gen(function* () {
        const { proxy } = yield* queuedBehindProxy
        const started = yield* Deferred.make<void>()
        const finish = yield* Deferred.make<void>()
        const handler = Handler.make(Report, { run: () => Effect.zipRight(Deferred.succeed(started, undefined), Deferred.await(finish)) })
        const pool = yield* Layer.build(Db.layer({ url: proxy.url, connectTimeout: "1 second" }))
        const scope = yield* Scope.make()
        yield* Worker.make({ handlers: [handler], pollInterval: "500 millis", listen: false }).pipe(Effect.provide(pool), Scope.extend(scope))
        yield* Deferred.await(started)
        proxy.down()
        yield* Deferred.succeed(finish, undefined)
        yield* pauseLive("500 millis")
        const stopping = Date.now()
        yield* Scope.close(scope, Exit.void)
        // Recording goes on for 3 s at most once the stop began (it was 30 s, the lease), then the
        // background tasks' bound.
        expect(Date.now() - stopping).toBeLessThan(10_000)
      }), 60_000)

    it.scoped("a worker cut off without a word (a host gone silent) stops its handler before the job's lease runs out, so no rescuer runs it beside it", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        const proxy = yield* silenceableProxy(url)
        const { id } = yield* JobQueue.enqueueJob(Report, { n: 1 }, { organizationId: ORG }).pipe(Effect.provide(JobQueue.layer([Report])))
        const started = yield* Deferred.make<void>()
        const stoppedAt = yield* Deferred.make<number>()
        const handler = Handler.make(Report, {
          run: () => Effect.zipRight(Deferred.succeed(started, undefined), Effect.never).pipe(Effect.onInterrupt(() => Deferred.succeed(stoppedAt, Date.now())))
        })
        const pool = yield* Layer.build(Db.layer({ url: proxy.url, connectTimeout: "1 second" }))
        yield* Worker.make({
          handlers: [handler], workerId: "silenced", listen: false, pollInterval: "200 millis",
          leaseDuration: "8 seconds", heartbeatInterval: "1 second", rescueInterval: "1 hour", shutdownTimeout: "0 seconds"
        }).pipe(Effect.provide(pool))
        yield* Deferred.await(started)
        // Its statements get no answer from now on, and nothing tells it so: they would wait until TCP gives up.
        proxy.silence()
        const silencedAt = Date.now()
        const stopped = yield* Deferred.await(stoppedAt).pipe(Effect.timeout("15 seconds"))
        // The lease the database holds, from the worker's last heartbeat that got through (same host, same clock).
        const [row] = yield* sql<{ leaseEnd: Date; status: string }>`SELECT lease_expires_at AS "leaseEnd", status FROM job_queue WHERE id = ${id}`
        expect(row!.status).toBe("processing")
        expect(stopped).toBeLessThan(row!.leaseEnd.getTime())
        expect(stopped - silencedAt).toBeGreaterThan(2_000) // not before the heartbeat had a chance
      }), 60_000)
  })
})
