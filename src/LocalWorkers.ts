/**
 * The workers of this process, for enqueues to hand their jobs to. Provide
 * this layer to both the JobQueue and the Worker (the service does, in
 * main.ts): an enqueue outside a transaction, of a job type a local worker
 * handles while that worker has a free slot, then claims for the worker in
 * its own statement (enqueue_and_claim), and the worker starts the jobs when
 * the statement returns. That saves the trip of the notification to the
 * worker and the worker's own claim. Without the layer, or inside a
 * transaction (the job must not start before the caller commits), enqueues
 * only insert, and NOTIFY wakes the workers.
 */
import { Context, Effect, Layer, Scope } from "effect"
import type { ClaimedJob, ClaimFor } from "./internal/JobStore.js"

/** Slots of a worker reserved for one claim; exactly one of handOff or cancel ends it. */
export interface Reservation extends ClaimFor {
  /**
   * Starts the jobs claimed for the worker (there may be none) and frees the rest of the reservation.
   * `claimedAt` is the time the claim was made with, from which the jobs' leases run.
   */
  readonly handOff: (jobs: ReadonlyArray<ClaimedJob>, claimedAt: Date) => Effect.Effect<void>
  /** The statement failed: nothing was claimed. */
  readonly cancel: Effect.Effect<void>
}

/** What a worker offers to the enqueues of its process. */
export interface LocalWorker {
  readonly handles: (jobType: string) => boolean
  /** Reserves up to `wanted` free slots (at most a claim's batch size), or none while the worker stops or is full. */
  readonly reserve: (wanted: number) => Reservation | undefined
}

export class LocalWorkers extends Context.Tag("skiplock/LocalWorkers")<LocalWorkers, {
  /** Offers the worker to enqueues until the scope closes. */
  readonly add: (worker: LocalWorker) => Effect.Effect<void, never, Scope.Scope>
  /** Whether some worker of this process handles the job type (reservation aside). */
  readonly handles: (jobType: string) => boolean
  /** Reserves slots of the first worker that handles one of the job types and has any free. */
  readonly reserve: (jobTypes: ReadonlyArray<string>, wanted: number) => Reservation | undefined
}>() {}

export const make = Effect.sync(() => {
  const workers = new Set<LocalWorker>()
  return LocalWorkers.of({
    add: (worker) =>
      Effect.acquireRelease(
        Effect.sync(() => void workers.add(worker)),
        () => Effect.sync(() => void workers.delete(worker))
      ),
    handles: (jobType) => {
      for (const worker of workers) if (worker.handles(jobType)) return true
      return false
    },
    reserve: (jobTypes, wanted) => {
      for (const worker of workers) {
        if (!jobTypes.some(worker.handles)) continue
        const reservation = worker.reserve(wanted)
        if (reservation !== undefined) return reservation
      }
      return undefined
    }
  })
})

export const layer: Layer.Layer<LocalWorkers> = Layer.effect(LocalWorkers, make)
