/**
 * Where the service is in its life: starting (and waiting for what), running,
 * or stopping. The HTTP server starts first and reads this, so /healthz
 * answers while the database is still unreachable and /readyz says why it
 * is not ready yet; when the service stops it says so while the worker drains.
 */
import type { SqlClient } from "@effect/sql"
import { Context, Data, Effect, Layer, Ref } from "effect"
import type { Worker } from "../Worker.js"
import type { DatabaseInfo } from "./Database.js"

/** What the HTTP side needs from a running service. */
export interface RunningService {
  readonly sql: SqlClient.SqlClient
  readonly worker: Worker["Type"]
  readonly database: DatabaseInfo
  readonly concurrency: number
}

export type Phase = Data.TaggedEnum<{
  Starting: { readonly detail: string }
  Running: { readonly service: RunningService }
  Stopping: { readonly service: RunningService }
}>
export const Phase = Data.taggedEnum<Phase>()

export class ServiceState extends Context.Tag("skiplock/app/ServiceState")<ServiceState, Ref.Ref<Phase>>() {
  static readonly layer = Layer.effect(ServiceState, Ref.make<Phase>(Phase.Starting({ detail: "starting" })))
}

/** Records what start-up is waiting for (ignored once running). */
export const starting = (detail: string) =>
  Effect.flatMap(ServiceState, (state) => Ref.update(state, (phase) => (phase._tag === "Starting" ? Phase.Starting({ detail }) : phase)))

/** Marks the service running for as long as the scope is open, and stopping when it closes. */
export const running = (service: RunningService) =>
  Effect.flatMap(ServiceState, (state) =>
    Effect.acquireRelease(Ref.set(state, Phase.Running({ service })), () => Ref.set(state, Phase.Stopping({ service })))
  )
