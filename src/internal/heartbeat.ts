/**
 * The worker's heartbeat: on each beat it renews the worker's registration and the leases of the jobs it
 * holds (running and prefetched), and stops the jobs it no longer holds, and the ones whose lease runs out
 * while the database cannot be reached. While the database cannot be reached it tries again every second
 * until the next beat is due, and says so (`unreachable`): the worker's rescue then waits, since this
 * worker's own leases may have run out unrenewed.
 *
 * It sees the worker's state through `HeartbeatOptions` only: the running jobs by id, the prefetched ones
 * (which it takes out of the list when it no longer holds them), and the lease of each, which it extends.
 */
import { Clock, Duration, Effect, type Either, Fiber, Metric } from "effect"
import * as Metrics from "../Metrics.js"
import { answeredWithin } from "./bounded.js"
import { isConnectionError } from "./connectionLoss.js"
import type { JobControl } from "./executeJob.js"
import type { ClaimedJob, JobStore } from "./JobStore.js"
import { makeOutageLog } from "./outageLog.js"

// A heartbeat that could not reach the database is tried again this often, until the next one is due.
const HEARTBEAT_RETRY = Duration.seconds(1)
// A heartbeat's try unanswered this long counts as one that could not reach the database (a host gone
// silent answers nothing, and a statement on its connection would wait until TCP gives up, ~15 minutes).
const HEARTBEAT_TRY_TIMEOUT = Duration.seconds(2)
// While heartbeats cannot reach the database, a job is stopped this long before its lease runs out:
// the next try could renew it no sooner.
const LEASE_STOP_AHEAD_MILLIS = Duration.toMillis(HEARTBEAT_RETRY) + Duration.toMillis(HEARTBEAT_TRY_TIMEOUT)

/**
 * What a worker says at start when its lease is no longer than the time it stops a job ahead of the lease's
 * end while cut off: then one heartbeat that cannot reach the database stops every running job.
 */
export const leaseWithoutSlack = (leaseDuration: Duration.Duration): string | undefined =>
  Duration.toMillis(leaseDuration) > LEASE_STOP_AHEAD_MILLIS
    ? undefined
    : `leaseDuration ${Duration.format(leaseDuration)} leaves no slack: a worker that cannot reach the database stops a job ` +
      `${Duration.format(Duration.millis(LEASE_STOP_AHEAD_MILLIS))} before its lease runs out, so one heartbeat that fails stops every ` +
      `running job; give it more than that (the default is 30s)`

/** A job the worker holds (claimed ahead, or started), and until when it knows it does. */
export interface Lease {
  readonly job: ClaimedJob
  /** Clock time (ms) until which the lease is known to hold; a heartbeat that renews it moves it on. */
  leaseValidUntil: number
}

/** A job started here: once the worker no longer holds it, its handler is stopped. */
export interface RunningLease extends Lease {
  readonly control: JobControl
  readonly fiber: Fiber.RuntimeFiber<unknown> | undefined
}

export interface HeartbeatOptions {
  readonly store: JobStore
  readonly workerId: string
  readonly clock: Clock.Clock
  readonly leaseDuration: Duration.Duration
  readonly heartbeatInterval: Duration.Duration
  /** The worker's row (maintenance.ts): registered again on every beat if it is not yet, and after the database lost it. */
  readonly registration: { readonly ensure: Effect.Effect<void>; readonly lost: Effect.Effect<void> }
  /** The jobs started here, by id: the latest attempt of each. */
  readonly running: ReadonlyMap<string, RunningLease>
  /** The jobs claimed ahead, in claim order. The heartbeat takes out, in place, those it no longer holds. */
  readonly prefetched: Array<Lease>
}

// What one heartbeat asked about, and when: its answer is about these attempts, not about one claimed
// again meanwhile. Every try asks anew: a retry that sent an older list would leave out a job started
// since, and the database would take the worker for having let go of it (the retry guard, 0025/0026).
interface Asked {
  readonly at: number
  readonly running: ReadonlyArray<RunningLease>
  readonly waiting: ReadonlySet<Lease>
  readonly ids: ReadonlyArray<string>
}
// One heartbeat try: what it asked about, and the database's answer or why there is none.
interface HeartbeatTry {
  readonly asked: Asked
  readonly answer: Either.Either<{ readonly held: ReadonlySet<string>; readonly registered: boolean }, unknown>
}

export const makeHeartbeat = (options: HeartbeatOptions) => {
  const { store, workerId, clock, leaseDuration, registration, running, prefetched } = options
  const heartbeatFailures = makeOutageLog("heartbeat")
  const heartbeatMillis = Duration.toMillis(options.heartbeatInterval)
  // The last heartbeat could not reach the database: this worker's leases may have run out unrenewed.
  let heartbeatUnreachable = false

  const ask = (): Asked => {
    const runningNow = [...running.values()]
    return {
      at: clock.unsafeCurrentTimeMillis(),
      running: runningNow,
      waiting: new Set(prefetched),
      ids: [...runningNow.map(({ job }) => job.id), ...prefetched.map(({ job }) => job.id)]
    }
  }

  // Stops the jobs the worker no longer holds, as one heartbeat's answer says: the database's, or while it
  // cannot be reached, the leases' own ends, stopping a job once its lease would run out before the next try
  // could renew it (a rescuer elsewhere may take the job from then on).
  const stopUnheld = ({ asked, answer }: HeartbeatTry) =>
    Effect.gen(function* () {
      const stopBefore = clock.unsafeCurrentTimeMillis() + LEASE_STOP_AHEAD_MILLIS
      const stillHeld = (id: string, holder: { leaseValidUntil: number }) => {
        if (answer._tag === "Left") return stopBefore < holder.leaseValidUntil
        if (!answer.right.held.has(id)) return false
        holder.leaseValidUntil = asked.at + Duration.toMillis(leaseDuration)
        return true
      }
      // A prefetched job the worker no longer holds is not started (another worker may rescue it meanwhile).
      // (Jobs claimed while the heartbeat was on its way were not asked about.) Taken out at once, before
      // anything yields: the claim loop may start or add prefetched jobs meanwhile.
      const dropped = prefetched.filter((waiting) => asked.waiting.has(waiting) && !stillHeld(waiting.job.id, waiting))
      if (dropped.length > 0) prefetched.splice(0, prefetched.length, ...prefetched.filter((waiting) => !dropped.includes(waiting)))
      for (const waiting of dropped) {
        yield* Metric.increment(Metrics.forJobType(Metrics.leasesLost, waiting.job.jobType))
        yield* Effect.logWarning("lost the lease of a prefetched job; it will not start here").pipe(Effect.annotateLogs({ jobId: waiting.job.id }))
      }
      const askedRunning = [...asked.running]
      // Asked about while prefetched, started meanwhile: the same attempt (the same job object), now running.
      for (const waiting of asked.waiting) {
        const entry = running.get(waiting.job.id)
        if (entry?.job === waiting.job && !askedRunning.includes(entry)) askedRunning.push(entry)
      }
      for (const entry of askedRunning) {
        const id = entry.job.id
        // Ended meanwhile, or superseded by a claim of the same job (already stopped).
        if (running.get(id) !== entry || stillHeld(id, entry)) continue
        if (entry.fiber !== undefined && entry.control.stopReason === undefined) {
          entry.control.stopReason = "lease_lost"
          yield* Effect.logWarning("lost the lease of a running job; stopping its handler").pipe(Effect.annotateLogs({ jobId: id }))
          yield* Fiber.interruptFork(entry.fiber)
        }
      }
    })

  // Bounded like a heartbeat's try: a database that went silent must not hold up the stops below.
  const ensureRegistered = Effect.ignore(answeredWithin(registration.ensure, HEARTBEAT_TRY_TIMEOUT))
  const heartbeat = Effect.gen(function* () {
    yield* ensureRegistered
    const due = yield* Clock.currentTimeMillis
    const tryOnce = Effect.suspend(() => {
      const asked = ask()
      return Effect.map(
        Effect.either(answeredWithin(store.heartbeat(workerId, asked.ids, new Date(asked.at), leaseDuration), HEARTBEAT_TRY_TIMEOUT)),
        (answer): HeartbeatTry => {
          heartbeatUnreachable = answer._tag === "Left" && isConnectionError(answer.left)
          return { asked, answer }
        }
      )
    })
    let tried = yield* tryOnce
    // While the database cannot be reached, ask again every second until the next beat is due: the leases
    // must be renewed as soon as it is back, before they run out and a rescuer (this worker's, too) takes the jobs.
    // (Not for other failures, a lock wait cut off say: asking more often would not help, and would add load.)
    while (heartbeatUnreachable && tried.asked.at + Duration.toMillis(HEARTBEAT_RETRY) < due + heartbeatMillis) {
      yield* stopUnheld(tried)
      yield* Effect.sleep(HEARTBEAT_RETRY)
      tried = yield* tryOnce
    }
    if (tried.answer._tag === "Right" && !tried.answer.right.registered) {
      yield* registration.lost
      yield* ensureRegistered
      // Again, now that there is a row to record in which jobs this worker holds (the rescuer spares them).
      tried = yield* tryOnce
    }
    yield* stopUnheld(tried)
    yield* tried.answer._tag === "Left" ? heartbeatFailures.failed(tried.answer.left) : heartbeatFailures.succeeded
  })

  // One beat at a time: the fixed-rate one and one asked for early (a job failed by hand) may meet.
  const oneAtATime = Effect.unsafeMakeSemaphore(1).withPermits(1)

  return {
    /** One heartbeat, with its retries while the database cannot be reached; run it on a fixed rate, or at once when asked. */
    beat: oneAtATime(heartbeat),
    /** Whether the last heartbeat try could not reach the database: this worker's leases may have run out unrenewed. */
    unreachable: (): boolean => heartbeatUnreachable
  }
}
