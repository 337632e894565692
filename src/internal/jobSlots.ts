/**
 * A worker's jobs: the ones running in its `concurrency` handler slots, and the ones claimed ahead
 * (prefetch) waiting for a slot, in claim order. A job starts in a fiber of the worker's runtime,
 * whoever claimed it (the claim loop, or an enqueue of this process), and frees its slot when its
 * handler returns; its completion still rides on the claim loop's next statement. Plain code, not
 * Effects: it runs once per job, on the worker's hottest path.
 */
import { type Clock, Duration, Effect, type Fiber, FiberId, Metric } from "effect"
import type { Handler } from "../Handler.js"
import * as Metrics from "../Metrics.js"
import type { JobControl, Outcome } from "./executeJob.js"
import type { ClaimedJob } from "./JobStore.js"
import { untilNone } from "./untilNone.js"

export interface RunningJob {
  readonly job: ClaimedJob
  readonly control: JobControl
  /** It occupies one of the `concurrency` slots: until its handler succeeds, or else until its outcome is written. */
  handlerActive: boolean
  /** Its handler has returned: what a stop that finds the job still there tells apart (a handler, or its outcome). */
  handlerReturned: boolean
  fiber: Fiber.RuntimeFiber<Outcome> | undefined
  /** Clock time (ms) until which the lease is known to hold. */
  leaseValidUntil: number
  /** Clock time (ms) at which the handler times out. */
  readonly deadline: number
}

/** A job claimed ahead (prefetch), waiting for a slot. */
interface PrefetchedJob {
  readonly job: ClaimedJob
  /** Clock time (ms) until which the lease is known to hold. */
  leaseValidUntil: number
}

interface JobSlotsOptions {
  readonly concurrency: number
  readonly clock: Clock.Clock
  readonly handlerOf: (job: ClaimedJob) => Handler
  /** Runs one attempt (executeJob with the worker's environment) in a fiber of the worker's runtime. */
  readonly run: (handler: Handler, job: ClaimedJob, control: JobControl) => Fiber.RuntimeFiber<Outcome>
  /** Logs in the worker's runtime, from plain code. */
  readonly log: (effect: Effect.Effect<void>) => void
  /** The handler-timeout watcher, told of each job started. */
  readonly deadlines: { readonly started: (deadline: number) => void }
  /** A slot freed up: the claim loop may claim again. */
  readonly changed: () => void
}

export const make = (options: JobSlotsOptions) => {
  const { concurrency, clock, deadlines, changed } = options
  // The jobs started here, by id: the latest attempt of each.
  const running = new Map<string, RunningJob>()
  // Earlier attempts of jobs claimed here again while their handler still ran (the job was rescued while this
  // worker was stalled, or failed and requeued by an operator): stopped, and awaited like running jobs.
  const superseded = new Set<RunningJob>()
  // Claimed and not started yet, in claim order; they start as handler slots free up.
  const prefetched: Array<PrefetchedJob> = []
  let handlersRunning = 0
  // The shutdown waits for the running jobs.
  const noneRunning = untilNone(() => running.size + superseded.size)

  const entryOf = (job: ClaimedJob): RunningJob | undefined => {
    const latest = running.get(job.id)
    if (latest?.job === job) return latest
    for (const earlier of superseded) if (earlier.job === job) return earlier
    return undefined
  }
  // The job's completion (or its fiber's end) that follows wakes the claim loop.
  const handlerDone = (entry: RunningJob) => {
    if (!entry.handlerActive) return
    entry.handlerActive = false
    handlersRunning--
  }

  const start = ({ job, leaseValidUntil }: PrefetchedJob, startedAt: number) => {
    const handler = options.handlerOf(job)
    const entry: RunningJob = {
      job,
      control: { stopReason: undefined },
      handlerActive: true,
      handlerReturned: false,
      fiber: undefined,
      leaseValidUntil,
      deadline: startedAt + Duration.toMillis(handler.timeout)
    }
    const earlier = running.get(job.id)
    if (earlier !== undefined) supersede(earlier)
    running.set(job.id, entry)
    handlersRunning++
    const fiber = options.run(handler, job, entry.control)
    entry.fiber = fiber
    // When the job's fiber ends, however it ends.
    fiber.addObserver(() => {
      handlerDone(entry)
      if (running.get(job.id) === entry) running.delete(job.id)
      else superseded.delete(entry)
      changed()
      noneRunning.settled()
    })
    deadlines.started(entry.deadline)
  }
  // The database gave this worker a job whose earlier attempt still runs here: that attempt no longer holds
  // the job. It is stopped as one whose lease was lost (it records nothing), and keeps its slot until it ends.
  const supersede = (earlier: RunningJob) => {
    running.delete(earlier.job.id)
    superseded.add(earlier)
    if (earlier.control.stopReason !== undefined) return
    earlier.control.stopReason = "lease_lost"
    earlier.fiber?.unsafeInterruptAsFork(FiberId.none)
    options.log(
      Effect.logWarning("claimed a job again whose earlier attempt still ran here; stopping that attempt").pipe(
        Effect.annotateLogs({ jobId: earlier.job.id, attempt: earlier.job.attempts })
      )
    )
  }
  const canStart = (allowed: boolean) => allowed && handlersRunning < concurrency && prefetched.length > 0

  return {
    running,
    superseded,
    prefetched,
    noneRunning,
    entryOf,
    /** The handler of the job's attempt returned; its slot is free if `slotFree` (else when the job's fiber ends). */
    handlerReturned: (job: ClaimedJob, slotFree: boolean) => {
      const entry = entryOf(job)
      if (entry === undefined) return
      entry.handlerReturned = true
      if (slotFree) handlerDone(entry)
    },
    /** Handlers running now (each holds a slot). */
    handlersRunning: () => handlersRunning,
    /** Jobs started and not finished: running ones and superseded attempts still stopping. */
    size: () => running.size + superseded.size,
    /**
     * Starts prefetched jobs in claim order while slots are free (and `allowed`: the worker decides
     * whether a stop lets them start), at most `atMost` of them. A job whose lease ran out while it waited (the heartbeat could
     * not renew it) may have been rescued and claimed elsewhere: it is dropped, not started. Returns
     * what is left to record of the jobs dropped, if any.
     */
    startPrefetched: (allowed: boolean, atMost = Infinity): Effect.Effect<void> | undefined => {
      if (!canStart(allowed) || atMost <= 0) return undefined
      const at = clock.unsafeCurrentTimeMillis()
      let dropped: Array<ClaimedJob> | undefined
      for (let taken = 0; taken < atMost && canStart(allowed); taken++) {
        const next = prefetched.shift()!
        if (at < next.leaseValidUntil) start(next, at)
        else (dropped ??= []).push(next.job)
      }
      return dropped === undefined ? undefined : Effect.forEach(dropped, (job) =>
        Effect.zipRight(
          Metric.increment(Metrics.forJobType(Metrics.leasesLost, job.jobType)),
          Effect.logWarning("the lease of a prefetched job ran out before it could start; it will not start here").pipe(
            Effect.annotateLogs({ jobId: job.id })
          )
        ), { discard: true })
    }
  }
}
