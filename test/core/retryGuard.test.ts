// requeue_failed_job waits until the worker that ran a job failed by hand has let go of it: a
// heartbeat after the fail that no longer reports the job held (0022, 0025). A heartbeat during the
// fail's open transaction, or one stamped late by a clock that runs ahead, has not let go; nor has the
// same process registering again, which reports no jobs and is no heartbeat (0031). Nor does an
// operator's clock that runs ahead end a live worker's hold (0032). A heartbeat sent before the claim has
// not let go whatever its stamp, and a worker is not taken for dead while the job's lease holds (0040).
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Deferred, Effect, Layer, Schema, TestClock } from "effect"
import pg from "pg"
import { Db, Handler, JobDefinition, JobQueue, LocalWorkers, Worker } from "../../src/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { ORG } from "../support/jobs.js"
import { eventually } from "../support/live.js"
import { restartableProxy } from "../support/proxy.js"

const Report = JobDefinition.make("report_generation", Schema.Struct({ n: Schema.Number }))
const T0 = Date.parse("2026-12-06T10:00:00Z")
const at = (seconds: number) => new Date(T0 + seconds * 1000)

describe("the retry guard", () => {
  it.layer(TestDatabase.layer())((it) => {
    // Worker w (host 'host', pid 1), registered at t0, and nothing else in the queue.
    const registeredWorker = Effect.flatMap(SqlClient.SqlClient, (sql) =>
      Effect.all([
        sql`DELETE FROM job_queue`,
        sql`DELETE FROM job_workers`,
        sql`SELECT register_worker('w', 'host', 1, ARRAY['report_generation'], 5, ${at(0)})`
      ], { discard: true }))
    // Job J, enqueued at t0 and claimed by w at t = seconds.
    const claimedJob = (seconds: number) =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const [job] = yield* sql<{ id: string }>`INSERT INTO job_queue (organization_id, job_type, payload, run_at)
          VALUES (${ORG}, 'report_generation', '{}', ${at(0)}) RETURNING id`
        yield* sql`SELECT id FROM claim_next_job('w', ARRAY['report_generation'], 1, ${at(seconds)})`
        return job!.id
      })
    // Job J runs on worker w (registered and claimed at t0).
    const runningJob = Effect.zipRight(registeredWorker, claimedJob(0))
    // w's heartbeat, reporting the jobs whose handlers it runs; the answer is the ones it still holds.
    const heartbeat = (running: ReadonlyArray<string>, seconds: number) =>
      Effect.flatMap(SqlClient.SqlClient, (sql) =>
        Effect.map(sql<{ id: string }>`SELECT worker_heartbeat AS id FROM worker_heartbeat('w', ${running}::uuid[], ${at(seconds)})`, (rows) => rows.map((row) => row.id)))
    const retry = (id: string, seconds: number) =>
      Effect.flatMap(SqlClient.SqlClient, (sql) =>
        Effect.either(sql`SELECT * FROM requeue_failed_job(${id}, 'op', NULL, ${at(seconds)})`)).pipe(
        Effect.map((result) => (result._tag === "Right" ? "requeued" : String((result.left.cause as { message?: string }).message)))
      )

    it.effect("a heartbeat that ran while the fail's transaction was open has not let go", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const id = yield* runningJob
        const operator = new pg.Client({ connectionString: url })
        yield* Effect.acquireRelease(Effect.promise(() => operator.connect()), () => Effect.promise(() => operator.end()))
        yield* Effect.promise(() => operator.query("BEGIN"))
        yield* Effect.promise(() => operator.query("SELECT * FROM fail_job_manually($1, 'stuck', 'op', $2)", [id, at(1)]))
        // The heartbeat finds the row locked by the fail: it counts the job held, and the worker runs on.
        expect(yield* heartbeat([id], 2)).toEqual([id])
        yield* Effect.promise(() => operator.query("COMMIT"))
        expect(yield* retry(id, 3)).toBe(`cannot retry job ${id} yet: its handler may still run on worker w`)
        // The next heartbeat no longer holds it (the worker stops the handler); once stopped, it may be retried.
        expect(yield* heartbeat([id], 12)).toEqual([])
        expect(yield* heartbeat([], 22)).toEqual([])
        expect(yield* retry(id, 23)).toBe("requeued")
      }).pipe(Effect.scoped))

    it.effect("a heartbeat stamped after the fail by a clock that runs ahead, but sent before it, has not let go", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const id = yield* runningJob
        // The worker's clock is 5 s ahead: its heartbeat, sent before the fail, says t = 6.
        expect(yield* heartbeat([id], 6)).toEqual([id])
        yield* sql`SELECT * FROM fail_job_manually(${id}, 'stuck', 'op', ${at(2)})`
        expect(yield* retry(id, 3)).toBe(`cannot retry job ${id} yet: its handler may still run on worker w`)
        expect(yield* heartbeat([], 16)).toEqual([])
        expect(yield* retry(id, 12)).toBe("requeued")
      }))

    it.effect("a heartbeat stamped after the fail by a clock that runs ahead, but sent before the claim, has not let go (0040)", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* registeredWorker
        // The worker's clock is 5 s ahead of the operator's. At real 0 s its heartbeat (stamped 5) reports nothing
        // running; at real 1 s (stamped 6) it claims the job; at real 2 s the operator fails it.
        expect(yield* heartbeat([], 5)).toEqual([])
        const id = yield* claimedJob(6)
        yield* sql`SELECT * FROM fail_job_manually(${id}, 'wrong batch', 'op', ${at(2)})`
        expect(yield* retry(id, 3)).toBe(`cannot retry job ${id} yet: its handler may still run on worker w`)
        // Its next heartbeat (real 10 s, stamped 15) no longer reports the job: it has let go.
        expect(yield* heartbeat([], 15)).toEqual([])
        expect(yield* retry(id, 11)).toBe("requeued")
      }))

    it.effect("a worker with a lease longer than 30 s is not taken for dead before its first heartbeat, while the job's lease holds (0040)", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* registeredWorker
        // A 5-minute lease (and so a heartbeat interval of a minute or more): no heartbeat yet at 40 s.
        const [job] = yield* sql<{ id: string }>`INSERT INTO job_queue (organization_id, job_type, payload, run_at)
          VALUES (${ORG}, 'report_generation', '{}', ${at(0)}) RETURNING id`
        const id = job!.id
        yield* sql`SELECT id FROM claim_next_job('w', ARRAY['report_generation'], 1, ${at(1)}, '5 minutes'::interval)`
        expect(yield* sql`SELECT * FROM rescue_expired_jobs('r', ${at(40)})`).toEqual([])
        yield* sql`SELECT * FROM fail_job_manually(${id}, 'wrong batch', 'op', ${at(40)})`
        expect(yield* retry(id, 41)).toBe(`cannot retry job ${id} yet: its handler may still run on worker w`)
        // A worker that never sends a heartbeat is taken for dead once the job's lease has run out, as the rescuer would.
        expect(yield* retry(id, 302)).toBe("requeued")
      }))

    it.effect("a heartbeat that still reports the job running has not let go, though the worker no longer holds it", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const id = yield* runningJob
        yield* sql`SELECT * FROM fail_job_manually(${id}, 'stuck', 'op', ${at(1)})`
        // After the fail: no longer held (the worker interrupts the handler on this answer), but still running.
        expect(yield* heartbeat([id], 2)).toEqual([])
        expect(yield* retry(id, 3)).toBe(`cannot retry job ${id} yet: its handler may still run on worker w`)
        // A handler that takes its time to stop keeps the job in the worker's reports, and the retry waits.
        expect(yield* heartbeat([id], 12)).toEqual([])
        expect(yield* retry(id, 13)).toBe(`cannot retry job ${id} yet: its handler may still run on worker w`)
        expect(yield* heartbeat([], 22)).toEqual([])
        expect(yield* retry(id, 23)).toBe("requeued")
      }))

    it.effect("an operator whose clock runs minutes ahead does not take a live worker for dead", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        // The worker's times are the database's; the operator's machine says two minutes later.
        const [{ dbNow }] = (yield* sql<{ dbNow: Date }>`SELECT now() AS "dbNow"`) as [{ dbNow: Date }]
        const near = (seconds: number) => new Date(dbNow.getTime() + seconds * 1000)
        yield* sql`DELETE FROM job_queue`
        yield* sql`DELETE FROM job_workers`
        yield* sql`SELECT register_worker('w', 'host', 1, ARRAY['report_generation'], 5, ${near(-2)})`
        const [job] = yield* sql<{ id: string }>`INSERT INTO job_queue (organization_id, job_type, payload, run_at)
          VALUES (${ORG}, 'report_generation', '{}', ${near(-2)}) RETURNING id`
        const id = job!.id
        yield* sql`SELECT id FROM claim_next_job('w', ARRAY['report_generation'], 1, ${near(-2)})`
        yield* sql`SELECT worker_heartbeat('w', ${[id]}::uuid[], ${near(-1)})`
        yield* sql`SELECT * FROM fail_job_manually(${id}, 'stuck', 'op', ${near(120)})`
        const retryAt = (time: Date) =>
          Effect.either(sql`SELECT * FROM requeue_failed_job(${id}, 'op', NULL, ${time})`).pipe(
            Effect.map((result) => (result._tag === "Right" ? "requeued" : String((result.left.cause as { message?: string }).message)))
          )
        expect(yield* retryAt(near(121))).toBe(`cannot retry job ${id} yet: its handler may still run on worker w`)
        // A worker whose hold and whose job's lease ended by the database's time too is dead, whatever the operator's
        // clock says: here one that last spoke ten minutes ago, when it claimed the job (lease 30 s).
        yield* sql`DELETE FROM job_workers`
        yield* sql`SELECT register_worker('w', 'host', 1, ARRAY['report_generation'], 5, ${near(-600)})`
        const [old] = yield* sql<{ id: string }>`INSERT INTO job_queue (organization_id, job_type, payload, run_at)
          VALUES (${ORG}, 'report_generation', '{}', ${near(-600)}) RETURNING id`
        yield* sql`SELECT id FROM claim_next_job('w', ARRAY['report_generation'], 1, ${near(-600)})`
        yield* sql`SELECT * FROM fail_job_manually(${old!.id}, 'stuck', 'op', ${near(120)})`
        const oldRetry = yield* Effect.either(sql`SELECT * FROM requeue_failed_job(${old!.id}, 'op', NULL, ${near(121)})`)
        expect(oldRetry._tag).toBe("Right")
      }))

    it.effect("the same process registering again is no heartbeat: it says nothing of the job, and has not let go", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* registeredWorker
        // w's last heartbeat before the claim reported no jobs running.
        expect(yield* heartbeat([], 1)).toEqual([])
        const id = yield* claimedJob(2)
        yield* sql`SELECT * FROM fail_job_manually(${id}, 'stuck', 'op', ${at(3)})`
        // w ensures its registration again (same host and pid: the same process, its handler for J still running).
        yield* sql`SELECT register_worker('w', 'host', 1, ARRAY['report_generation'], 5, ${at(4)})`
        expect(yield* retry(id, 5)).toBe(`cannot retry job ${id} yet: its handler may still run on worker w`)
        // Its next heartbeat, reporting the handler stopped, lets go.
        expect(yield* heartbeat([], 11)).toEqual([])
        expect(yield* retry(id, 12)).toBe("requeued")
      }))

    it.effect("a heartbeat tried again after the database came back reports the job started meanwhile: a fail and retry by hand then waits", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const { url } = yield* TestDatabase
        yield* sql`DELETE FROM job_queue`
        // The worker's pool goes through a proxy; the test's own statements and the enqueue do not.
        const proxy = yield* restartableProxy(url)
        const pool = yield* Layer.build(Db.layer({ url: proxy.url, connectTimeout: "1 second" }))
        const started = yield* Deferred.make<void>()
        const handler = Handler.make(Report, { run: () => Effect.zipRight(Deferred.succeed(started, undefined), Effect.never) })
        yield* Worker.make({
          handlers: [handler], workerId: "w-proxied", listen: false, pollInterval: "1 hour", rescueInterval: "1 hour", heartbeatInterval: "10 seconds",
          shutdownTimeout: "0 seconds"
        }).pipe(Effect.provide(pool))
        // The heartbeat at 10 s finds the database gone and is to try again at 11 s.
        proxy.down()
        yield* TestClock.adjust("10 seconds")
        yield* eventually(Effect.map(TestClock.sleeps(), Chunk.some((wakeAt) => wakeAt === 11_000)), "the heartbeat waits to try again")
        // Back: an enqueue of this process hands a job to the worker, and an operator fails it while it runs.
        proxy.up()
        const { id } = yield* JobQueue.enqueueJob(Report, { n: 1 }, { organizationId: ORG })
        yield* Deferred.await(started)
        yield* sql`SELECT * FROM fail_job_manually(${id}, 'stuck', 'op', ${new Date(10_500)})`
        // The try at 11 s reports the running job: the worker has not let go of it, and the retry waits.
        yield* TestClock.adjust("1 second")
        yield* eventually(
          Effect.map(sql<{ at: Date }>`SELECT last_heartbeat_at AS at FROM job_workers WHERE worker_id = 'w-proxied'`, ([row]) => row?.at.getTime() === 11_000),
          "the heartbeat got through"
        )
        const refused = yield* Effect.either(sql`SELECT * FROM requeue_failed_job(${id}, 'op', NULL, ${new Date(11_500)})`)
        expect(refused._tag === "Left" ? String((refused.left.cause as { message?: string }).message) : "requeued").toBe(
          `cannot retry job ${id} yet: its handler may still run on worker w-proxied`
        )
      }).pipe(Effect.provide(JobQueue.layer([Report]).pipe(Layer.provideMerge(LocalWorkers.layer))), Effect.scoped))
  })
})
