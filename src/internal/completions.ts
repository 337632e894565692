/**
 * Completions waiting for the claim loop's next statement. A job's fiber calls `complete` when its
 * handler succeeded and waits: the loop takes what has gathered (`take`) into its next
 * complete_and_claim and resumes each waiter with what became of its completion. One whose row
 * another transaction holds (0018: completions skip locked rows; mostly a heartbeat renewing the
 * lease, for a moment) is retried: first with the next statement, then after 10 ms, doubling up to 2 s.
 */
import type { SqlError } from "@effect/sql/SqlError"
import { Duration, Effect } from "effect"
import type { ClaimedJob } from "./JobStore.js"

/** What became of a completion: written, not the worker's job any more, or waiting for another transaction's row lock. */
export type Completion = "completed" | "lost" | "busy"

export interface Finished {
  readonly id: string
  readonly attempt: number
  /** The attempt's job, for the worker to check it still holds it before sending its completion. */
  readonly job?: ClaimedJob | undefined
  /** Resumes the job's fiber, which waits for this completion. */
  readonly done: (result: Effect.Effect<Completion, SqlError>) => void
}

export interface Completions {
  /** Waits until the job's completion is written: true, or false when the job is no longer this worker's. */
  readonly complete: (id: string, attempt: number, job?: ClaimedJob) => Effect.Effect<boolean, SqlError>
  /** Takes up to `max` waiting completions, oldest first, for the next statement. */
  readonly take: (max: number) => Array<Finished>
}

// A completion held up this long by another transaction's row lock is worth a warning (ms).
const BUSY_WARNING_AFTER = 1_000

/** `added` tells the claim loop that a completion waits. */
export const makeCompletions = (added: () => void): Completions => {
  const waiting: Array<Finished> = []
  const awaitCompletion = (id: string, attempt: number, job: ClaimedJob | undefined) =>
    Effect.async<Completion, SqlError>((done) => {
      waiting.push({ id, attempt, job, done })
      added()
    })
  const completeOnceUnlocked = (id: string, attempt: number, job: ClaimedJob | undefined) =>
    Effect.gen(function* () {
      let tries = 1
      let waited = 0
      while (true) {
        const completion = yield* awaitCompletion(id, attempt, job)
        if (completion !== "busy") return completion === "completed"
        const pause = Math.min(10 * 2 ** (tries - 1), 2_000)
        tries++
        yield* Effect.sleep(Duration.millis(pause))
        if (waited < BUSY_WARNING_AFTER && waited + pause >= BUSY_WARNING_AFTER) {
          yield* Effect.logWarning("the job's row is locked by another transaction; its completion waits").pipe(Effect.annotateLogs({ jobId: id }))
        }
        waited += pause
      }
    })
  return {
    // (Built without Effect.gen: it runs once per job.)
    complete: (id, attempt, job) =>
      Effect.flatMap(awaitCompletion(id, attempt, job), (completion) =>
        completion === "busy" ? completeOnceUnlocked(id, attempt, job) : Effect.succeed(completion === "completed")),
    take: (max) => waiting.splice(0, max)
  }
}
