// Stopping a worker in each phase of a job: while it claims, while the handler
// runs, while its transaction commits, while the job's row is completed after
// the commit. A graceful stop (the worker's scope closes, as on SIGTERM) gives
// back a job whose effect has not committed, without counting the attempt, and
// completes one whose effect has; a hard stop (kill -9 of a worker process)
// leaves the job to the lease, and it is rescued (run again, or completed when
// its run had committed). Either way the job ends completed once, its
// transactional effect committed once.
import { SqlClient } from "@effect/sql"
import { describe, expect, layer } from "@effect/vitest"
import { Deferred, Duration, Effect, Exit, Fiber, Layer, Schema, Scope } from "effect"
import { existsSync, writeFileSync } from "node:fs"
import { rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Db, Handler, JobDefinition, Worker } from "../../src/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { auditEvents, jobRow, ORG } from "../support/jobs.js"
import { eventually } from "../support/live.js"
import { awaitStarted, connection, fastSettings, prepareQueue, query, spawnWorker, type WorkerProcess } from "./harness/cluster.js"

const TYPES = { claim: "dunning_run", handler: "report_generation", commit: "settlement_calculation", completion: "sepa_export" } as const
const definition = (jobType: string) => JobDefinition.make(jobType, Schema.Struct({ n: Schema.Int }))

/** The fixture's handler, in process: its effect row commits with its run's record. */
const effectHandler = (jobType: string, gate?: Deferred.Deferred<void>) =>
  Handler.make(definition(jobType), {
    transactional: true,
    run: (payload, job) =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`INSERT INTO effects (job_id, n, worker_id, attempt) VALUES (${job.jobId}, ${payload.n}, ${job.workerId}, ${job.attempt})`
        if (gate !== undefined) yield* Deferred.await(gate)
      })
  })

const enqueue = (url: string, jobType: string, n: number) =>
  Effect.map(
    query<{ id: string }>(url, "INSERT INTO job_queue (organization_id, job_type, payload) VALUES ($1, $2, jsonb_build_object('n', $3::int)) RETURNING id", [ORG, jobType, n]),
    (rows) => rows[0]!.id
  )

const effectsOf = (url: string, jobId: string) =>
  Effect.map(query<{ n: number }>(url, "SELECT count(*)::int AS n FROM effects WHERE job_id = $1", [jobId]), (rows) => rows[0]!.n)

/** A backend of `applicationName` waiting on a lock while running a statement that contains `statement`. */
const waitingOnLock = (url: string, applicationName: string, statement: string) =>
  Effect.map(
    query<{ n: number }>(url, `SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE application_name = $1 AND wait_event_type = 'Lock' AND query LIKE '%' || $2 || '%' AND datname = current_database()`,
      [applicationName, statement]),
    (rows) => rows[0]!.n > 0
  )

/** The job's run committed (commit_job_run) while its row is not completed yet. */
const runCommitted = (url: string, jobId: string) =>
  Effect.map(
    query<{ n: number }>(url, `SELECT count(*)::int AS n FROM job_runs r JOIN job_queue q ON q.id = r.job_id
      WHERE r.job_id = $1 AND r.idempotency_status = 'completed' AND q.status = 'processing'`, [jobId]),
    (rows) => rows[0]!.n > 0
  )

const timing = { leaseDuration: 1_500, heartbeatInterval: 300, rescueInterval: 300, pollInterval: 300 }

describe("stops in every phase of a job", () => {
  layer(TestDatabase.layer(), { excludeTestServices: true })((it) => {
    it.effect("graceful stop while claiming, while the handler runs, while committing: the job goes back to pending, attempt not counted, no effect; once committed, it is completed", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        yield* prepareQueue(url)
        const runWorker = (jobType: string, gate?: Deferred.Deferred<void>) =>
          Effect.gen(function* () {
            const scope = yield* Scope.make()
            yield* Layer.buildWithScope(
              Worker.layer({ handlers: [effectHandler(jobType, gate)], workerId: `graceful-${jobType}`, shutdownTimeout: "500 millis", ...timing }).pipe(
                Layer.provide(Db.layer({ url, maxConnections: 4, applicationName: `graceful-${jobType}` }))
              ),
              scope
            )
            return { stop: Effect.timed(Scope.close(scope, Exit.void)).pipe(Effect.map(([took]) => took)) }
          })
        const operator = yield* connection(url, "operator")
        const sqlOn = (text: string, params: Array<unknown> = []) => Effect.promise(() => operator.query(text, params))

        // Claim: job_runs is locked elsewhere, so claim_next_job waits in the middle of its statement.
        yield* sqlOn("BEGIN")
        yield* sqlOn("LOCK TABLE job_runs IN EXCLUSIVE MODE")
        const claiming = yield* runWorker(TYPES.claim)
        const claimJob = yield* enqueue(url, TYPES.claim, 1)
        yield* eventually(waitingOnLock(url, `graceful-${TYPES.claim}`, "claim_next_job"), "the claim waits")
        const claimStopping = yield* Effect.fork(claiming.stop)
        yield* Effect.sleep("500 millis")
        yield* sqlOn("ROLLBACK") // (in case the worker sees its claim through before it stops)
        const claimStop = yield* Fiber.join(claimStopping)
        // Either the claim was cancelled, or it went through and the job was released at once: never left claimed.
        expect(yield* jobRow(claimJob)).toMatchObject({ status: "pending", attempts: 0, lockedBy: null })
        expect([[], ["job_started", "job_released"]]).toContainEqual(yield* auditEvents(claimJob))

        // Handler: it runs (its effect written, uncommitted) when the stop comes.
        const never = yield* Deferred.make<void>()
        const handling = yield* runWorker(TYPES.handler, never)
        const handlerJob = yield* enqueue(url, TYPES.handler, 2)
        yield* eventually(Effect.map(jobRow(handlerJob), (row) => row.status === "processing"), "the handler runs")
        const handlerStop = yield* handling.stop
        expect(yield* jobRow(handlerJob)).toMatchObject({ status: "pending", attempts: 0, lockedBy: null })
        expect(yield* auditEvents(handlerJob)).toEqual(["job_started", "job_released"])
        expect(yield* effectsOf(url, handlerJob)).toBe(0)

        // Commit: the handler is done, its commit_job_run waits for the run's row, locked elsewhere.
        const commitGate = yield* Deferred.make<void>()
        const committing = yield* runWorker(TYPES.commit, commitGate)
        const commitJob = yield* enqueue(url, TYPES.commit, 3)
        yield* eventually(Effect.map(jobRow(commitJob), (row) => row.status === "processing"), "the handler runs")
        yield* sqlOn("BEGIN")
        yield* sqlOn("SELECT job_id FROM job_runs WHERE job_id = $1 FOR UPDATE", [commitJob])
        yield* Deferred.succeed(commitGate, undefined)
        yield* eventually(waitingOnLock(url, `graceful-${TYPES.commit}`, "commit_job_run"), "the commit waits")
        const commitStop = yield* Effect.fork(committing.stop)
        yield* Effect.sleep("1 second")
        yield* sqlOn("ROLLBACK")
        const commitStopTook = yield* Fiber.join(commitStop)
        expect(yield* jobRow(commitJob)).toMatchObject({ status: "pending", attempts: 0, lockedBy: null })
        expect(yield* auditEvents(commitJob)).toEqual(["job_started", "job_released"])
        expect(yield* effectsOf(url, commitJob)).toBe(0)

        // Completion: the effect and run committed; the job's row, locked elsewhere, waits to be completed.
        // The stop sees it through (the lock ends while it waits): the job is not given back, its effect is in.
        const gate = yield* Deferred.make<void>()
        const completing = yield* runWorker(TYPES.completion, gate)
        const completionJob = yield* enqueue(url, TYPES.completion, 4)
        yield* eventually(Effect.map(jobRow(completionJob), (row) => row.status === "processing"), "the handler runs")
        yield* sqlOn("BEGIN")
        yield* sqlOn("SELECT id FROM job_queue WHERE id = $1 FOR UPDATE", [completionJob])
        yield* Deferred.succeed(gate, undefined)
        yield* eventually(runCommitted(url, completionJob), "the run commits")
        const completionStop = yield* Effect.fork(completing.stop)
        yield* Effect.sleep("1 second")
        yield* sqlOn("ROLLBACK")
        const completionStopTook = yield* Fiber.join(completionStop)
        expect(yield* jobRow(completionJob)).toMatchObject({ status: "completed", attempts: 1, lockedBy: null })
        expect(yield* auditEvents(completionJob)).toEqual(["job_started", "job_completed"])
        expect(yield* effectsOf(url, completionJob)).toBe(1)

        console.log(JSON.stringify({
          gracefulStopMs: {
            claim: Duration.toMillis(claimStop), handler: Duration.toMillis(handlerStop),
            commit: Duration.toMillis(commitStopTook), completion: Duration.toMillis(completionStopTook)
          }
        }))

        // Another worker then runs all three, once.
        yield* Layer.build(
          Worker.layer({ handlers: Object.values(TYPES).map((type) => effectHandler(type)), workerId: "finisher", ...timing }).pipe(
            Layer.provide(Db.layer({ url, maxConnections: 4 }))
          )
        )
        for (const id of [claimJob, handlerJob, commitJob]) {
          yield* eventually(Effect.map(jobRow(id), (row) => row.status === "completed"), "the job completed")
          expect(yield* effectsOf(url, id)).toBe(1)
          expect((yield* jobRow(id)).attempts).toBe(1)
        }
      }).pipe(Effect.scoped), { timeout: 60_000 })

    it.effect("kill -9 while claiming, while the handler runs, while committing, once committed: the job is rescued after its lease and completed once", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        yield* prepareQueue(url)
        const hold = join(tmpdir(), `skiplock-hold-${process.pid}-${Date.now()}`)
        yield* Effect.addFinalizer(() => Effect.promise(() => rm(hold, { force: true })))
        const settings = { ...fastSettings, leaseMs: timing.leaseDuration, heartbeatMs: timing.heartbeatInterval, rescueMs: timing.rescueInterval, pollMs: timing.pollInterval }
        const start = (phase: keyof typeof TYPES) =>
          spawnWorker(url, `w-${phase}`, settings, { CHAOS_JOB_TYPE: TYPES[phase], CHAOS_PHASES: "1", CHAOS_HOLD_FILE: hold })
        const workers = yield* Effect.all([start("claim"), start("handler"), start("commit"), start("completion")])
        yield* Effect.forEach(workers, (worker) => awaitStarted(worker), { concurrency: "unbounded" })
        const [claimWorker, handlerWorker, commitWorker, completionWorker] = workers as [WorkerProcess, WorkerProcess, WorkerProcess, WorkerProcess]
        const kill = (worker: WorkerProcess) =>
          Effect.gen(function* () {
            worker.child.kill("SIGKILL")
            yield* Effect.promise(() => worker.exited)
            return Date.now()
          })
        const phaseSeen = (worker: WorkerProcess, phase: string, jobId: string) =>
          Effect.sync(() => worker.phases().some((line) => line.phase === phase && line.jobId === jobId))
        const operator = yield* connection(url, "operator")
        const sqlOn = (text: string, params: Array<unknown> = []) => Effect.promise(() => operator.query(text, params))

        // Handler: killed while its handler holds (effect written, not committed).
        writeFileSync(hold, "")
        const handlerJob = yield* enqueue(url, TYPES.handler, 2)
        yield* eventually(phaseSeen(handlerWorker, "handler", handlerJob), "the handler runs", "20 seconds")
        const handlerKilledAt = yield* kill(handlerWorker)

        // Commit: killed while commit_job_run waits for the run's row, locked elsewhere (effect not committed).
        const commitJob = yield* enqueue(url, TYPES.commit, 3)
        yield* eventually(phaseSeen(commitWorker, "handler", commitJob), "the handler runs", "20 seconds")
        yield* sqlOn("BEGIN")
        yield* sqlOn("SELECT job_id FROM job_runs WHERE job_id = $1 FOR UPDATE", [commitJob])
        yield* Effect.promise(() => rm(hold, { force: true }))
        yield* eventually(waitingOnLock(url, "skiplock-chaos-w-commit", "commit_job_run"), "the commit waits", "20 seconds")
        const commitKilledAt = yield* kill(commitWorker)
        yield* sqlOn("ROLLBACK")

        // Completion: killed after its effect and run committed, while the job's row, locked elsewhere, waits to be completed.
        const completionJob = yield* enqueue(url, TYPES.completion, 4)
        yield* eventually(phaseSeen(completionWorker, "handler", completionJob), "the handler runs", "20 seconds")
        yield* sqlOn("BEGIN")
        yield* sqlOn("SELECT id FROM job_queue WHERE id = $1 FOR UPDATE", [completionJob])
        yield* eventually(runCommitted(url, completionJob), "the run commits", "20 seconds")
        const completionKilledAt = yield* kill(completionWorker)
        yield* sqlOn("ROLLBACK")

        // Claim: killed while claim_next_job waits for a table lock held elsewhere.
        yield* sqlOn("BEGIN")
        yield* sqlOn("LOCK TABLE job_runs IN EXCLUSIVE MODE")
        const claimJob = yield* enqueue(url, TYPES.claim, 1)
        yield* eventually(waitingOnLock(url, "skiplock-chaos-w-claim", "claim_next_job"), "the claim waits", "20 seconds")
        const claimKilledAt = yield* kill(claimWorker)
        yield* sqlOn("COMMIT")
        expect(existsSync(hold)).toBe(false)

        // A worker for all three types takes over.
        yield* Layer.build(
          Worker.layer({ handlers: Object.values(TYPES).map((type) => effectHandler(type)), workerId: "finisher", ...timing }).pipe(
            Layer.provide(Db.layer({ url, maxConnections: 4 }))
          )
        )
        const recovered: Record<string, number> = {}
        const phases = [
          ["claim", claimJob, claimKilledAt], ["handler", handlerJob, handlerKilledAt],
          ["commit", commitJob, commitKilledAt], ["completion", completionJob, completionKilledAt]
        ] as const
        for (const [phase, id, killedAt] of phases) {
          yield* eventually(Effect.map(jobRow(id), (row) => row.status === "completed"), `the ${phase} job completed`, "20 seconds")
          expect(yield* effectsOf(url, id)).toBe(1)
          const [done] = yield* query<{ at: Date }>(url, "SELECT completed_at AS at FROM job_queue WHERE id = $1", [id])
          recovered[phase] = done!.at.getTime() - killedAt
        }
        console.log(JSON.stringify({ hardStopRecoveredMs: recovered }))
        // The handler, commit and completion jobs were rescued in the dead workers' names: the first two to run
        // again (their attempt counted), the committed one completed by the rescue, not run again.
        const rescues = yield* query<{ jobId: string; deadWorker: string; newStatus: string }>(url,
          `SELECT job_id AS "jobId", details->>'deadWorker' AS "deadWorker", details->>'newStatus' AS "newStatus"
           FROM audit_logs WHERE event = 'job_rescued' ORDER BY id`)
        expect(rescues).toContainEqual({ jobId: handlerJob, deadWorker: "w-handler", newStatus: "pending" })
        expect(rescues).toContainEqual({ jobId: commitJob, deadWorker: "w-commit", newStatus: "pending" })
        expect(rescues).toContainEqual({ jobId: completionJob, deadWorker: "w-completion", newStatus: "completed" })
        expect((yield* jobRow(handlerJob)).attempts).toBe(2)
        expect((yield* jobRow(commitJob)).attempts).toBe(2)
        expect((yield* jobRow(completionJob)).attempts).toBe(1)
        expect(yield* auditEvents(completionJob)).toEqual(expect.arrayContaining(["job_started", "job_rescued", "job_completed"]))
        for (const ms of Object.values(recovered)) expect(ms).toBeLessThan(timing.leaseDuration + timing.rescueInterval + 2_000)
      }).pipe(Effect.scoped), { timeout: 60_000 })
  })
})
