// A job row locked by another transaction (an operator's UPDATE left open) holds up only that job's
// completion (0018): the worker's statements skip it, and its other slots go on. Real clock.
import { SqlClient } from "@effect/sql"
import { describe, expect, layer } from "@effect/vitest"
import { Deferred, Effect, Schema } from "effect"
import pg from "pg"
import { Handler, JobDefinition, JobQueue, Worker } from "../../src/index.js"
import { sqlErrorText } from "../../src/internal/sqlErrorText.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { auditEvents, jobRow, ORG } from "../support/jobs.js"
import { eventually, pauseLive } from "../support/live.js"

const Report = JobDefinition.make("report_generation", Schema.Struct({ n: Schema.Number }))

/** An operator's UPDATE of the jobs' rows, left open on a connection of its own; the Effect returned rolls it back. */
/** Whether every one of the jobs has that status. */
const allIn = (jobs: ReadonlyArray<{ readonly id: string }>, status: string) =>
  Effect.map(Effect.forEach(jobs, (job) => jobRow(job.id)), (rows) => rows.every((row) => row.status === status))

/** 20 jobs more, after the locked ones. */
const enqueueMore = JobQueue.enqueueMany(Array.from({ length: 20 }, (_, i) => ({ organizationId: ORG, jobType: "report_generation", payload: { n: 10 + i } })))

const lockJobRows = (url: string, ids: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const operator = new pg.Client({ connectionString: url })
    yield* Effect.acquireRelease(Effect.promise(() => operator.connect()), () => Effect.promise(() => operator.end()))
    yield* Effect.promise(() => operator.query("BEGIN"))
    yield* Effect.promise(() => operator.query("UPDATE job_queue SET priority = priority WHERE id = ANY ($1::uuid[])", [ids]))
    return Effect.asVoid(Effect.promise(() => operator.query("ROLLBACK")))
  })

describe("job rows locked by another transaction", () => {
  layer(TestDatabase.layer(), { excludeTestServices: true })((it) => {
    it.effect("two running jobs whose rows are locked: their completions wait, the third slot goes on; they complete once the lock ends", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const gates = [yield* Deferred.make<void>(), yield* Deferred.make<void>()]
        const done = new Set<number>()
        const handler = Handler.make(Report, {
          run: (payload) =>
            Effect.zipRight(
              payload.n < 2 ? Deferred.await(gates[payload.n]!) : Effect.void,
              Effect.sync(() => done.add(payload.n))
            )
        })
        // The two gated jobs go first (priority), so that the first claim holds both.
        const gated = yield* JobQueue.enqueueMany([0, 1].map((n) => ({ organizationId: ORG, jobType: "report_generation", payload: { n }, priority: -1 })))
        yield* Worker.make({ handlers: [handler], concurrency: 3, pollInterval: "200 millis" })
        yield* eventually(allIn(gated, "processing"), "both gated jobs run")

        const unlock = yield* lockJobRows(url, gated.map((job) => job.id))

        // Each gated job finishes on its own, so that their completions travel in separate statements:
        // had each statement waited for the lock, both statements the worker may have in flight would wait.
        yield* Deferred.succeed(gates[0]!, undefined)
        yield* pauseLive("100 millis")
        yield* Deferred.succeed(gates[1]!, undefined)
        yield* pauseLive("100 millis")

        const more = yield* enqueueMore
        yield* eventually(allIn(more, "completed"), "the other jobs complete while the lock is held", "5 seconds")
        for (const job of gated) expect(yield* jobRow(job.id)).toMatchObject({ status: "processing" })

        yield* unlock
        yield* eventually(allIn(gated, "completed"), "the gated jobs complete after the lock ended")
        for (const job of gated) expect(yield* auditEvents(job.id)).toEqual(["job_started", "job_completed"])
        const sql = yield* SqlClient.SqlClient
        const runs = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM job_runs WHERE job_id IN ${sql.in(gated.map((job) => job.id))} AND status = 'completed'`
        expect(runs[0]!.n).toBe(2)
      }).pipe(Effect.provide(JobQueue.layer([Report])), Effect.scoped), { timeout: 30_000 })

    it.effect("transactional handlers: every running job's row locked: their effects commit, the slots go on; the rows complete once the lock ends", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const sql = yield* SqlClient.SqlClient
        yield* sql`CREATE TABLE locked_effects (job_id uuid PRIMARY KEY, n int NOT NULL)`
        const gates = [yield* Deferred.make<void>(), yield* Deferred.make<void>()]
        const handler = Handler.make(Report, {
          transactional: true,
          run: (payload, job) =>
            Effect.gen(function* () {
              if (payload.n < 2) yield* Deferred.await(gates[payload.n]!)
              const tx = yield* SqlClient.SqlClient
              yield* tx`INSERT INTO locked_effects (job_id, n) VALUES (${job.jobId}, ${payload.n})`
            })
        })
        // Both slots of the worker run a gated job, and both jobs' rows get locked: before 0020 the handlers'
        // transactions waited for the rows, holding both slots, and no other job ran until the lock ended.
        const gated = yield* JobQueue.enqueueMany([0, 1].map((n) => ({ organizationId: ORG, jobType: "report_generation", payload: { n }, priority: -1 })))
        yield* Worker.make({ handlers: [handler], concurrency: 2, pollInterval: "200 millis" })
        yield* eventually(allIn(gated, "processing"), "both gated jobs run")
        const unlock = yield* lockJobRows(url, gated.map((job) => job.id))
        for (const gate of gates) yield* Deferred.succeed(gate, undefined)

        const more = yield* enqueueMore
        yield* eventually(allIn(more, "completed"), "the other jobs complete while the lock is held", "5 seconds")
        // The gated jobs' effects and runs committed; their rows wait for the lock.
        const committed = yield* sql<{ n: number }>`
          SELECT count(*)::int AS n FROM locked_effects e JOIN job_runs r ON r.job_id = e.job_id
          WHERE e.job_id IN ${sql.in(gated.map((job) => job.id))} AND r.idempotency_status = 'completed'`
        expect(committed[0]!.n).toBe(2)
        for (const job of gated) expect(yield* jobRow(job.id)).toMatchObject({ status: "processing" })

        yield* unlock
        yield* eventually(allIn(gated, "completed"), "the gated jobs complete after the lock ended")
        for (const job of gated) expect(yield* auditEvents(job.id)).toEqual(["job_started", "job_completed"])
        const effects = yield* sql<{ n: number; jobs: number }>`SELECT count(*)::int AS n, count(DISTINCT job_id)::int AS jobs FROM locked_effects`
        expect(effects[0]).toEqual({ n: 22, jobs: 22 })
      }).pipe(Effect.provide(JobQueue.layer([Report])), Effect.scoped), { timeout: 30_000 })

    it.effect("a job whose row stays locked past its lease is not rescued while its worker's heartbeat reports it held; once the heartbeats stop, it is", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        yield* JobQueue.enqueue({ organizationId: ORG, jobType: "report_generation", payload: { n: 1 } })
        yield* sql`SELECT register_worker('w', 'host', 1, ARRAY['report_generation'], 1)`
        const [job] = yield* sql<{ id: string }>`SELECT id FROM claim_next_job('w', ARRAY['report_generation'], 1, now(), interval '30 seconds')`
        const unlock = yield* lockJobRows(url, [job!.id])
        // The heartbeats cannot renew the locked row, and report the job held: at 20 s, within the lease (30 s), and at
        // 45 s, past it, while the heartbeat before still covers the job (until 50 s; a late heartbeat, one that comes
        // when the rescuer may already be at the row, is told it no longer holds it: test/reliability/heartbeat.test.ts).
        const heartbeat = (offset: string) =>
          Effect.map(
            sql<{ id: string }>`SELECT worker_heartbeat AS id FROM worker_heartbeat('w', ARRAY[${job!.id}]::uuid[], now() + ${offset}::interval, interval '30 seconds')`,
            (rows) => rows.map((row) => row.id)
          )
        expect(yield* heartbeat("20 seconds")).toEqual([job!.id])
        expect(yield* heartbeat("45 seconds")).toEqual([job!.id])
        yield* unlock
        const rescueAt = (offset: string) =>
          sql<{ id: string; status: string }>`SELECT id, status FROM rescue_expired_jobs('rescuer', now() + ${offset}::interval)`
        expect(yield* rescueAt("70 seconds")).toEqual([]) // the worker holds it until its heartbeat + the lease
        expect(yield* jobRow(job!.id)).toMatchObject({ status: "processing" })
        expect(yield* rescueAt("100 seconds")).toEqual([{ id: job!.id, status: "pending" }]) // no heartbeat since
      }).pipe(Effect.provide(JobQueue.layer([Report])), Effect.scoped))

    it.effect("only this version's workers ask to skip locked rows; a worker of the version before (rolling deploy) still waits for the lock", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        yield* JobQueue.enqueue({ organizationId: ORG, jobType: "report_generation", payload: { n: 1 } })
        const [job] = yield* sql<{ id: string; attempts: number }>`SELECT id, attempts FROM claim_next_job('w', ARRAY['report_generation'], 1)`
        const unlock = yield* lockJobRows(url, [job!.id])

        const [now] = yield* sql<{ completedIds: Array<string>; busyIds: Array<string> }>`
          SELECT completed_ids AS "completedIds", busy_ids AS "busyIds"
          FROM complete_and_claim('w', ARRAY[${job!.id}]::uuid[], ARRAY[${job!.attempts}]::int[], ARRAY['report_generation'], 0, now(), interval '30 seconds', true)`
        expect(now).toEqual({ completedIds: [], busyIds: [job!.id] })

        // The call as the version before makes it: it waits (cut off here by a statement timeout) instead of skipping.
        const before = sql`SELECT completed_ids AS "completedIds" FROM complete_and_claim('w', ARRAY[${job!.id}]::uuid[], ARRAY[${job!.attempts}]::int[], ARRAY['report_generation'], 0)`
        const waited = yield* Effect.flip(sql.withTransaction(Effect.zipRight(sql`SET LOCAL statement_timeout = '300ms'`, before)))
        expect(sqlErrorText(waited)).toContain("statement timeout")
        yield* unlock
        expect(yield* before).toEqual([{ completedIds: [job!.id] }])
      }).pipe(Effect.provide(JobQueue.layer([Report])), Effect.scoped))
  })
})
