/**
 * The skiplock service (`npm start`): one process that runs the HTTP server
 * (/healthz, /readyz, /metrics) and the worker, assembled here from layers.
 *
 * Start-up, in order: the signal guard, the service state, the HTTP server,
 * the database (DATABASE_URL, or the embedded PostgreSQL), the queue and the
 * worker; then /readyz turns ready. Shutdown runs backwards: /readyz says
 * "stopping", the worker stops claiming and lets running jobs finish for up to
 * WORKER_SHUTDOWN_TIMEOUT, releases the rest to `pending`, and only then the
 * database and the HTTP server close (in a fresh fiber: see app/launch.ts).
 * A second signal exits at once.
 */
import { NodeRuntime } from "@effect/platform-node"
import { SqlClient } from "@effect/sql"
import { Cause, ConfigError, Console, Duration, Effect, Layer, Option } from "effect"
import { realpathSync } from "node:fs"
import { pathToFileURL } from "node:url"
import * as Audit from "./Audit.js"
import * as ClockSkew from "./app/clockSkew.js"
import * as Database from "./app/Database.js"
import * as AppJobs from "./app/jobs.js"
import * as Logging from "./app/Logging.js"
import * as ServiceState from "./app/ServiceState.js"
import { launch } from "./app/launch.js"
import { exitOnSecondSignal } from "./app/signals.js"
import { StartupError } from "./app/StartupError.js"
import { describeConfigError, serviceConfig, type ServiceConfig, unknownVariables } from "./config/ServiceConfig.js"
import * as Http from "./http/server.js"
import { HTTP_CONNECTIONS } from "./http/databaseGate.js"
import * as JobQueue from "./JobQueue.js"
import * as LocalWorkers from "./LocalWorkers.js"
import * as Worker from "./Worker.js"
import { sqlErrorText } from "./internal/sqlErrorText.js"

/** The whole service as one layer. */
export const ServiceLive = (config: ServiceConfig, jobs: AppJobs.AppJobs) => {
  // The database: waits for DATABASE_URL's server and requires its migrations, or starts the embedded one.
  // Its pool: what the worker may hold at once, and one connection each for /readyz and /metrics (at least 10).
  const maxConnections = Math.max(10, Worker.connectionsNeeded(config.worker) + HTTP_CONNECTIONS)
  const DatabaseLive = Database.layer({ config: config.database, migrationSets: jobs.migrationSets, checkData: AppJobs.checkData, onWaiting: ServiceState.starting, maxConnections })

  // What handlers use beside the database: the audit trail, the queue (for follow-up jobs), the features' services.
  const CoreServicesLive = Layer.merge(Audit.layer, JobQueue.layer(jobs.definitions))
  const HandlerServicesLive = Layer.merge(CoreServicesLive, AppJobs.FeatureServices.pipe(Layer.provide(CoreServicesLive)))

  // Its type says what the handlers need: AppRequirements, provided below. The configuration's bounds are the
  // worker's own (src/internal/workerOptions.ts): options it refuses anyway (two handlers for one job type, say,
  // in jobs not made by AppJobs.load) stop start-up like any StartupError, before the worker starts anything.
  const WorkerLive: Layer.Layer<Worker.Worker, StartupError, AppJobs.AppRequirements> = Worker.layer({
    handlers: jobs.handlers,
    ...Option.match(config.worker.workerId, { onNone: () => ({}), onSome: (workerId) => ({ workerId }) }),
    pollInterval: config.worker.pollInterval,
    batchSize: config.worker.batchSize,
    concurrency: config.worker.concurrency,
    prefetch: config.worker.prefetch,
    shutdownTimeout: config.worker.shutdownTimeout,
    retention: config.worker.retention
  }).pipe(Layer.mapError((error) => new StartupError({ message: `cannot start the worker: ${error.message}`, cause: error })))

  // Ready once everything below is up; "stopping" first when the service stops, before the worker drains.
  const RunningLive = Layer.scopedDiscard(
    Effect.gen(function* () {
      const worker = yield* Worker.Worker
      const sql = yield* SqlClient.SqlClient
      const database = yield* Database.Database
      yield* warnAboutUnregisteredTypes(jobs)
      yield* warnAboutConnectionLimit(maxConnections, config.worker.concurrency)
      yield* Effect.forkScoped(ClockSkew.watch)
      yield* ServiceState.running({ sql, worker, database, concurrency: config.worker.concurrency })
      yield* Effect.logInfo(`skiplock is ready: worker ${worker.workerId}, database ${database.display}`)
    })
  )

  // Shared by the queue and the worker: follow-up jobs that handlers enqueue go straight to a free slot
  // (WORKER_HAND_OFF=false: every job waits for a claim of a worker, as when enqueued elsewhere).
  const CoreLive = RunningLive.pipe(
    Layer.provide(WorkerLive),
    Layer.provide(HandlerServicesLive),
    Layer.provide(config.worker.handOff ? LocalWorkers.layer : Layer.empty),
    Layer.provideMerge(DatabaseLive)
  )

  // The HTTP server is built before the core and released after it (a dependency of it),
  // so /healthz and /readyz answer while the database is awaited and while jobs drain.
  return CoreLive.pipe(
    Layer.provide(Http.layer(config.http)),
    Layer.provide(ServiceState.ServiceState.layer),
    Layer.provide(exitOnSecondSignal)
  )
}

// A handler whose type is not in job_types can never get a job: say so at start-up.
const warnAboutUnregisteredTypes = (jobs: AppJobs.AppJobs) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const registered = new Set((yield* sql<{ name: string }>`SELECT name FROM job_types`).map((row) => row.name))
    for (const handler of jobs.handlers) {
      const type = handler.definition.jobType
      if (!registered.has(type)) {
        yield* Effect.logWarning(`the worker handles job type "${type}", which is not registered in job_types: no job of it can be enqueued until a migration registers it`)
      }
    }
  }).pipe(Effect.catchAll((error) => Effect.logWarning(`cannot read job_types: ${sqlErrorText(error)}`)))

// A pool the server cannot serve fails its last connections with "too many clients", which the worker takes
// for a lost connection (the attempt released, again and again): said at start, with what to change.
const warnAboutConnectionLimit = (poolSize: number, concurrency: number) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const [row] = yield* sql<{ max: number; reserved: number }>`
      SELECT current_setting('max_connections')::int AS max, current_setting('superuser_reserved_connections')::int AS reserved`
    const available = row!.max - row!.reserved
    if (poolSize > available) {
      yield* Effect.logWarning(
        `the database pool may open ${poolSize} connections (one per running job, WORKER_CONCURRENCY ${concurrency}, and the worker's own), but the server takes ` +
          `${available} (max_connections ${row!.max} less ${row!.reserved} reserved), shared with every other client: ` +
          "lower WORKER_CONCURRENCY, or raise max_connections"
      )
    }
  }).pipe(Effect.catchAll((error) => Effect.logWarning(`cannot read max_connections: ${sqlErrorText(error)}`)))

/** Runs the service until it is interrupted (SIGTERM/SIGINT); fails with a message when it cannot start. */
export const runService = Effect.gen(function* () {
  const config = yield* serviceConfig
  return yield* Effect.gen(function* () {
    const jobs = yield* AppJobs.load(config.handlerModules)
    const unknown = unknownVariables(process.env)
    if (unknown.length > 0) {
      yield* Effect.logWarning(`ignoring ${unknown.join(", ")}: not a setting of skiplock's (misspelled? README's configuration table lists them)`)
    }
    yield* Effect.logInfo(
      `starting skiplock: handlers for ${jobs.handlers.map((h) => h.definition.jobType).join(", ") || "no job types"}; ` +
        `poll every ${Duration.format(config.worker.pollInterval)}, batch ${config.worker.batchSize}, concurrency ${config.worker.concurrency}, prefetch ${config.worker.prefetch}, shutdown timeout ${Duration.format(config.worker.shutdownTimeout)}`
    )
    return yield* launch(ServiceLive(config, jobs))
  }).pipe(Effect.provide(Logging.layer(config.log)), reportFailure)
}).pipe(
  Effect.catchIf(ConfigError.isConfigError, (error) =>
    Effect.zipRight(
      Console.error(`skiplock: invalid configuration:\n${describeConfigError(error).map((line) => `  ${line}`).join("\n")}`),
      Effect.fail(error)
    )
  )
)

/** Logs why start-up failed in one line (a defect with its trace) before the process exits with 1. */
const reportFailure = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.tapErrorCause(effect, (cause) => {
    if (Cause.isInterruptedOnly(cause)) return Effect.void
    const failure = Cause.failureOption(cause)
    if (Option.isSome(failure) && failure.value instanceof StartupError) return Effect.logFatal(failure.value.message)
    return Effect.logFatal("skiplock stopped on an unexpected error", cause)
  })

const isEntryPoint = () => {
  try {
    return process.argv[1] !== undefined && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href
  } catch {
    return false
  }
}

if (isEntryPoint()) {
  NodeRuntime.runMain(runService, { disableErrorReporting: true, disablePrettyLogger: true })
}
