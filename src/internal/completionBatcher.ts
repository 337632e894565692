/**
 * Completes the jobs of one worker in batches: completions that arrive while
 * a batch is being written go together into the next one. An idle worker
 * writes each completion at once (no added latency); a busy one writes one
 * statement for many jobs instead of one each.
 */
import type { SqlError } from "@effect/sql/SqlError"
import { Clock, Deferred, Effect, Queue } from "effect"
import type { JobStore } from "./JobStore.js"

interface Pending {
  readonly id: string
  readonly attempt: number
  readonly done: Deferred.Deferred<boolean, SqlError>
}

export interface CompletionBatcher {
  /** Completes the job; false when the worker no longer held it. */
  readonly complete: (jobId: string, attempt: number) => Effect.Effect<boolean, SqlError>
}

/** Starts the batcher in the current scope. */
export const make = (store: JobStore, workerId: string, maxBatch = 100) =>
  Effect.gen(function* () {
    const queue = yield* Queue.unbounded<Pending>()
    const writeBatch = Effect.gen(function* () {
      const batch = yield* Queue.takeBetween(queue, 1, maxBatch)
      const jobs = [...batch]
      const now = new Date(yield* Clock.currentTimeMillis)
      const result = yield* Effect.either(store.completeMany(workerId, jobs, now))
      for (const job of jobs) {
        if (result._tag === "Right") yield* Deferred.succeed(job.done, result.right.has(job.id))
        else yield* Deferred.fail(job.done, result.left)
      }
    })
    yield* Effect.forkScoped(Effect.forever(writeBatch))
    return {
      complete: (id, attempt) =>
        Effect.gen(function* () {
          const done = yield* Deferred.make<boolean, SqlError>()
          yield* Queue.offer(queue, { id, attempt, done })
          return yield* Deferred.await(done)
        })
    } satisfies CompletionBatcher
  })
