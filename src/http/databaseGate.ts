/**
 * The HTTP endpoints' share of the service's pool: one connection for /readyz's check and one for /metrics'
 * queries (main.ts sizes the pool with HTTP_CONNECTIONS). An endpoint answers in time and leaves a query it
 * gave up on to be cancelled in the background, still holding its connection. Without a gate, a burst of
 * scrapes against a database that held their queries (a lock on a table they read) took every connection of
 * the pool: the worker's claims and heartbeats failed for want of one (leases lost, attempts spent), and
 * /readyz said the database was gone. A request that finds its endpoint's connection busy waits for it
 * within its own timeout; one that times out while waiting never sends its query.
 */
import { Effect } from "effect"
import type { RunningService } from "../app/ServiceState.js"

const ENDPOINTS = ["readiness", "metrics"] as const
export type Endpoint = (typeof ENDPOINTS)[number]

/** The pool's connections the endpoints may hold: one each. */
export const HTTP_CONNECTIONS = ENDPOINTS.length

const gates = new WeakMap<RunningService, Record<Endpoint, Effect.Semaphore>>()

/** Runs `effect` (one statement at a time) on the endpoint's connection of this service's pool. */
export const withinGate = (service: RunningService, endpoint: Endpoint) => <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.suspend(() => {
    let gate = gates.get(service)
    if (gate === undefined) {
      gate = Object.fromEntries(ENDPOINTS.map((name) => [name, Effect.unsafeMakeSemaphore(1)])) as Record<Endpoint, Effect.Semaphore>
      gates.set(service, gate)
    }
    return gate[endpoint].withPermits(1)(effect)
  })
