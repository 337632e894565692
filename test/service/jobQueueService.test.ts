// The runbook's Promise facade: `await jobQueueService.enqueue({ organizationId,
// jobType, payload, createdBy })`, configured from the environment.
import { SqlClient } from "@effect/sql"
import { describe, expect, layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { createServer, type Socket } from "node:net"
import pg from "pg"
import { migrationSets } from "../../src/app/jobs.js"
import { InvalidPayload, UnknownJobType } from "../../src/Errors.js"
import { jobQueueService, layerFromEnv, makeJobQueueService } from "../../src/services/jobQueueService.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { eventually } from "../support/live.js"
import { notingTracer } from "../support/spanNames.js"

const ORG = "3f2c1e4a-9b7d-4c2e-8f1a-0d6b5e4c3a21"
const USER = "8d0b6c1e-2f4a-4e5b-9c3d-7a1f0e2d4c6b"

/** Sets environment variables for the test's scope, as a deployment would. */
const withEnv = (vars: Record<string, string>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const previous = Object.fromEntries(Object.keys(vars).map((name) => [name, process.env[name]]))
      Object.assign(process.env, vars)
      return previous
    }),
    (previous) =>
      Effect.sync(() => {
        for (const [name, value] of Object.entries(previous)) {
          if (value === undefined) delete process.env[name]
          else process.env[name] = value
        }
      })
  )

const rejection = (promise: () => Promise<unknown>) =>
  Effect.promise(() => promise().then(() => undefined, (error: unknown) => error))

/** The facade over DATABASE_URL pointing at a host that accepts connections and never answers (for the scope). */
const serviceOfHostThatNeverAnswers = Effect.gen(function* () {
  const sockets: Array<Socket> = []
  const server = createServer((socket) => void sockets.push(socket))
  yield* Effect.acquireRelease(
    Effect.async<void>((resume) => void server.listen(0, "127.0.0.1", () => resume(Effect.void))),
    () => Effect.sync(() => (sockets.forEach((socket) => socket.destroy()), server.close()))
  )
  const { port } = server.address() as { port: number }
  yield* withEnv({ DATABASE_URL: `postgres://skiplock@127.0.0.1:${port}/skiplock` })
  const service = makeJobQueueService(layerFromEnv)
  yield* Effect.addFinalizer(() => Effect.promise(() => service.close()))
  return service
})

describe("jobQueueService", () => {
  layer(TestDatabase.layer({ migrations: migrationSets }), { excludeTestServices: true })((it) => {
    it.scoped("enqueues with the runbook's call shape and rejects with the API's tagged errors", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        yield* withEnv({ DATABASE_URL: url })
        yield* Effect.addFinalizer(() => Effect.promise(() => jobQueueService.close()))

        const job = yield* Effect.promise(() =>
          jobQueueService.enqueue({
            organizationId: ORG,
            jobType: "sepa_export",
            payload: { batchId: "test-1" },
            createdBy: USER
          })
        )
        expect(job).toMatchObject({ jobType: "sepa_export", organizationId: ORG, status: "pending", existing: false })
        const sql = yield* SqlClient.SqlClient
        const [row] = yield* sql<{ payload: unknown; createdBy: string; maxAttempts: number }>`
          SELECT payload, created_by AS "createdBy", max_attempts AS "maxAttempts" FROM job_queue WHERE id = ${job.id}`
        expect(row).toEqual({ payload: { batchId: "test-1" }, createdBy: USER, maxAttempts: 3 })

        const unknown = yield* rejection(() => jobQueueService.enqueue({ organizationId: ORG, jobType: "sepa", payload: {}, createdBy: USER }))
        expect(unknown).toBeInstanceOf(UnknownJobType)
        expect((unknown as UnknownJobType).message).toContain('unknown job type "sepa"')

        const invalid = yield* rejection(() =>
          jobQueueService.enqueue({ organizationId: ORG, jobType: "billing_run", payload: { billingPeriod: "March" }, createdBy: USER })
        )
        expect(invalid).toBeInstanceOf(InvalidPayload)
        expect(invalid).toBeInstanceOf(Error)
        // A payload that contains itself is named as a cycle, not as nesting too deep.
        const cyclic: Record<string, unknown> = { batchId: "test-2" }
        cyclic.parent = cyclic
        const cycle = yield* rejection(() => jobQueueService.enqueue({ organizationId: ORG, jobType: "sepa_export", payload: cyclic, createdBy: USER }))
        expect(cycle).toBeInstanceOf(InvalidPayload)
        expect((cycle as InvalidPayload).message).toBe(
          `invalid payload for job type "sepa_export": payload["parent"] refers back to payload (a cycle), which JSON cannot carry`
        )

        const many = yield* Effect.promise(() =>
          jobQueueService.enqueueMany([
            { organizationId: ORG, jobType: "report_generation", payload: { n: 1 } },
            { organizationId: ORG, jobType: "report_generation", payload: { n: 2 } }
          ])
        )
        expect(many.map((j) => j.status)).toEqual(["pending", "pending"])
      }))

    it.scoped("jobs without their own maxAttempts get WORKER_MAX_ATTEMPTS", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        yield* withEnv({ DATABASE_URL: url, WORKER_MAX_ATTEMPTS: "5" })
        const service = makeJobQueueService(layerFromEnv)
        yield* Effect.addFinalizer(() => Effect.promise(() => service.close()))
        const defaulted = yield* Effect.promise(() => service.enqueue({ organizationId: ORG, jobType: "dunning_run", payload: {} }))
        const explicit = yield* Effect.promise(() => service.enqueue({ organizationId: ORG, jobType: "dunning_run", payload: {}, maxAttempts: 2 }))
        const sql = yield* SqlClient.SqlClient
        const rows = yield* sql<{ id: string; maxAttempts: number }>`
          SELECT id, max_attempts AS "maxAttempts" FROM job_queue WHERE id IN (${defaulted.id}, ${explicit.id})`
        expect(Object.fromEntries(rows.map((r) => [r.id, r.maxAttempts]))).toEqual({ [defaulted.id]: 5, [explicit.id]: 2 })
      }))

    it.scoped("its inserts run straight on its pool, as the worker's statements do (no sql.execute span)", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        yield* withEnv({ DATABASE_URL: url })
        const { tracer, names } = yield* notingTracer
        const service = makeJobQueueService(Layer.merge(layerFromEnv, Layer.setTracer(tracer)))
        yield* Effect.addFinalizer(() => Effect.promise(() => service.close()))
        yield* Effect.promise(() => service.enqueue({ organizationId: ORG, jobType: "dunning_run", payload: {} }))
        yield* Effect.promise(() => service.enqueueMany([{ organizationId: ORG, jobType: "dunning_run", payload: { n: 1 } }]))
        expect(names.length).toBeGreaterThan(0) // the tracer is the one in use: the enqueues' own spans are noted
        expect(names).not.toContain("sql.execute")
      }))

    it.scoped("close waits for the calls still running: a script's enqueues that it did not await are all inserted", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        yield* withEnv({ DATABASE_URL: url })
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        const service = makeJobQueueService(layerFromEnv)
        const calls = Array.from({ length: 200 }, (_, n) => service.enqueue({ organizationId: ORG, jobType: "dunning_run", payload: { n } }))
        yield* Effect.promise(() => service.close())
        const settled = yield* Effect.promise(() => Promise.allSettled(calls))
        expect(settled.filter((call) => call.status === "fulfilled")).toHaveLength(200)
        const [row] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM job_queue`
        expect(row!.n).toBe(200)
        // Used again after its close, it connects again.
        yield* Effect.promise(() => service.enqueue({ organizationId: ORG, jobType: "dunning_run", payload: {} }))
        yield* Effect.promise(() => service.close())
      }))

    it.scoped("an enqueue that finds every connection of the pool in use for 5 s says so, and that the database may be fine", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        yield* withEnv({ DATABASE_URL: url })
        const service = makeJobQueueService(layerFromEnv)
        yield* Effect.addFinalizer(() => Effect.promise(() => service.close()))
        // Another session locks job_queue: five enqueues wait for it, each on one of the pool's five connections.
        const blocker = new pg.Client({ connectionString: url })
        yield* Effect.acquireRelease(Effect.promise(() => blocker.connect()), () => Effect.promise(() => blocker.end()))
        yield* Effect.promise(() => blocker.query("BEGIN; LOCK TABLE job_queue IN SHARE MODE"))
        const holding = Promise.all([1, 2, 3, 4, 5].map((n) => service.enqueue({ organizationId: ORG, jobType: "dunning_run", payload: { n } })))
        const sql = yield* SqlClient.SqlClient
        yield* eventually(
          Effect.map(sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity
                                        WHERE datname = current_database() AND application_name = 'skiplock-enqueue' AND wait_event_type = 'Lock'`,
                     ([row]) => row!.n === 5),
          "five enqueues wait for the lock"
        )
        const started = Date.now()
        const error = yield* rejection(() => service.enqueue({ organizationId: ORG, jobType: "dunning_run", payload: { n: 6 } }))
        expect(Date.now() - started).toBeGreaterThan(4_500)
        expect((error as { _tag?: unknown })._tag).toBe("SqlError")
        expect((error as Error).message).toBe(
          "Failed to acquire connection: all 5 connections of this process's pool stayed in use (or were still being opened) for 5 s, " +
            "so this call got none; the database itself may be fine. Send many jobs at once with one enqueueMany call rather than many enqueue calls"
        )
        yield* Effect.promise(() => blocker.query("ROLLBACK"))
        expect(yield* Effect.promise(() => holding)).toHaveLength(5)
      }), 20_000)

    it.scoped("an enqueue against a host that never answers fails after the connect timeout (5 s), instead of waiting for ever", () =>
      Effect.gen(function* () {
        const service = yield* serviceOfHostThatNeverAnswers
        const started = Date.now()
        const error = yield* rejection(() => service.enqueue({ organizationId: ORG, jobType: "dunning_run", payload: {} }))
        expect(Date.now() - started).toBeLessThan(8_000)
        expect(error).toMatchObject({ _tag: "SqlError", message: "Failed to acquire connection" })
        expect(String((error as { cause?: unknown }).cause)).toMatch(/timeout/i)
      }), 20_000)

    it.scoped("enqueues queued behind connections still being opened to a host that never answers are not told that the database may be fine", () =>
      Effect.gen(function* () {
        const service = yield* serviceOfHostThatNeverAnswers
        // Five open the pool's five connections; the other five wait in pg-pool's queue, and time out with the
        // words of a pool whose connections are all in use.
        const errors = yield* Effect.all(
          Array.from({ length: 10 }, (_, n) => rejection(() => service.enqueue({ organizationId: ORG, jobType: "dunning_run", payload: { n } }))),
          { concurrency: "unbounded" }
        )
        expect(errors.map((error) => (error as Error).message)).toEqual(Array.from({ length: 10 }, () => "Failed to acquire connection"))
      }), 20_000)
  })
})
