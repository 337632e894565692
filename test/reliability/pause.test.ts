// A worker process paused (SIGSTOP) in the middle of a job for longer than its
// lease: another worker rescues the job in its name and completes it; when the
// paused worker resumes, it stops that job's handler and does not complete it,
// so the job's transactional effect commits exactly once.
import { SqlClient } from "@effect/sql"
import { describe, expect, layer } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import { writeFileSync } from "node:fs"
import { rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Db, Handler, JobDefinition, Worker } from "../../src/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { auditEvents, jobRow } from "../support/jobs.js"
import { eventually } from "../support/live.js"
import { awaitStarted, enqueueJobs, fastSettings, JOB_TYPE, prepareQueue, query, spawnWorker } from "./harness/cluster.js"

describe("a paused worker", () => {
  layer(TestDatabase.layer(), { excludeTestServices: true })((it) => {
    it.effect("SIGSTOP mid-job for longer than the lease: rescued in its name, completed elsewhere once; on SIGCONT it lets go", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        yield* prepareQueue(url)
        const hold = join(tmpdir(), `skiplock-pause-${process.pid}-${Date.now()}`)
        writeFileSync(hold, "")
        yield* Effect.addFinalizer(() => Effect.promise(() => rm(hold, { force: true })))
        const settings = { ...fastSettings, leaseMs: 1_500, heartbeatMs: 300, rescueMs: 300, pollMs: 300 }
        const paused = yield* spawnWorker(url, "paused", settings, { CHAOS_PHASES: "1", CHAOS_HOLD_FILE: hold })
        yield* Effect.addFinalizer(() => Effect.sync(() => paused.child.kill("SIGCONT")))
        yield* awaitStarted(paused)
        yield* enqueueJobs(url, 1)
        yield* eventually(Effect.sync(() => paused.phases().some((line) => line.phase === "handler")), "the handler runs", "20 seconds")
        const jobId = paused.phases()[0]!.jobId
        paused.child.kill("SIGSTOP")

        // Another worker, with the same transactional handler, rescues and completes it.
        const sql = yield* SqlClient.SqlClient
        const handler = Handler.make(JobDefinition.make(JOB_TYPE, Schema.Struct({ n: Schema.Int })), {
          transactional: true,
          run: (payload, job) => Effect.asVoid(sql`INSERT INTO effects (job_id, n, worker_id, attempt) VALUES (${job.jobId}, ${payload.n}, ${job.workerId}, ${job.attempt})`)
        })
        yield* Layer.build(
          Worker.layer({ handlers: [handler], workerId: "other", leaseDuration: "1500 millis", heartbeatInterval: "300 millis", rescueInterval: "300 millis", pollInterval: "300 millis" }).pipe(
            Layer.provide(Db.layer({ url, maxConnections: 4 }))
          )
        )
        yield* eventually(Effect.map(jobRow(jobId), (row) => row.status === "completed"), "the other worker completed the job", "20 seconds")

        // The paused worker wakes up with its handler still holding the job, and is let go on.
        yield* Effect.promise(() => rm(hold, { force: true }))
        paused.child.kill("SIGCONT")
        yield* eventually(
          Effect.sync(() => paused.logs().some((line) => /lost the (job\b|lease)/.test(line.message))),
          "the paused worker noticed it lost the job",
          "20 seconds"
        )
        yield* Effect.sleep("500 millis")
        expect(yield* jobRow(jobId)).toMatchObject({ status: "completed", attempts: 2 })
        expect(yield* auditEvents(jobId)).toEqual(["job_started", "job_rescued", "job_started", "job_completed"])
        const rows = yield* query<{ workerId: string }>(url, `SELECT worker_id AS "workerId" FROM effects WHERE job_id = $1`, [jobId])
        expect(rows).toEqual([{ workerId: "other" }]) // the paused worker's write was rolled back
        const [rescue] = yield* query<{ actor: string; deadWorker: string }>(url,
          `SELECT actor, details->>'deadWorker' AS "deadWorker" FROM audit_logs WHERE event = 'job_rescued' AND job_id = $1`, [jobId])
        expect(rescue).toEqual({ actor: "other", deadWorker: "paused" })
        expect(paused.child.exitCode).toBeNull() // it keeps running
      }).pipe(Effect.scoped), { timeout: 60_000 })
  })
})
