/**
 * The runbook's Promise facade, for code that is not written with Effect:
 *
 *   import { jobQueueService } from "./services/jobQueueService.js"
 *
 *   await jobQueueService.enqueue({
 *     organizationId: "3f2c1e4a-9b7d-4c2e-8f1a-0d6b5e4c3a21",
 *     jobType: "sepa_export",
 *     payload: { batchId: "test-1" },
 *     createdBy: "8d0b6c1e-2f4a-4e5b-9c3d-7a1f0e2d4c6b",
 *   })
 *
 * It connects on first use to DATABASE_URL (or, when unset, to the embedded
 * PostgreSQL that `npm start` runs), checks payloads against the application's
 * job definitions, and rejects with the same tagged errors as the Effect API
 * (UnknownJobType, InvalidPayload, InvalidJobOptions, SqlError). Jobs without
 * their own maxAttempts get WORKER_MAX_ATTEMPTS (default 3).
 */
import { SqlError } from "@effect/sql/SqlError"
import { Cause, ConfigError, Duration, Effect, Exit, Layer, ManagedRuntime, Redacted } from "effect"
import pg from "pg"
import * as AppJobs from "../app/jobs.js"
import * as Db from "../Db.js"
import { StartupError } from "../app/StartupError.js"
import { databaseConfig, describeConfigError, effectiveDatabaseUrl, handlerModulesConfig, workerConfig } from "../config/ServiceConfig.js"
import { type EnqueuedJob, type EnqueueError, type EnqueueInput, JobQueue, make as makeJobQueue } from "../JobQueue.js"
import { clientOptions, PreparingClient } from "../internal/preparedStatements.js"

export interface JobQueueService {
  /** Enqueues one job; resolves with it (or with the earlier job of the same idempotency key). */
  readonly enqueue: (input: EnqueueInput) => Promise<EnqueuedJob>
  /** Enqueues several jobs in one statement: all or none. */
  readonly enqueueMany: (inputs: ReadonlyArray<EnqueueInput>) => Promise<ReadonlyArray<EnqueuedJob>>
  /**
   * Closes the connection pool, once the calls still running have settled (each resolves or rejects as it
   * would have). Scripts may call it before they end; it reconnects if used again.
   */
  readonly close: () => Promise<void>
}

/** A facade over any layer that provides the JobQueue (for tests, or another database). */
export const makeJobQueueService = <E>(layer: Layer.Layer<JobQueue, E>): JobQueueService => {
  // The runtime with its pool, and the calls running on it: a close waits for them, since disposing the runtime
  // under them dropped them without a word (a script's un-awaited enqueues, then close: 5 of 200 inserted).
  let current: { readonly runtime: ManagedRuntime.ManagedRuntime<JobQueue, E>; readonly calls: Set<Promise<unknown>> } | undefined
  const run = async <A>(effect: Effect.Effect<A, unknown, JobQueue>): Promise<A> => {
    current ??= { runtime: ManagedRuntime.make(layer), calls: new Set() }
    const { calls } = current
    const call = current.runtime.runPromiseExit(effect)
    calls.add(call)
    const exit = await call.finally(() => calls.delete(call))
    // Reject with the error itself (a tagged Error), not Effect's FiberFailure wrapper.
    if (Exit.isFailure(exit)) throw Cause.squash(exit.cause)
    return exit.value
  }
  return {
    enqueue: (input) => run(Effect.flatMap(JobQueue, (queue) => queue.enqueue(input))),
    enqueueMany: (inputs) => run(Effect.flatMap(JobQueue, (queue) => queue.enqueueMany(inputs))),
    close: async () => {
      const closing = current
      current = undefined
      if (closing === undefined) return
      await Promise.allSettled([...closing.calls])
      await closing.runtime.dispose()
    }
  }
}

const CONNECT_TIMEOUT_MILLIS = 5_000
const POOL_SIZE = 5

// pg-pool's words for a call that waited its connect timeout in the pool's queue, behind connections all in use
// (or still being opened). @effect/sql-pg reports it as "Failed to acquire connection", as it does a database that
// cannot be reached; said as what it is, so that an operator does not go looking for a dead database.
const POOL_WAIT_TIMED_OUT = "timeout exceeded when trying to connect"

/** The pool's connections that reached the database and are not yet closed, kept from the pool's events. */
type OpenConnections = Set<unknown>

// Only while the pool holds an open connection: calls queued behind five connections that a database which
// never answers keeps "being opened" time out with the same words, and that database is not fine.
const sayingPoolExhausted = (open: OpenConnections) => <A>(enqueue: Effect.Effect<A, EnqueueError>): Effect.Effect<A, EnqueueError> =>
  Effect.mapError(enqueue, (error) =>
    error._tag === "SqlError" && error.cause instanceof Error && error.cause.message === POOL_WAIT_TIMED_OUT && open.size > 0
      ? new SqlError({
          cause: error.cause,
          message: `${error.message}: all ${POOL_SIZE} connections of this process's pool stayed in use (or were still being opened) ` +
            `for ${CONNECT_TIMEOUT_MILLIS / 1000} s, so this call got none; the database itself may be fine. ` +
            "Send many jobs at once with one enqueueMany call rather than many enqueue calls"
        })
      : error
  )

// A pool that lets a script's process end while idle, instead of holding it open. Db.layerOnPool also hands it to
// JobQueue, whose inserts then run on it directly, as the worker's statements do (internal/directStatements.ts).
const poolLayer = (url: Redacted.Redacted<string>, preparedStatements: boolean, open: OpenConnections) =>
  Layer.unwrapScoped(
    Effect.map(
      Effect.acquireRelease(
        Effect.sync(() => {
          const pool = new pg.Pool({
            connectionString: Redacted.value(url),
            max: POOL_SIZE,
            allowExitOnIdle: true,
            // As Db.layer's: an unreachable host fails the enqueue instead of leaving the caller waiting for ever.
            connectionTimeoutMillis: CONNECT_TIMEOUT_MILLIS,
            application_name: "skiplock-enqueue",
            Client: PreparingClient,
            ...clientOptions({ preparedStatements })
          })
          pool.on("error", () => undefined)
          // "connect": a new connection reached the database; "remove": an open one was closed.
          pool.on("connect", (client) => void open.add(client))
          pool.on("remove", (client) => void open.delete(client))
          return pool
        }),
        (pool) => Effect.promise(() => pool.end()).pipe(Effect.interruptible, Effect.timeoutOption(Duration.seconds(2)))
      ),
      (pool) => Db.layerOnPool(pool, "skiplock-enqueue")
    )
  )

/** The JobQueue of the environment: DATABASE_URL (or the embedded default), the application's definitions, WORKER_MAX_ATTEMPTS. */
export const layerFromEnv: Layer.Layer<JobQueue, StartupError | Error> = Layer.unwrapEffect(
  Effect.gen(function* () {
    const database = yield* databaseConfig
    const { maxAttempts } = yield* workerConfig
    const jobs = yield* AppJobs.load(yield* handlerModulesConfig)
    const open: OpenConnections = new Set()
    const saying = sayingPoolExhausted(open)
    const queueLayer = Layer.effect(
      JobQueue,
      Effect.map(makeJobQueue(jobs.definitions), (queue) =>
        JobQueue.of({
          enqueue: (input) => saying(queue.enqueue({ ...input, maxAttempts: input.maxAttempts ?? maxAttempts })),
          enqueueMany: (inputs) =>
            saying(queue.enqueueMany(inputs.map((input) => ({ ...input, maxAttempts: input.maxAttempts ?? maxAttempts }))))
        })
      )
    )
    return queueLayer.pipe(Layer.provide(poolLayer(effectiveDatabaseUrl(database), database.preparedStatements, open)))
  }).pipe(
    Effect.mapError((error) =>
      ConfigError.isConfigError(error) ? new StartupError({ message: `invalid configuration: ${describeConfigError(error).join("; ")}` }) : error
    )
  )
)

/** The facade the runbook shows, configured from the environment. */
export const jobQueueService: JobQueueService = makeJobQueueService(layerFromEnv)
