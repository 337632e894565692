// The heartbeat must not wait for another session's row lock: while an
// operator's open transaction holds one running job, the worker's other
// running jobs keep their leases, so no other worker rescues them mid-run.
import { SqlClient } from "@effect/sql"
import { describe, expect, layer } from "@effect/vitest"
import { Deferred, Effect, Layer, Schema } from "effect"
import { Db, Handler, JobDefinition, JobQueue, Worker } from "../../src/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { eventually } from "../support/live.js"
import { ORG } from "../support/jobs.js"
import { connection } from "./harness/cluster.js"

const Report = JobDefinition.make("report_generation", Schema.Struct({ n: Schema.Number }))

describe("heartbeat under row locks", () => {
  layer(TestDatabase.layer(), { excludeTestServices: true })((it) => {
    it.effect("an operator holding one running job for longer than the lease does not expose the worker's other running jobs to rescue", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const { url } = yield* TestDatabase
        const gate = yield* Deferred.make<void>()
        const handler = Handler.make(Report, { run: () => Deferred.await(gate) })
        yield* Effect.addFinalizer(() => Deferred.succeed(gate, undefined))
        const timing = { leaseDuration: "1 second", heartbeatInterval: "200 millis", rescueInterval: "200 millis", pollInterval: "200 millis", shutdownTimeout: "1 second" } as const
        const worker = (workerId: string, concurrency: number) =>
          Layer.build(Worker.layer({ handlers: [handler], workerId, concurrency, ...timing }).pipe(Layer.provide(Db.layer({ url, maxConnections: 4 }))))
        const [first, second] = yield* JobQueue.enqueueMany(
          [1, 2].map((n) => ({ organizationId: ORG, jobType: "report_generation", payload: { n } }))
        ).pipe(Effect.provide(JobQueue.layer([Report])))
        yield* worker("holder", 2)
        yield* eventually(
          Effect.map(sql<{ n: number }>`SELECT count(*)::int AS n FROM job_queue WHERE status = 'processing' AND locked_by = 'holder'`, (rows) => rows[0]!.n === 2),
          "the holder runs both jobs"
        )
        yield* worker("rescuer", 1) // a second worker, ready to rescue what expires

        // An operator edits the first job and leaves the transaction open for 2.5 leases.
        const operator = yield* connection(url, "operator")
        yield* Effect.promise(() => operator.query("BEGIN"))
        yield* Effect.promise(() => operator.query("UPDATE job_queue SET priority = 1 WHERE id = $1", [first!.id]))
        yield* Effect.sleep("2500 millis")
        yield* Effect.promise(() => operator.query("ROLLBACK"))

        const [row] = yield* sql<{ status: string; lockedBy: string; attempts: number }>`
          SELECT status, locked_by AS "lockedBy", attempts FROM job_queue WHERE id = ${second!.id}`
        expect(row).toEqual({ status: "processing", lockedBy: "holder", attempts: 1 })
        const rescued = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM audit_logs WHERE event = 'job_rescued' AND job_id = ${second!.id}`
        expect(rescued[0]!.n).toBe(0)
        // (The locked job itself was not renewed while locked: right after the lock ends, the rescuer may win the race
        // against the holder's next heartbeat. Either way it completes once below.)
        yield* Deferred.succeed(gate, undefined)
        yield* eventually(
          Effect.map(sql<{ n: number }>`SELECT count(*)::int AS n FROM job_queue WHERE status = 'completed'`, (rows) => rows[0]!.n === 2),
          "both jobs completed"
        )
      }).pipe(Effect.scoped), { timeout: 30_000 })

    it.effect("a late heartbeat does not report a job held whose row another session (the rescuer) locked after its lease ran out; a timely one does", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const { url } = yield* TestDatabase
        const at = (seconds: number) => new Date(Date.parse("2026-12-06T10:00:00Z") + seconds * 1000)
        yield* sql`SELECT register_worker('late', 'host', 1, ARRAY['report_generation'], 5, ${at(0)})`
        const [job] = yield* sql<{ id: string }>`INSERT INTO job_queue (organization_id, job_type, payload, run_at)
          VALUES (${ORG}, 'report_generation', '{"n": 1}', ${at(0)}) RETURNING id`
        const id = job!.id
        yield* sql`SELECT id FROM claim_next_job('late', ARRAY['report_generation'], 1, ${at(0)}, interval '30 seconds')`
        // Another session holds the row, as rescue_expired_jobs does while it gives the job back.
        const other = yield* connection(url)
        yield* Effect.promise(() => other.query("BEGIN"))
        yield* Effect.promise(() => other.query("SELECT 1 FROM job_queue WHERE id = $1 FOR UPDATE", [id]))
        const heartbeat = (seconds: number) =>
          Effect.map(sql<{ id: string }>`SELECT worker_heartbeat AS id FROM worker_heartbeat('late', ${[id]}::uuid[], ${at(seconds)})`, (rows) => rows.map((row) => row.id))
        // Within the lease the job is still the worker's (the lock may be its own completion, or an operator's).
        expect(yield* heartbeat(10)).toEqual([id])
        // Past it, while the previous heartbeat covers the job (until 40 s), the rescuer spares it: still held.
        expect(yield* heartbeat(35)).toEqual([id])
        // A heartbeat that comes late (the previous one covered the job until 65 s) may meet the rescuer's lock:
        // the worker is told it no longer holds the job, and stops the handler.
        expect(yield* heartbeat(80)).toEqual([])
        yield* Effect.promise(() => other.query("ROLLBACK"))
      }).pipe(Effect.scoped))

    it.effect("a heartbeat that reaches the database late, after a newer one, shortens no lease and does not roll back the worker's row", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        const at = (seconds: number) => new Date(Date.parse("2026-12-06T11:00:00Z") + seconds * 1000)
        yield* sql`SELECT register_worker('delayed', 'host', 1, ARRAY['report_generation'], 5, ${at(0)})`
        const [job] = yield* sql<{ id: string }>`INSERT INTO job_queue (organization_id, job_type, payload, run_at)
          VALUES (${ORG}, 'report_generation', '{"n": 1}', ${at(0)}) RETURNING id`
        const id = job!.id
        yield* sql`SELECT id FROM claim_next_job('delayed', ARRAY['report_generation'], 1, ${at(0)}, interval '30 seconds')`
        const heartbeat = (running: ReadonlyArray<string>, seconds: number) =>
          sql`SELECT worker_heartbeat('delayed', ${running}::uuid[], ${at(seconds)}, interval '30 seconds')`
        yield* heartbeat([id], 20)
        // A try given up on at 5 s (an outage), delivered after the one at 20 s got through.
        yield* heartbeat([], 5)
        const [row] = yield* sql<{ lease: Date; beat: Date; inHand: ReadonlyArray<string>; until: Date }>`
          SELECT q.lease_expires_at AS lease, w.last_heartbeat_at AS beat, w.jobs_in_hand AS "inHand", w.jobs_in_hand_until AS until
          FROM job_queue q, job_workers w WHERE q.id = ${id} AND w.worker_id = 'delayed'`
        expect(row).toEqual({ lease: at(50), beat: at(20), inHand: [id], until: at(50) })
        // So a rescue at 45 s leaves the running job alone.
        expect(yield* sql`SELECT id FROM rescue_expired_jobs('rescuer', ${at(45)})`).toEqual([])
      }))
  })
})
