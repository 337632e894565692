/**
 * The worker's maintenance tasks that need none of its in-memory state: its registration, pruning
 * finished jobs (and workers long dead) and rescuing jobs whose lease expired. Each runs on its own fixed rate beside
 * the claim loop; a failure is logged as an outage and the task tries again at its next tick.
 */
import { Clock, Duration, Effect, Metric } from "effect"
import * as Metrics from "../Metrics.js"
import { answeredWithin } from "./bounded.js"
import type { JobStore } from "./JobStore.js"
import { makeOutageLog } from "./outageLog.js"

const PRUNE_BATCH = 1000
// At most this many expired jobs rescued per statement; the next tick takes the rest.
const RESCUE_BATCH = 100
// A rescue unanswered this long counts as failed, and the next tick tries again.
const RESCUE_TIMEOUT = Duration.seconds(5)
// A worker row unrenewed for this long (at least; ten leases if longer) belongs to a process that is gone.
const DEAD_WORKER_AFTER_MS = 3_600_000

/**
 * Deletes finished jobs past `retention` in batches of 1,000 (short transactions, no long lock on
 * the table), and forgets workers long dead. `retention` undefined keeps finished jobs forever.
 */
export const makePrune = (
  store: JobStore,
  options: { readonly retention: Duration.Duration | undefined; readonly leaseDuration: Duration.Duration; readonly interval: Duration.Duration }
) => {
  const failures = makeOutageLog("pruning finished jobs", options.interval)
  return Effect.gen(function* () {
    const at = yield* Clock.currentTimeMillis
    if (options.retention !== undefined) {
      const before = new Date(at - Duration.toMillis(options.retention))
      let pruned = 0
      while (true) {
        const n = yield* store.pruneFinished(before, PRUNE_BATCH)
        pruned += n
        if (n < PRUNE_BATCH) break
      }
      if (pruned > 0) yield* Effect.logDebug(`pruned ${pruned} finished job(s)`)
    }
    yield* store.forgetDeadWorkers(new Date(at - Math.max(Duration.toMillis(options.leaseDuration) * 10, DEAD_WORKER_AFTER_MS)))
  }).pipe(Effect.zipRight(failures.succeeded), Effect.catchAll(failures.failed))
}

/**
 * Gives jobs whose worker stopped renewing their lease back to the queue (rescue_expired_jobs fails them
 * on their last attempt instead, and completes those whose transactional run had committed), then calls
 * `rescued` so that the claim loop looks for them. A job it ends is counted as failed or completed here:
 * its dead worker never will.
 */
export const makeRescue = (store: JobStore, workerId: string, rescued: () => void, interval: Duration.Duration) => {
  const failures = makeOutageLog("rescuing expired jobs", interval)
  return Effect.gen(function* () {
    // Bounded: a statement sent as the database went silent would otherwise hold the rescue up long after it
    // is back (until TCP delivers it). One given up on and run late rescues less, not more: its time is older.
    const jobs = yield* answeredWithin(store.rescueExpired(workerId, new Date(yield* Clock.currentTimeMillis), RESCUE_BATCH), RESCUE_TIMEOUT)
    if (jobs.length === 0) return
    yield* Metric.incrementBy(Metrics.jobsRescued, jobs.length)
    const ended = jobs.filter((job) => job.status !== "pending")
    const typeOf = ended.length === 0 ? new Map<string, string>() : yield* store.jobTypesOf(ended.map((job) => job.id))
    for (const job of jobs) {
      const message = `rescued job whose worker ${job.deadWorker} stopped renewing its lease; now ${job.status}`
      const jobType = typeOf.get(job.id)
      if (jobType !== undefined) {
        yield* Metric.increment(Metrics.forJobType(job.status === "failed" ? Metrics.jobsFailed : Metrics.jobsCompleted, jobType))
      }
      // A job failed for good is an error, as when its own worker fails it.
      yield* (job.status === "failed" ? Effect.logError(message) : Effect.logWarning(message)).pipe(
        Effect.annotateLogs(jobType === undefined ? { jobId: job.id } : { jobId: job.id, jobType })
      )
    }
    rescued()
  }).pipe(Effect.zipRight(failures.succeeded), Effect.catchAll(failures.failed))
}

/**
 * The worker's row in `job_workers`, for operators and for the rescuer (which spares the jobs a live
 * worker reports holding). A worker that cannot register yet still runs; `ensure` registers it if that
 * has not worked yet (the heartbeat calls it on every beat), and `lost` makes it register again: the
 * heartbeat found the row gone (forget_dead_workers deletes a row left unrenewed for an hour).
 */
export const makeRegistration = (store: JobStore, worker: Parameters<JobStore["register"]>[0]) => {
  let registered = false
  const failures = makeOutageLog("registering the worker")
  const register = Effect.flatMap(Clock.currentTimeMillis, (at) => store.register(worker, new Date(at))).pipe(
    Effect.tap(() => Effect.sync(() => (registered = true))),
    Effect.zipRight(failures.succeeded),
    Effect.catchAll(failures.failed)
  )
  return {
    ensure: Effect.suspend(() => (registered ? Effect.void : register)),
    lost: Effect.zipRight(
      Effect.sync(() => (registered = false)),
      Effect.logWarning("the worker's registration was gone (forgotten as dead after a long outage?); registering again")
    )
  }
}
