// Stopping a worker in each phase of a job: while it claims, while the handler
// runs, while it completes. A graceful stop (the worker's scope closes, as on
// SIGTERM) gives the job back without counting the attempt; a hard stop
// (kill -9 of a worker process) leaves it to the lease, and it is rescued.
// Either way the job ends completed once, its transactional effect committed once.
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

const TYPES = { claim: "dunning_run", handler: "report_generation", completion: "sepa_export" } as const
const definition = (jobType: string) => JobDefinition.make(jobType, Schema.Struct({ n: Schema.Int }))

/** The fixture's handler, in process: its effect row commits with the completion. */
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

const timing = { leaseDuration: 1_500, heartbeatInterval: 300, rescueInterval: 300, pollInterval: 300 }

describe("stops in every phase of a job", () => {
  layer(TestDatabase.layer(), { excludeTestServices: true })((it) => {
    it.effect("graceful stop while claiming, while the handler runs, while completing: the job goes back to pending, attempt not counted, no effect", () =>
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

        // Completion: the handler is done, its complete_job waits for a row lock held elsewhere.
        const gate = yield* Deferred.make<void>()
        const completing = yield* runWorker(TYPES.completion, gate)
        const completionJob = yield* enqueue(url, TYPES.completion, 3)
        yield* eventually(Effect.map(jobRow(completionJob), (row) => row.status === "processing"), "the handler runs")
        yield* sqlOn("BEGIN")
        yield* sqlOn("SELECT id FROM job_queue WHERE id = $1 FOR UPDATE", [completionJob])
        yield* Deferred.succeed(gate, undefined)
        yield* eventually(waitingOnLock(url, `graceful-${TYPES.completion}`, "complete_job"), "the completion waits")
        const completionStop = yield* Effect.fork(completing.stop)
        yield* Effect.sleep("1 second")
        yield* sqlOn("ROLLBACK")
        const completionStopTook = yield* Fiber.join(completionStop)
        expect(yield* jobRow(completionJob)).toMatchObject({ status: "pending", attempts: 0, lockedBy: null })
        expect(yield* auditEvents(completionJob)).toEqual(["job_started", "job_released"])
        expect(yield* effectsOf(url, completionJob)).toBe(0)

        console.log(JSON.stringify({ gracefulStopMs: { claim: Duration.toMillis(claimStop), handler: Duration.toMillis(handlerStop), completion: Duration.toMillis(completionStopTook) } }))

        // Another worker then runs all three, once.
        yield* Layer.build(
          Worker.layer({ handlers: Object.values(TYPES).map((type) => effectHandler(type)), workerId: "finisher", ...timing }).pipe(
            Layer.provide(Db.layer({ url, maxConnections: 4 }))
          )
        )
        for (const id of [claimJob, handlerJob, completionJob]) {
          yield* eventually(Effect.map(jobRow(id), (row) => row.status === "completed"), "the job completed")
          expect(yield* effectsOf(url, id)).toBe(1)
          expect((yield* jobRow(id)).attempts).toBe(1)
        }
      }).pipe(Effect.scoped), { timeout: 60_000 })

    it.effect("kill -9 while claiming, while the handler runs, while completing: the job is rescued after its lease and completed once", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        yield* prepareQueue(url)
        const hold = join(tmpdir(), `skiplock-hold-${process.pid}-${Date.now()}`)
        yield* Effect.addFinalizer(() => Effect.promise(() => rm(hold, { force: true })))
        const settings = { ...fastSettings, leaseMs: timing.leaseDuration, heartbeatMs: timing.heartbeatInterval, rescueMs: timing.rescueInterval, pollMs: timing.pollInterval }
        const start = (phase: keyof typeof TYPES) =>
          spawnWorker(url, `w-${phase}`, settings, { CHAOS_JOB_TYPE: TYPES[phase], CHAOS_PHASES: "1", CHAOS_HOLD_FILE: hold })
        const workers = yield* Effect.all([start("claim"), start("handler"), start("completion")])
        yield* Effect.forEach(workers, (worker) => awaitStarted(worker), { concurrency: "unbounded" })
        const [claimWorker, handlerWorker, completionWorker] = workers as [WorkerProcess, WorkerProcess, WorkerProcess]
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

        // Completion: killed while complete_job waits for a row lock held elsewhere.
        const completionJob = yield* enqueue(url, TYPES.completion, 3)
        yield* eventually(phaseSeen(completionWorker, "handler", completionJob), "the handler runs", "20 seconds")
        yield* sqlOn("BEGIN")
        yield* sqlOn("SELECT id FROM job_queue WHERE id = $1 FOR UPDATE", [completionJob])
        yield* Effect.promise(() => rm(hold, { force: true }))
        yield* eventually(waitingOnLock(url, "skiplock-chaos-w-completion", "complete_job"), "the completion waits", "20 seconds")
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
        for (const [phase, id, killedAt] of [["claim", claimJob, claimKilledAt], ["handler", handlerJob, handlerKilledAt], ["completion", completionJob, completionKilledAt]] as const) {
          yield* eventually(Effect.map(jobRow(id), (row) => row.status === "completed"), `the ${phase} job completed`, "20 seconds")
          expect(yield* effectsOf(url, id)).toBe(1)
          const [done] = yield* query<{ at: Date }>(url, "SELECT completed_at AS at FROM job_queue WHERE id = $1", [id])
          recovered[phase] = done!.at.getTime() - killedAt
        }
        console.log(JSON.stringify({ hardStopRecoveredMs: recovered }))
        // The handler and completion jobs were rescued in the dead workers' names, their attempt counted.
        const rescues = yield* query<{ jobId: string; deadWorker: string }>(url,
          `SELECT job_id AS "jobId", details->>'deadWorker' AS "deadWorker" FROM audit_logs WHERE event = 'job_rescued' ORDER BY id`)
        expect(rescues).toContainEqual({ jobId: handlerJob, deadWorker: "w-handler" })
        expect(rescues).toContainEqual({ jobId: completionJob, deadWorker: "w-completion" })
        expect((yield* jobRow(handlerJob)).attempts).toBe(2)
        for (const ms of Object.values(recovered)) expect(ms).toBeLessThan(timing.leaseDuration + timing.rescueInterval + 2_000)
      }).pipe(Effect.scoped), { timeout: 60_000 })
  })
})
