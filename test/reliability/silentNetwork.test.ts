// The worker's bookkeeping statements are answered within the pool's answer timeout, or given up
// (src/internal/answerWatch.ts): on a live connection the server cancels the statement (the connection
// stays only if the cancel was confirmed first); on one whose network fell silent the connection is closed. A worker whose claims
// went into such connections claims again once the network heals, instead of waiting until TCP gives
// up (~15 minutes). Real clock; the pool behind a proxy that goes silent and heals.
import { SqlClient } from "@effect/sql"
import { describe, expect, layer } from "@effect/vitest"
import { Cause, Context, Duration, Effect, Exit, Layer, Schema } from "effect"
import { Db, Handler, JobDefinition, JobQueue, Worker } from "../../src/index.js"
import { isConnectionError } from "../../src/internal/connectionLoss.js"
import { PREPARED, WATCHED } from "../../src/internal/preparedStatements.js"
import { sqlErrorCode } from "../../src/internal/sqlErrorText.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { jobStatus, ORG } from "../support/jobs.js"
import { eventually, pauseLive } from "../support/live.js"
import { silenceableProxy, slowToConnectProxy } from "../support/proxy.js"

const Report = JobDefinition.make("report_generation", Schema.Struct({ n: Schema.Number }))

const backendPid = (sql: SqlClient.SqlClient) => Effect.map(sql<{ pid: number }>`SELECT pg_backend_pid() AS pid`, ([row]) => row!.pid)

// A pool of one connection with the given answer timeout, on `url`, used through its SqlClient.
const onePool = (url: string, answerTimeout: Duration.DurationInput) =>
  Effect.map(Layer.build(Db.layer({ url, maxConnections: 1, answerTimeout, connectTimeout: "1 second" })), Context.get(SqlClient.SqlClient))

describe("a statement left unanswered", () => {
  layer(TestDatabase.layer(), { excludeTestServices: true })((it) => {
    it.scoped("a watched statement past the answer timeout is cancelled by the server, and the pool goes on", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const sql = yield* onePool(url, "300 millis")
        const started = Date.now()
        const error = yield* Effect.flip(sql`${sql.literal(WATCHED)} SELECT pg_sleep(5)`)
        expect(sqlErrorCode(error)).toBe("57014")
        expect(Date.now() - started).toBeLessThan(3_000)
        // The connection is kept only if the server had confirmed the cancel (closed its socket) before the 57014
        // came, which is a race: a 57014 may be another's while this cancel is still on its way (a review found
        // one ending the next statement). Either way the next statement runs, and is not cancelled.
        expect(yield* sql<{ slept: number }>`SELECT 1 AS slept FROM pg_sleep(0.5)`).toEqual([{ slept: 1 }])
      }), 30_000)

    it.scoped("a watched statement answered just after its cancel was sent retires its connection: the cancel, still on its way, cannot end the next statement", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        // The cancel's connection takes 300 ms: sent at 400 ms, it arrives at ~700 ms, after the answer (~450 ms).
        const proxy = yield* slowToConnectProxy(url, 300)
        const sql = yield* onePool(proxy.url, "400 millis")
        const pid = yield* backendPid(sql)
        yield* sql`${sql.literal(WATCHED)} SELECT 1 AS slept FROM pg_sleep(0.45)`
        // Still running when the cancel lands: on the retired connection it would fail with 57014.
        const rows = yield* sql<{ slept: number }>`SELECT 1 AS slept FROM pg_sleep(1)`
        expect(rows).toEqual([{ slept: 1 }])
        expect(yield* backendPid(sql)).not.toBe(pid)
      }), 30_000)

    it.scoped("an unwatched statement may take longer than the answer timeout", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const sql = yield* onePool(url, "300 millis")
        const rows = yield* sql<{ slept: number }>`${sql.literal(PREPARED)} SELECT 1 AS slept FROM pg_sleep(1)`
        expect(rows).toEqual([{ slept: 1 }])
      }), 30_000)

    it.scoped("a watched statement on a connection that fell silent fails as a lost connection, and the pool connects anew once the network heals", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const proxy = yield* silenceableProxy(url)
        const sql = yield* onePool(proxy.url, "500 millis")
        const pid = yield* backendPid(sql)
        proxy.silence()
        const started = Date.now()
        const error = yield* Effect.flip(sql`${sql.literal(WATCHED)} SELECT 1`)
        // Timeout, then the cancel's grace (here as long as the timeout), then the connection is closed.
        expect(isConnectionError(error)).toBe(true)
        expect(Date.now() - started).toBeGreaterThanOrEqual(900)
        expect(Date.now() - started).toBeLessThan(5_000)
        proxy.heal()
        expect(yield* backendPid(sql)).not.toBe(pid)
      }), 30_000)

    it.scoped("an answer timeout outside 100 ms to 1 hour is refused, naming the option (at 0 every statement would be cancelled)", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        for (const answerTimeout of [Duration.zero, Duration.hours(2)]) {
          const exit = yield* Effect.exit(Layer.build(Db.layer({ url, answerTimeout })))
          expect(Exit.isFailure(exit) && Cause.pretty(exit.cause)).toContain(`answerTimeout must be from 100ms to 1h, got ${Duration.format(answerTimeout)}`)
        }
      }))

    it.scoped("a worker whose claims went into connections that fell silent claims again once the network heals", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM job_queue`
        const proxy = yield* silenceableProxy(url)
        const enqueue = (n: number) =>
          Effect.map(JobQueue.enqueueJob(Report, { n }, { organizationId: ORG }).pipe(Effect.provide(JobQueue.layer([Report]))), (job) => job.id)
        const first = yield* enqueue(1)
        const pool = yield* Layer.build(Db.layer({ url: proxy.url, connectTimeout: "1 second", answerTimeout: "1 second" }))
        yield* Worker.make({
          handlers: [Handler.make(Report, { run: () => Effect.void })], listen: false, pollInterval: "200 millis",
          heartbeatInterval: "1 second", rescueInterval: "1 hour"
        }).pipe(Effect.provide(pool))
        yield* eventually(Effect.map(jobStatus(first), (status) => status === "completed"), "the first job completed")
        // The polls' claims go into connections that never answer; nothing tells the worker so.
        proxy.silence()
        yield* pauseLive("1500 millis")
        proxy.heal()
        const second = yield* enqueue(2)
        yield* eventually(Effect.map(jobStatus(second), (status) => status === "completed"), "the job enqueued after the network healed completed", "20 seconds")
      }), 60_000)
  })
})
