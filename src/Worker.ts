/**
 * The worker: claims runnable jobs of the types it has handlers for and runs
 * them, at most `concurrency` at once. It claims on a poll (every 5 s), at
 * once again after a full claim while slots are free, and when a LISTEN
 * notification says a job was enqueued (what wakes it: internal/wakeups.ts;
 * the jobs it runs and holds ahead: internal/jobSlots.ts). The completions of finished jobs go
 * to the database with the next claim (complete_and_claim). Beside the claim
 * loop it renews the leases of its running jobs (heartbeat, in
 * internal/heartbeat.ts), rescues jobs whose lease expired (maintenance) and
 * stops handlers past their timeout (deadlines).
 * With `prefetch`, it also claims jobs ahead of free slots; they start as
 * handlers finish.
 *
 * Shutdown (closing the worker's scope): stop claiming, release prefetched
 * jobs that have not started, let running jobs
 * finish (the loop still writes their completions) for up to
 * `shutdownTimeout`, then interrupt the rest, which are released back to
 * `pending` without counting the attempt.
 */
import type { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Cause, Clock, Context, Duration, Effect, Fiber, Layer, Metric, Option, Queue, Runtime } from "effect"
import { randomBytes } from "node:crypto"
import { hostname } from "node:os"
import type { Handler, Requirements } from "./Handler.js"
import { LocalWorkers, type Reservation } from "./LocalWorkers.js"
import * as Metrics from "./Metrics.js"
import { type ClaimedJob, make as makeJobStore } from "./internal/JobStore.js"
import { waitAtMost } from "./internal/bounded.js"
import * as Deadlines from "./internal/deadlines.js"
import { makeCompletions, type Finished } from "./internal/completions.js"
import { executeJob, leaseRanOut, type Outcome } from "./internal/executeJob.js"
import { fixedRate } from "./internal/fixedRate.js"
import { leaseWithoutSlack, makeHeartbeat } from "./internal/heartbeat.js"
import { LET_GO, listenForJobs } from "./internal/listener.js"
import { makePrune, makeRegistration, makeRescue } from "./internal/maintenance.js"
import { makeOutageLog } from "./internal/outageLog.js"
import { sqlErrorText } from "./internal/sqlErrorText.js"
import { untilNone } from "./internal/untilNone.js"
import * as Wakeups from "./internal/wakeups.js"
import { make as makeJobSlots, type RunningJob } from "./internal/jobSlots.js"
import { check as checkOptions } from "./internal/workerOptions.js"

/** The worker's options. Each has bounds (README lists them; src/internal/workerOptions.ts holds them): `make` fails with InvalidWorkerOptions on one outside them. */
export interface WorkerOptions<Hs extends ReadonlyArray<Handler>> {
  readonly handlers: Hs
  /** Default: host, pid and a random suffix. */
  readonly workerId?: string
  /** How often to look for runnable jobs when nothing wakes the worker. Default 5 s (runbook). */
  readonly pollInterval?: Duration.DurationInput
  /** At most this many jobs per claim. Default 5 (runbook). */
  readonly batchSize?: number
  /** At most this many handlers running at once. Default 5. */
  readonly concurrency?: number
  /**
   * Jobs the worker may claim ahead, beyond its free handler slots: they wait in the worker (held,
   * `processing`, their lease renewed) and start in claim order as handlers finish, so the
   * database claims the next jobs while the current ones run. Costs: a job claimed ahead waits
   * behind running ones even when another worker is idle, and its `job_started` entry is written
   * at the claim. Default 0: a claimed job starts at once.
   */
  readonly prefetch?: number
  /** Retry n waits retryBackoff × n². Default 30 s (runbook). */
  readonly retryBackoff?: Duration.DurationInput
  /** How long a claimed job is held without a heartbeat. Default 30 s. */
  readonly leaseDuration?: Duration.DurationInput
  /** How often leases are renewed; shorter than leaseDuration, or leases run out between heartbeats. Default 10 s. */
  readonly heartbeatInterval?: Duration.DurationInput
  /** How often expired leases are looked for. Default 5 s. */
  readonly rescueInterval?: Duration.DurationInput
  /** Completed and failed jobs are deleted this long after they finished. Default 7 days; `"forever"` keeps them. */
  readonly retention?: Duration.DurationInput | "forever"
  /** How often finished jobs are pruned (in batches of 1,000). Default 1 minute. */
  readonly pruneInterval?: Duration.DurationInput
  /** How long running jobs may finish on shutdown before they are interrupted and released. Default 30 s. */
  readonly shutdownTimeout?: Duration.DurationInput
  /** React to LISTEN notifications. Default true. */
  readonly listen?: boolean
  /** Called with the jobs of each claim that found any (for tests and instrumentation). */
  readonly onClaim?: (jobs: ReadonlyArray<ClaimedJob>) => void
  /** Called after each attempt's outcome is recorded (for tests and instrumentation). */
  readonly onOutcome?: (job: ClaimedJob, outcome: Outcome) => void
}

export interface WorkerStatus {
  readonly workerId: string
  readonly jobTypes: ReadonlyArray<string>
  /** Jobs started and not yet finished (their handler runs, or their outcome is being written). */
  readonly running: number
  /** Jobs claimed and not started yet (prefetch). */
  readonly prefetched: number
  /** True while the claim loop runs. */
  readonly claiming: boolean
  /** When the last claim query succeeded (Clock time, ms), if ever. */
  readonly lastClaimAt: number | undefined
  /** While the loop waits: when its poll fires (Clock time, ms). Undefined while it claims. */
  readonly nextPollAt: number | undefined
}

export class Worker extends Context.Tag("skiplock/Worker")<Worker, {
  readonly workerId: string
  readonly status: Effect.Effect<WorkerStatus>
}>() {}

export const defaultWorkerId = () => `${hostname()}:${process.pid}:${randomBytes(3).toString("hex")}`

// On shutdown, how long the interrupted jobs' releases may take before the worker stops without them.
const RELEASE_TIMEOUT = Duration.seconds(5)
// Once the worker stops, a job's outcome is tried to be recorded this much longer at most.
const RECORD_WHILE_STOPPING_MILLIS = 3_000
// On shutdown, how long claims already sent may take to answer; one that answers later has its jobs released.
const CLAIMS_STOP_TIMEOUT = Duration.seconds(10)
// On shutdown, how long background tasks (claim loop, heartbeat, rescue, prune, listener) may take to stop, each group.
const BACKGROUND_STOP_TIMEOUT = Duration.seconds(2)
// At most this many completions go into one statement.
const MAX_COMPLETIONS = 100
// Statements sent and not yet answered: at least 2, and enough to claim for every slot (and every
// prefetched job) at once (a claim takes at most batchSize jobs). Finished jobs wait meanwhile and go together into the next.
const maxStatementsInFlight = (jobs: number, batchSize: number) => Math.max(2, Math.ceil(jobs / batchSize))

// On a stop, says which of the jobs interrupted are still there RELEASE_TIMEOUT later, and why: a handler
// that ignores its interruption, or a release the database holds up.
const reportNotStopped = (left: ReadonlyArray<RunningJob>) =>
  Effect.gen(function* () {
    const stillRunning = left.filter((entry) => !entry.handlerReturned && entry.fiber?.unsafePoll() === null)
    const notReleased = left.filter((entry) => !stillRunning.includes(entry) && entry.fiber?.unsafePoll() === null)
    const ids = (entries: ReadonlyArray<RunningJob>) => ({ jobIds: entries.map((entry) => entry.job.id).join(",") })
    if (stillRunning.length > 0) {
      yield* Effect.logWarning(
        `stopping: ${stillRunning.length} job(s) whose handler did not stop within ${Duration.format(RELEASE_TIMEOUT)} of its interruption ` +
          "(it runs code that cannot be interrupted: Effect.uninterruptible, an acquire or a finalizer); they stay processing " +
          "until their lease expires, and are then rescued with the attempt counted"
      ).pipe(Effect.annotateLogs(ids(stillRunning)))
    }
    if (notReleased.length > 0) {
      yield* Effect.logWarning(
        `stopping: ${notReleased.length} job(s) not released within ${Duration.format(RELEASE_TIMEOUT)} (a lock held elsewhere, or the database ` +
          "does not answer); they go back to pending when their lease expires"
      ).pipe(Effect.annotateLogs(ids(notReleased)))
    }
  })

/**
 * The database connections a worker may hold at once: one per running handler (a transactional one holds
 * its connection for the whole attempt), its statements in flight, the heartbeat, rescue and prune, and one
 * to spare. A pool smaller than this makes handlers wait for a connection, and a wait past the pool's
 * connect timeout fails their attempt as if the database were gone.
 */
export const connectionsNeeded = (options: { readonly concurrency?: number; readonly prefetch?: number; readonly batchSize?: number }) => {
  const concurrency = options.concurrency ?? 5
  return concurrency + maxStatementsInFlight(concurrency + (options.prefetch ?? 0), options.batchSize ?? 5) + 4
}

/** Starts a worker in the current scope; it stops when the scope closes. Bad options fail with InvalidWorkerOptions before anything starts. */
export const make = <const Hs extends ReadonlyArray<Handler>>(options: WorkerOptions<Hs>) =>
  Effect.gen(function* () {
    const {
      workerId, handlers, pollInterval, batchSize, concurrency, prefetch, retryBackoff, leaseDuration,
      heartbeatInterval, rescueInterval, shutdownTimeout, retention, pruneInterval
    } = yield* checkOptions(options, defaultWorkerId)
    const pgClient = yield* PgClient.PgClient
    const store = yield* makeJobStore
    const localWorkers = yield* Effect.serviceOption(LocalWorkers)
    // Jobs that enqueues of this process claim for the worker start here, with the worker's services.
    const workerRuntime = yield* Effect.runtime<SqlClient.SqlClient | Requirements<Hs>>()
    const runInWorker = Runtime.runFork(workerRuntime)
    // Read directly on the paths every job takes (TestClock in tests, like every Clock use here).
    const clock = yield* Effect.clock

    const jobTypes = [...handlers.keys()]
    // Each type's counters exist from the start at 0: a first failure after a restart is an increase.
    Metrics.startAtZero(jobTypes)

    // What wakes the claim loop.
    const wakeups = yield* Wakeups.make(pollInterval)
    // For status.
    let claiming = false
    let lastClaimAt: number | undefined
    let nextPollAt: number | undefined
    const now = Effect.map(Clock.currentTimeMillis, (ms) => new Date(ms))

    // Completions of finished jobs wait for the next statement the loop sends.
    const completions = makeCompletions(wakeups.changed)
    // Whether the worker still holds a job it started: its lease, as this worker knows it, has not run out.
    const leaseHeld = (job: ClaimedJob) => {
      const entry = slots.entryOf(job)
      return entry !== undefined && clock.unsafeCurrentTimeMillis() < entry.leaseValidUntil
    }
    // Whether an outcome that could not be written is tried again (see executeJob): while the lease is
    // held, and once the worker stops, for a few seconds more at most, so that a stop during an outage
    // is not held up by outcomes that cannot be written.
    const holds = (job: ClaimedJob) =>
      leaseHeld(job) && (stoppedAt === undefined || clock.unsafeCurrentTimeMillis() < stoppedAt + RECORD_WHILE_STOPPING_MILLIS)
    // A completion is sent only while its job is held: one that waited past the lease (the database
    // was gone) could otherwise complete the job's next run, the same attempt number claimed again.
    const takeCompletions = (max: number) =>
      completions.take(max).filter((finished) => {
        if (finished.job === undefined || leaseHeld(finished.job)) return true
        finished.done(Effect.fail(leaseRanOut()))
        return false
      })
    const deadlines = yield* Deadlines.make(() => slots.running.values())
    const env = {
      workerId,
      store,
      retryBackoff,
      holds,
      onOutcome: options.onOutcome,
      complete: completions.complete,
      watchesTimeouts: true,
      handlerDone: (job: ClaimedJob, slotFree: boolean) => slots.handlerReturned(job, slotFree)
    }

    // The jobs running and claimed ahead. A job gets the worker's services and runs on when the fiber
    // that claimed it (the loop's statement, or an enqueue of this process) ends.
    const slots = makeJobSlots({
      concurrency,
      clock,
      handlerOf: (job) => handlers.get(job.jobType)!,
      // The handler's requirements are in the worker's context (make requires them), which the job's
      // fiber gets with the worker's runtime: providing them again cost ~20 Effect steps a job.
      // The worker's runtime may be uninterruptible (layers are built so): the job's own fiber must not be.
      // (Started on the scheduler's next turn, as a fork would: the claimer first finishes its own bookkeeping.)
      run: (handler, job, control) =>
        runInWorker(Effect.interruptible(executeJob(handler as Handler<string, unknown, unknown, Requirements<Hs>>, job, env, control)), { immediate: false }),
      log: (effect) => void runInWorker(effect, { immediate: false }),
      deadlines,
      changed: wakeups.changed
    })
    const { running, superseded, prefetched } = slots
    // Once the worker stops, only a claim on its way when it stopped still starts jobs, for the slots it
    // claimed for; the finalizer releases the prefetched ones.
    const startPrefetched = (whileStopping: boolean) => slots.startPrefetched(whileStopping || !stopping)

    // Every statement the loop sends completes the jobs that finished since the last one and claims
    // jobs for the slots free once they are done: a busy worker needs one round trip and one commit
    // per batch of jobs, not one to complete and another to claim. Statements run in their own
    // fibers, so that while one waits for the database the next can already be prepared; each
    // reserves the slots it claims for (see claimable).
    let reserved = 0
    // How many more jobs the worker may claim: running handlers, prefetched jobs and claims on their way stay within
    // concurrency + prefetch. A job whose handler returned no longer counts: its completion goes with the next
    // statement, which claims for its slot (so without prefetch, running handlers + reserved ≤ concurrency).
    const claimable = () => concurrency + prefetch - slots.handlersRunning() - prefetched.length - reserved
    // Whether runnable jobs probably wait: the last claim came back full, or a poll or a
    // notification says to look. A claim that comes back short clears it.
    let moreLikely = true
    // Counts the looks; a claim sent before the latest look cannot tell that the queue is empty
    // (a notification that arrives while a claim is on its way is about a job it may have missed).
    let looks = 0
    // Set on shutdown: statements then only complete jobs.
    let stopping = false
    // Set once the stop no longer waits for claims on their way (see claimed).
    let claimsAbandoned = false
    let stoppedAt: number | undefined
    const claimFailures = makeOutageLog("claiming jobs", pollInterval)
    const statementsInFlight = maxStatementsInFlight(concurrency + prefetch, batchSize)
    const inFlight = new Set<Fiber.RuntimeFiber<void>>()
    // Claims decided and not yet answered, counted from the decision on (the loop may pause between deciding
    // and forking): a stop waits until none is left, so no claim's jobs arrive after it has released the prefetched.
    let claimsOnTheirWay = 0
    const noClaimsOnTheirWay = untilNone(() => claimsOnTheirWay)

    // The claim's jobs are this worker's whatever an instrumentation callback does: one that throws is logged,
    // and the jobs run (thrown through, it lost them until their leases ran out, and a hand-off its slots).
    const tellClaim = (jobs: ReadonlyArray<ClaimedJob>): Effect.Effect<void> | undefined => {
      try {
        options.onClaim?.(jobs)
        return undefined
      } catch (thrown) {
        return Effect.logWarning("the worker's onClaim callback threw; the claimed jobs run as usual", Cause.die(thrown))
      }
    }
    // Takes the jobs of a claim that succeeded and starts what it can at once; returns what is left to log, if anything.
    // Their leases run from `claimedAt`, the time the claim was sent with, as in the database: counted from
    // the answer instead, a claim slow to answer would stretch them past the time the rescuer goes by.
    const claimed = (jobs: ReadonlyArray<ClaimedJob>, claimedAt: Date, forSlots: number): Effect.Effect<void> | undefined => {
      lastClaimAt = clock.unsafeCurrentTimeMillis()
      let toLog = claimFailures.reported() ? claimFailures.succeeded : undefined
      if (jobs.length === 0) return toLog
      const told = tellClaim(jobs)
      if (told !== undefined) toLog = toLog === undefined ? told : Effect.zipRight(toLog, told)
      // Counted here, not when the job starts: with prefetch, jobs claimed ahead and released on a stop count too.
      for (const job of jobs) Metrics.forJobType(Metrics.jobsClaimed, job.jobType).unsafeUpdate(1, [])
      // A claim that answered after the stop gave up waiting for it: nothing would renew these jobs' leases
      // or record their outcomes. They go back to pending unstarted, their attempt not counted.
      if (claimsAbandoned) {
        const late = Effect.zipRight(
          Effect.logWarning(`stopping: a claim answered after the stop stopped waiting for it; releasing its ${jobs.length} job(s) unstarted`),
          Effect.forEach(jobs, releaseNotStarted, { discard: true })
        )
        return toLog === undefined ? late : Effect.zipRight(toLog, late)
      }
      const leaseValidUntil = claimedAt.getTime() + Duration.toMillis(leaseDuration)
      const entries = jobs.map((job) => ({ job, leaseValidUntil }))
      let dropped: Effect.Effect<void> | undefined
      if (stopping) {
        // During a stop only this claim's own jobs start, in the handler slots it was made for: jobs claimed
        // ahead, before the stop or by this claim, wait in `prefetched`, which the stop releases unstarted.
        const starting = Math.min(forSlots, entries.length)
        prefetched.unshift(...entries.slice(0, starting))
        dropped = slots.startPrefetched(true, starting)
        prefetched.push(...entries.slice(starting))
      } else {
        prefetched.push(...entries)
        dropped = startPrefetched(true)
      }
      if (dropped !== undefined) toLog = toLog === undefined ? dropped : Effect.zipRight(toLog, dropped)
      return toLog
    }
    // A claim of the loop's own that came back full, or was sent before the latest look, may have left jobs waiting.
    // (A claim made by an enqueue says nothing about that: the jobs it left pending were announced with NOTIFY.)
    const claimedByLoop = (jobs: ReadonlyArray<ClaimedJob>, claimedAt: Date, requested: number, forSlots: number, looksWhenSent: number) =>
      Effect.suspend(() => {
        const toLog = claimed(jobs, claimedAt, forSlots)
        moreLikely = jobs.length === requested || looks !== looksWhenSent
        return toLog ?? Effect.void
      })

    // Claims of enqueues of this process (LocalWorkers) not yet handed off or cancelled; shutdown awaits them.
    let enqueueClaims = 0
    const noEnqueueClaims = untilNone(() => enqueueClaims)
    const reserveForEnqueue = (wanted: number): Reservation | undefined => {
      // Only for jobs that can start at once: a handler slot and room to hold them.
      const limit = Math.min(batchSize, wanted, concurrency - slots.handlersRunning() - prefetched.length - reserved)
      if (stopping || limit <= 0) return undefined
      reserved += limit
      enqueueClaims++
      let ended = false
      const end = () => {
        if (ended) return
        ended = true
        reserved -= limit
        enqueueClaims--
        noEnqueueClaims.settled()
        wakeups.changed()
      }
      return {
        workerId,
        jobTypes,
        limit,
        lease: leaseDuration,
        // The jobs start in fibers of the worker's (see jobSlots); what is left to log, if anything, too.
        handOff: (jobs, claimedAt) =>
          Effect.sync(() => {
            let toLog: Effect.Effect<void> | undefined
            try {
              toLog = claimed(jobs, claimedAt, limit) // reserved for jobs that can start at once
            } finally {
              end() // the reserved slots are given back however the hand-over went
            }
            if (toLog !== undefined) runInWorker(toLog, { immediate: false })
          }),
        cancel: Effect.sync(end)
      }
    }

    // `reservedSlots` is what the claim asks for; `forSlots`, how many of those were free handler slots when
    // it was decided (the rest is prefetch room).
    const send = (batch: ReadonlyArray<Finished>, reservedSlots: number, forSlots: number) =>
      Effect.gen(function* () {
        // A stop that began since the loop decided: complete only.
        const requested = stopping ? 0 : reservedSlots
        const at = yield* now
        const looksWhenSent = looks
        if (batch.length === 0) {
          if (requested === 0) return
          return yield* claimedByLoop(yield* store.claim(workerId, jobTypes, requested, at, leaseDuration), at, requested, forSlots, looksWhenSent)
        }
        const result = yield* store.completeAndClaim(workerId, batch, jobTypes, requested, at, leaseDuration)
        for (const job of batch) {
          job.done(Effect.succeed(result.completed.has(job.id) ? "completed" : result.busy.has(job.id) ? "busy" : "lost"))
        }
        if (requested > 0) yield* claimedByLoop(result.claimed, at, requested, forSlots, looksWhenSent)
      }).pipe(
        Effect.catchAll((error) =>
          Effect.gen(function* () {
            // The jobs' own fibers retry their completion; claims wait for the poll.
            for (const job of batch) job.done(Effect.fail(error))
            if (reservedSlots === 0) return
            moreLikely = false
            yield* claimFailures.failed(error)
          })
        ),
        Effect.ensuring(Effect.sync(() => {
          reserved -= reservedSlots
          wakeups.changed()
          if (reservedSlots === 0) return
          claimsOnTheirWay--
          noClaimsOnTheirWay.settled()
        })),
        // A statement that reached the database is seen through, also while the worker stops:
        // its jobs then count as running and are awaited or released like the others.
        Effect.uninterruptible
      )

    const claimLoop = Effect.gen(function* () {
      claiming = true
      while (true) {
        const dropped = startPrefetched(false)
        if (dropped !== undefined) yield* dropped
        if (inFlight.size < statementsInFlight) {
          const batch = takeCompletions(MAX_COMPLETIONS)
          const free = claimable()
          const requested = !stopping && moreLikely && jobTypes.length > 0 ? Math.min(batchSize, Math.max(0, free)) : 0
          if (batch.length > 0 || requested > 0) {
            // Counting the other claims' reservations as slots first: a stop starts no more than this.
            const forSlots = Math.max(0, Math.min(requested, concurrency - slots.handlersRunning() - prefetched.length - reserved))
            reserved += requested
            if (requested > 0) claimsOnTheirWay++
            const fiber = yield* Effect.forkDaemon(send(batch, requested, forSlots))
            inFlight.add(fiber)
            fiber.addObserver(() => inFlight.delete(fiber))
            continue
          }
        }
        // Idle until something happens; then take everything that happened at once.
        if (claimsOnTheirWay === 0 && !stopping) nextPollAt = wakeups.nextPollAt()
        const looked = yield* wakeups.next
        nextPollAt = undefined
        if (looked) {
          moreLikely = true
          looks++
        }
      }
    }).pipe(Effect.ensuring(Effect.sync(() => void (claiming = false))))

    const releaseNotStarted = (job: ClaimedJob) =>
      Effect.flatMap(now, (at) => store.release(job.id, workerId, job.attempts, at, "worker shutdown")).pipe(
        Effect.tap((released) => (released ? Metric.increment(Metrics.forJobType(Metrics.jobsReleased, job.jobType)) : Effect.void)),
        Effect.catchAll((error) => Effect.logWarning(`could not release a prefetched job; it goes back to pending when its lease expires: ${sqlErrorText(error)}`)),
        Effect.annotateLogs({ jobId: job.id })
      )

    const registration = makeRegistration(store, { workerId, host: hostname(), pid: process.pid, jobTypes, concurrency })
    const heartbeat = makeHeartbeat({ store, workerId, clock, leaseDuration, heartbeatInterval, registration, running, prefetched })

    const prune = makePrune(store, { retention, leaseDuration, interval: pruneInterval })
    // Not while this worker's heartbeat cannot reach the database: its own leases may have run out
    // unrenewed, and after an outage the rescue may come before the heartbeat that renews them.
    const rescueExpired = makeRescue(store, workerId, wakeups.look, rescueInterval)
    const rescue = Effect.suspend(() => (heartbeat.unreachable() ? Effect.void : rescueExpired))

    yield* registration.ensure

    const handledTypes = new Set(jobTypes)
    // A job this worker holds was failed by hand (0036): a heartbeat at once stops its handler, or drops it
    // before it starts if it was claimed ahead, rather than the next one, up to heartbeatInterval later.
    const letGo = `${LET_GO}${workerId}`
    const beatsAsked = yield* Queue.sliding<void>(1)
    const listenerFiber = options.listen === false
      ? undefined
      : yield* listenForJobs(pgClient.config, (payload) => {
          if (payload === letGo) beatsAsked.unsafeOffer(undefined)
          else if (payload === "" || handledTypes.has(payload)) wakeups.notified()
        }).pipe(Effect.forkDaemon)
    const loopFiber = yield* Effect.forkDaemon(claimLoop)
    const pollerFiber = yield* Effect.forkDaemon(wakeups.poller)
    const looksAgainFiber = yield* Effect.forkDaemon(wakeups.looksAgain)
    const heartbeatFiber = yield* Effect.forkDaemon(fixedRate(heartbeatInterval, heartbeat.beat))
    const askedBeatFiber = yield* Effect.forkDaemon(Effect.forever(Effect.zipRight(Queue.take(beatsAsked), heartbeat.beat)))
    const rescueFiber = yield* Effect.forkDaemon(fixedRate(rescueInterval, rescue))
    const pruneFiber = yield* Effect.forkDaemon(fixedRate(pruneInterval, prune))
    const deadlineFiber = yield* Effect.forkDaemon(deadlines.watch)

    // The stop (the module comment says what it does), run when the worker's scope closes.
    const shutdown = Effect.gen(function* () {
      // The loop goes on writing the completions of the jobs still running, but claims no more.
      stopping = true
      stoppedAt = clock.unsafeCurrentTimeMillis()
      claiming = false
      yield* Fiber.interruptAll([pollerFiber, looksAgainFiber])
      // Claims already sent finish first, so that their jobs are awaited or released below.
      const claimsAnswered = yield* waitAtMost(Effect.zip(noClaimsOnTheirWay.await, noEnqueueClaims.await), CLAIMS_STOP_TIMEOUT)
      if (!claimsAnswered) {
        claimsAbandoned = true
        yield* Effect.logWarning(
          `stopping: a claim sent before the stop has not answered within ${Duration.format(CLAIMS_STOP_TIMEOUT)}; ` +
            "if it still does, its jobs are released unstarted"
        )
      }
      // Jobs claimed and not started go back to pending at once, their attempt not counted.
      const notStarted = prefetched.splice(0)
      if (notStarted.length > 0) {
        const released = yield* waitAtMost(Effect.forEach(notStarted, ({ job }) => releaseNotStarted(job), { discard: true }), RELEASE_TIMEOUT)
        if (!released) yield* Effect.logWarning("stopping: prefetched jobs not all released in time; they go back to pending when their lease expires")
      }
      // Background tasks stop at once, unless one is in a query: interrupting it cancels the query on the
      // server, through the same pool, which a database that stopped answering never gives back.
      yield* waitAtMost(
        Fiber.interruptAll(listenerFiber === undefined ? [rescueFiber, pruneFiber, askedBeatFiber] : [listenerFiber, rescueFiber, pruneFiber, askedBeatFiber]),
        BACKGROUND_STOP_TIMEOUT
      )
      if (slots.size() > 0) {
        yield* Effect.logInfo(`stopping: waiting up to ${Duration.toMillis(shutdownTimeout) === 0 ? "0s" : Duration.format(shutdownTimeout)} for ${slots.size()} running job(s)`)
        yield* waitAtMost(slots.noneRunning.await, shutdownTimeout)
      }
      const left = [...running.values(), ...superseded]
      for (const entry of left) entry.control.stopReason ??= "shutdown"
      // Releasing (or completing) a job can wait on its row, locked by someone else's open transaction:
      // a stop must end anyway. A job still held then comes back when its lease expires.
      const released = yield* waitAtMost(Fiber.interruptAll(left.flatMap((entry) => (entry.fiber ? [entry.fiber] : []))), RELEASE_TIMEOUT)
      if (!released) yield* reportNotStopped(left)
      yield* waitAtMost(Fiber.interruptAll([loopFiber, deadlineFiber, heartbeatFiber]), BACKGROUND_STOP_TIMEOUT)
      yield* waitAtMost(store.unregister(workerId), "5 seconds")
      // The last line of a clean stop, for whoever reads the log to confirm one.
      yield* Effect.logInfo("worker stopped")
    }).pipe(Effect.annotateLogs({ workerId }))
    yield* Effect.addFinalizer(() => shutdown)

    // Added after the finalizer above, so removed before it runs: no enqueue reserves slots once the worker stops.
    if (Option.isSome(localWorkers)) yield* localWorkers.value.add({ handles: (jobType) => handledTypes.has(jobType), reserve: reserveForEnqueue })

    yield* Effect.logInfo(`worker started for job types: ${jobTypes.join(", ") || "none"}`).pipe(
      Effect.annotateLogs({ workerId, concurrency, batchSize, pollInterval: Duration.format(pollInterval) })
    )
    const noSlack = leaseWithoutSlack(leaseDuration)
    if (noSlack !== undefined) yield* Effect.logWarning(noSlack).pipe(Effect.annotateLogs({ workerId }))

    return Worker.of({
      workerId,
      status: Effect.sync(() => ({ workerId, jobTypes, running: slots.size(), prefetched: prefetched.length, claiming, lastClaimAt, nextPollAt }))
    })
  }).pipe(Effect.annotateLogs({ component: "worker" }))

/** The worker as a layer; its requirements are the database and what its handlers need. */
export const layer = <const Hs extends ReadonlyArray<Handler>>(options: WorkerOptions<Hs>) =>
  Layer.scoped(Worker, make(options))
