// Bad options to Worker.make (and Worker.layer): a typed failure, InvalidWorkerOptions, naming the option,
// what it accepts and what it got, before the worker starts anything. The bounds are the service's
// WORKER_* variables' own (test/service/config.test.ts).
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Layer, Logger, Schema } from "effect"
import { randomBytes } from "node:crypto"
import { Handler, JobDefinition, Worker } from "../../src/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"

const Report = JobDefinition.make("report_generation", Schema.Struct({}))
const report = Handler.make(Report, { run: () => Effect.void })

type Options = Partial<Worker.WorkerOptions<ReadonlyArray<Handler.Handler>>>

const refusal = (options: Options) =>
  Effect.flip(Effect.scoped(Worker.make({ handlers: [report], listen: false, pollInterval: "1 hour", ...options }))).pipe(
    Effect.map(({ _tag, option, message }) => ({ _tag, option, message }))
  )

const refused = (option: string, reason: string) => ({ _tag: "InvalidWorkerOptions", option, message: `invalid worker options: ${reason}` })

// What a JavaScript caller, or a value read from a file, may pass where TypeScript would object.
const untyped = (value: unknown) => value as Duration.DurationInput

describe("Worker options", () => {
  it.layer(TestDatabase.layer())((it) => {
    it.effect("batchSize and concurrency are whole numbers from 1 to 1000, prefetch from 0 to 1000", () =>
      Effect.gen(function* () {
        expect(yield* refusal({ batchSize: 0 })).toEqual(refused("batchSize", "batchSize must be a whole number from 1 to 1000, got 0"))
        expect(yield* refusal({ concurrency: 2.5 })).toEqual(refused("concurrency", "concurrency must be a whole number from 1 to 1000, got 2.5"))
        expect(yield* refusal({ concurrency: 1001 })).toEqual(refused("concurrency", "concurrency must be a whole number from 1 to 1000, got 1001"))
        expect(yield* refusal({ prefetch: -1 })).toEqual(refused("prefetch", "prefetch must be a whole number from 0 to 1000, got -1"))
        expect(yield* refusal({ prefetch: NaN })).toEqual(refused("prefetch", "prefetch must be a whole number from 0 to 1000, got NaN"))
        // Read from the environment without a parseInt: text, which the message must not show as the number it looks like.
        expect(yield* refusal({ concurrency: "10" as unknown as number })).toEqual(
          refused("concurrency", `concurrency must be a whole number from 1 to 1000, got "10"`)
        )
      }))

    it.effect("a workerId must not be blank (it names the worker in every audit entry, which must name who acted) and must be text PostgreSQL stores", () =>
      Effect.gen(function* () {
        expect(yield* refusal({ workerId: " " })).toEqual(
          refused("workerId", `workerId must not be blank: it names the worker in every audit entry, which must name who acted; got " "`)
        )
        expect(yield* refusal({ workerId: "worker\u0000a" })).toEqual(
          refused("workerId", "workerId contains a NUL character (\\u0000), which PostgreSQL cannot store")
        )
        expect(yield* refusal({ workerId: 7 as unknown as string })).toEqual(refused("workerId", "workerId must be text, got 7"))
      }))

    it.effect("a workerId is at most 500 characters: job_workers' index takes no key of a few thousand bytes, and the worker could never register", () =>
      Effect.gen(function* () {
        // 3,200 characters that do not compress: the worker ran, claimed jobs, and never registered.
        expect(yield* refusal({ workerId: randomBytes(1600).toString("hex") })).toEqual(
          refused("workerId", "workerId must be at most 500 characters: it is the key of the worker's row in job_workers, whose index takes no longer one; got 3200")
        )
        expect(yield* refusal({ workerId: "w".repeat(501) })).toMatchObject({ option: "workerId" })
        // The longest, of characters that take 3 bytes each in UTF-8, registers.
        const sql = yield* SqlClient.SqlClient
        const workerId = "€".repeat(500)
        const registered = Effect.scoped(
          Effect.zipRight(
            Worker.make({ handlers: [report], workerId, listen: false, pollInterval: "1 hour" }),
            sql<{ n: number }>`SELECT length(worker_id)::int AS n FROM job_workers WHERE worker_id = ${workerId}`
          )
        )
        expect(yield* registered).toEqual([{ n: 500 }])
      }))

    it.effect("one handler per job type", () =>
      Effect.gen(function* () {
        expect(yield* refusal({ handlers: [report, report] })).toEqual(
          refused("handlers", `handlers must have one handler per job type, got two for "report_generation"`)
        )
        // A handler's timeout is a timer: longer than one holds, it would never fire; at zero every attempt times out.
        const month = Handler.make(report.definition, { run: () => Effect.void, timeout: "30 days" })
        expect(yield* refusal({ handlers: [month] })).toEqual(
          refused("handlers", `the handler for "report_generation" has a timeout of 30d; a handler's timeout must be from 1ms to 24d (a timer holds no longer)`)
        )
        const none = Handler.make(report.definition, { run: () => Effect.void, timeout: 0 })
        expect((yield* refusal({ handlers: [none] })).message).toContain("has a timeout of 0;")
      }))

    it.effect("intervals (poll, lease, heartbeat, rescue, prune) are durations from 10ms to 24d: zero, negative, NaN and infinite ones are refused, not taken for 0", () =>
      Effect.gen(function* () {
        expect(yield* refusal({ pollInterval: 0 })).toEqual(refused("pollInterval", "pollInterval must be a duration from 10ms to 24d, got 0ms"))
        // A timer treats anything longer than ~24.8 days as never: no poll at all.
        expect(yield* refusal({ pollInterval: "30 days" })).toEqual(refused("pollInterval", `pollInterval must be a duration from 10ms to 24d, got "30 days"`))
        expect(yield* refusal({ rescueInterval: "-5 seconds" })).toEqual(refused("rescueInterval", `rescueInterval must be a duration from 10ms to 24d, got "-5 seconds"`))
        expect(yield* refusal({ pruneInterval: NaN })).toEqual(refused("pruneInterval", "pruneInterval must be a duration from 10ms to 24d, got NaN"))
        expect(yield* refusal({ heartbeatInterval: Duration.infinity })).toEqual(
          refused("heartbeatInterval", "heartbeatInterval must be a duration from 10ms to 24d, got Infinity")
        )
        expect(yield* refusal({ leaseDuration: untyped("5 secs") })).toEqual(
          refused("leaseDuration", `leaseDuration must be a duration from 10ms to 24d, got "5 secs", which is not one (write "5 seconds", 5000 for milliseconds, or Duration.seconds(5))`)
        )
      }))

    it.effect("retryBackoff and shutdownTimeout may be 0, at most 24d; retention is \"forever\" or from 1h to 36500d", () =>
      Effect.gen(function* () {
        expect(yield* refusal({ retryBackoff: -1 })).toEqual(refused("retryBackoff", "retryBackoff must be a duration of at most 24d, got -1ms"))
        expect(yield* refusal({ shutdownTimeout: Infinity })).toEqual(refused("shutdownTimeout", "shutdownTimeout must be a duration of at most 24d, got Infinity"))
        expect(yield* refusal({ retention: "10 minutes" })).toEqual(
          refused("retention", `retention must be "forever" or a duration from 1h to 36500d, got "10 minutes"`)
        )
      }))

    it.effect("the heartbeat must come more often than the lease runs out, or leases run out between heartbeats", () =>
      Effect.gen(function* () {
        const because = "leases would run out between heartbeats, and a job running longer than its lease be rescued while its handler still runs, and run a second time"
        expect(yield* refusal({ heartbeatInterval: "30 seconds" })).toEqual(
          refused("heartbeatInterval", `heartbeatInterval must be shorter than leaseDuration, got 30s for a lease of 30s (the default): ${because}`)
        )
        expect(yield* refusal({ leaseDuration: "5 seconds" })).toEqual(
          refused("heartbeatInterval", `heartbeatInterval must be shorter than leaseDuration, got 10s (the default) for a lease of 5s: ${because}`)
        )
      }))

    it.effect("a lease of 3 s or less is taken, with a warning at start: a cut-off worker stops its jobs 3 s before their leases run out", () =>
      Effect.gen(function* () {
        const warningsAtStart = (leaseDuration: Duration.DurationInput) =>
          Effect.gen(function* () {
            const warnings: Array<string> = []
            const capture = Logger.make(({ logLevel, message }) => {
              if (logLevel._tag === "Warning") warnings.push(String(Array.isArray(message) ? message[0] : message))
            })
            yield* Effect.scoped(
              Worker.make({ handlers: [report], listen: false, pollInterval: "1 hour", leaseDuration, heartbeatInterval: "1 second" }).pipe(
                Effect.provide(Logger.replace(Logger.defaultLogger, capture))
              )
            )
            return warnings
          })
        expect(yield* warningsAtStart("3 seconds")).toEqual([
          "leaseDuration 3s leaves no slack: a worker that cannot reach the database stops a job 3s before its lease runs out, " +
            "so one heartbeat that fails stops every running job; give it more than that (the default is 30s)"
        ])
        expect(yield* warningsAtStart("3001 millis")).toEqual([])
      }))

    it.scoped("bad options start nothing: no row in job_workers, no connection LISTENing", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        // Still inside the worker's scope (the test's): a worker that had started would be registered and listening.
        const error = yield* Effect.flip(Worker.make({ handlers: [report], workerId: "refused", heartbeatInterval: "1 minute" }))
        expect(error._tag).toBe("InvalidWorkerOptions")
        expect(yield* sql`SELECT worker_id FROM job_workers`).toEqual([])
        expect(yield* sql`SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %'`).toEqual([])
      }))

    it.effect("Worker.layer fails with the same error", () =>
      Effect.gen(function* () {
        const error = yield* Effect.flip(Effect.scoped(Layer.build(Worker.layer({ handlers: [report], batchSize: 0 }))))
        expect(error).toMatchObject({ _tag: "InvalidWorkerOptions", option: "batchSize" })
      }))
  })
})
