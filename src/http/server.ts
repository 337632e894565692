/**
 * The service's HTTP endpoints, for process managers and Prometheus:
 *   GET /healthz  200 while the process runs
 *   GET /readyz   200 when the database answers, the migrations are applied and
 *                 the worker's claim loop runs; 503 with the reason otherwise
 *   GET /metrics  Prometheus text format (see metrics.ts)
 * The server starts before the database is ready and stops after the worker
 * has drained, so both states are visible from outside.
 */
import { HttpRouter, HttpServer, HttpServerResponse } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { Duration, Effect, Layer, Ref } from "effect"
import { createServer } from "node:http"
import type { HttpConfig } from "../config/ServiceConfig.js"
import { ServiceState, type RunningService } from "../app/ServiceState.js"
import { StartupError } from "../app/StartupError.js"
import { sqlErrorText } from "../internal/sqlErrorText.js"
import { errorText } from "../internal/describe.js"
import { withinGate } from "./databaseGate.js"
import { collectAll } from "./metrics.js"
import { CONTENT_TYPE, render } from "./prometheus.js"

interface Check {
  readonly ok: boolean
  readonly detail?: string
}

export interface Readiness {
  readonly ready: boolean
  readonly status: "ready" | "not ready" | "starting" | "stopping"
  readonly detail?: string
  readonly checks?: Readonly<Record<"database" | "migrations" | "worker", Check>>
}

// Within the endpoints' connections (databaseGate.ts). Disconnected: a timed-out query is cancelled in the background. Its cancellation (pg_cancel_backend, on a
// connection of its own) waits as long as the database does not answer, and the answer must not.
const checkDatabase = (service: RunningService) =>
  service.sql`SELECT 1`.pipe(
    withinGate(service, "readiness"),
    Effect.disconnect,
    Effect.timeout(Duration.seconds(2)),
    Effect.as<Check>({ ok: true }),
    Effect.catchAll((error) =>
      Effect.succeed<Check>({ ok: false, detail: error._tag === "SqlError" ? sqlErrorText(error) : "no answer within 2 seconds" })
    )
  )

const checkWorker = (service: RunningService) =>
  Effect.map(service.worker.status, (status): Check => ({
    ok: status.claiming,
    detail: status.claiming
      ? `${status.workerId} runs ${status.running}/${service.concurrency} job(s); handles ${status.jobTypes.join(", ") || "no job types"}`
      : `the claim loop of ${status.workerId} is not running`
  }))

export const readiness = Effect.gen(function* () {
  const phase = yield* Ref.get(yield* ServiceState)
  switch (phase._tag) {
    case "Starting":
      return { ready: false, status: "starting", detail: phase.detail } satisfies Readiness
    case "Stopping":
      return { ready: false, status: "stopping", detail: "stopping: finishing running jobs" } satisfies Readiness
    case "Running": {
      const [database, worker] = yield* Effect.all([checkDatabase(phase.service), checkWorker(phase.service)], { concurrency: 2 })
      // Start-up stops unless every migration is applied, so a running service has them all.
      const checks = { database, migrations: { ok: true }, worker }
      const ready = database.ok && worker.ok
      return { ready, status: ready ? "ready" : "not ready", checks } satisfies Readiness
    }
  }
})

export const router = HttpRouter.empty.pipe(
  HttpRouter.get("/healthz", Effect.succeed(HttpServerResponse.unsafeJson({ status: "ok" }))),
  HttpRouter.get(
    "/readyz",
    Effect.map(readiness, (result) => HttpServerResponse.unsafeJson(result, { status: result.ready ? 200 : 503 }))
  ),
  HttpRouter.get(
    "/metrics",
    Effect.gen(function* () {
      const phase = yield* Ref.get(yield* ServiceState)
      const families = yield* collectAll(phase._tag === "Starting" ? undefined : phase.service)
      return HttpServerResponse.text(render(families), { contentType: CONTENT_TYPE })
    })
  )
)

// On close, how long open connections may finish what they are doing before they are cut. Node's
// close waits for every connection to end, and a client that keeps its connection busy (a request
// half sent, or a keep-alive poller whose next /metrics comes while the last is answered) would hold
// the stop open for as long as it likes.
const CLOSE_GRACE_MILLIS = 1_000

/** The HTTP server on HOST:PORT; it needs the ServiceState. */
export const layer = (config: HttpConfig) =>
  Layer.unwrapEffect(
    Effect.sync(() => {
      const server = createServer()
      // Released before the server's own close (built after it), which it does not wait for.
      const cutLateConnections = Layer.scopedDiscard(
        Effect.addFinalizer(() => Effect.sync(() => void setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MILLIS).unref()))
      )
      return Layer.merge(HttpServer.serve(router).pipe(HttpServer.withLogAddress), cutLateConnections).pipe(
        Layer.provide(NodeHttpServer.layer(() => server, { port: config.port, host: config.host })),
        Layer.mapError((error) => {
          const code = (error.cause as { code?: unknown } | undefined)?.code
          return new StartupError({
            message: code === "EADDRINUSE"
              ? `cannot listen on ${config.host}:${config.port}: the port is in use (set PORT to another port)`
              : `cannot listen on ${config.host}:${config.port}: ${errorText(error.cause)}`,
            cause: error
          })
        })
      )
    })
  )
