/**
 * The testing kit for handler authors. `SkiplockTest.layer({ handlers })` gives
 * a fresh, migrated database (the same chain as skiplock's own tests), a
 * `JobQueue`, `Audit`, and this service; the database is dropped when the
 * layer's scope closes. Jobs run through the runtime's own path, from the
 * test's fiber: `claim_next_job` (JobStore) and `executeJob` (decode,
 * transaction, `job_runs`, audit), on the test's Clock, which must be the
 * TestClock: `drain` moves it through backoff and scheduled `run_at`, so a
 * test never waits for real time.
 *
 * Time: the layer sets the TestClock to the wall-clock time when it is built
 * (or `startAt`). Jobs enqueued through JobQueue take their times from the
 * Clock; rows inserted by hand get the database's now(), a little ahead of the
 * TestClock (which does not follow real time): call `syncClock` before
 * draining them, or give them a `run_at`.
 */
import { SqlClient } from "@effect/sql"
import type { SqlError } from "@effect/sql/SqlError"
import type { PgClient } from "@effect/sql-pg"
import { Chunk, Clock, Context, Data, Duration, Effect, Either, Fiber, Layer, Option, Schema, Scope, TestClock, TestServices } from "effect"
import { resolve } from "node:path"
import * as Audit from "../Audit.js"
import { InvalidPayload } from "../Errors.js"
import type { Handler, Requirements } from "../Handler.js"
import type { CurrentJob } from "../JobContext.js"
import * as JobQueue from "../JobQueue.js"
import { coreMigrations, type MigrationError } from "../Migrator.js"
import { waitAtMost } from "../internal/bounded.js"
import { executeJob, type JobControl, type Outcome } from "../internal/executeJob.js"
import { type ClaimedJob, make as makeJobStore } from "../internal/JobStore.js"
import { duration as checkDuration, handlerTimeoutProblem } from "../internal/workerOptions.js"
import { DrainLimitExceeded, type DrainResult, drainedJob, type JobAttempt, makeResult } from "./Drain.js"
import * as Faults from "./Faults.js"
import { EnqueuedAssertionError, enqueuedMessage, type JobFilter, matches, notEnqueuedMessage } from "./JobMatch.js"
import * as JobRecords from "./JobRecords.js"
import type { JobRecord } from "./JobRecords.js"
import type { NoPostgresServer } from "./PostgresServer.js"
import { TestDatabase, type TestDatabaseError, type TestDatabaseOptions } from "./TestDatabase.js"

/** The organization `runJob` uses when the test names none. */
export const TEST_ORGANIZATION_ID = "00000000-0000-4000-8000-00000000000a"

/** The worker id the kit claims jobs as (in `locked_by`, `job_runs.worker_id` and audit entries). */
export const TEST_WORKER_ID = "skiplock-test"

// The kit runs one job at a time in the test's fiber and never leaves one half-done, but it renews no lease: a
// Worker started in the same test would rescue a job whose lease ran out while its handler still ran (a 5-minute
// lease did so to a handler waiting 10 minutes on the TestClock). So it claims for longer than any handler runs.
const LEASE = Duration.days(365 * 100)

// How long (real time) the layer's close waits for the jobs it stops to be released.
const STOP_TIMEOUT = Duration.seconds(10)
// The latest time a JavaScript Date holds (year 275760).
const LATEST_DATE_MILLIS = 8.64e15

export interface SkiplockTestOptions<Hs extends ReadonlyArray<Handler>> {
  /** The handlers `drain` and inline mode run; their job types must be registered (see `registerJobTypes`). */
  readonly handlers: Hs
  /** Your migration folders, applied after skiplock's core migrations (which are always applied first). */
  readonly migrations?: ReadonlyArray<string>
  /** Enqueueing through the layer's JobQueue runs the handler at once, in the enqueuer's fiber. Default false. */
  readonly inline?: boolean
  /** Where the TestClock starts. Default: the wall-clock time when the layer is built. */
  readonly startAt?: Date
  /** Retry n waits retryBackoff × n², as the Worker's option of the same name, and within its bounds (0 to 24 days). Default 30 s. */
  readonly retryBackoff?: Duration.DurationInput
  /**
   * Add the handlers' job types to `job_types` when no migration did. Default false: a missing
   * type fails the layer, because production would refuse those jobs too.
   */
  readonly registerJobTypes?: boolean
  /** Options for the fresh database (server, pool size); its migrations come from `migrations`. */
  readonly database?: Omit<TestDatabaseOptions, "migrations">
}

export interface DrainOptions {
  /**
   * How far the drain may move the TestClock forward from where it starts, to reach retries and
   * scheduled jobs. Default 0: only jobs due now run (and the jobs they enqueue for now).
   */
  readonly maxAdvance?: Duration.DurationInput
  /** Fail with DrainLimitExceeded after this many attempts with work still due. Default 1000. */
  readonly maxRuns?: number
}

export interface RunJobOptions extends Omit<JobQueue.EnqueueOptions, "organizationId" | "runAt"> {
  /** Default: TEST_ORGANIZATION_ID. */
  readonly organizationId?: string
}

export interface EnqueuedAssertion<A = any> extends JobFilter<A> {
  /** Exactly this many jobs must match. Default: at least one. */
  readonly count?: number
}

/**
 * runJob's idempotency key belongs to a job enqueued before: the queue returned that job instead of
 * enqueueing another (as it does for any enqueue), so there is no new job to run.
 */
export class JobAlreadyEnqueued extends Data.TaggedError("JobAlreadyEnqueued")<{
  readonly jobId: string
  readonly idempotencyKey: string
  readonly status: string
}> {
  override get message() {
    return `runJob: a job with idempotency key "${this.idempotencyKey}" exists already (${this.jobId}, ${this.status}): ` +
      "the queue returned it instead of enqueueing another, so there is no new job to run; use another key, or drain to run a pending one"
  }
}

/** `handlerWaiting`: no job the kit runs reached its handler, with its timeout and the sleeps asked for on the TestClock, in time. */
export class HandlerNotWaiting extends Data.TaggedError("HandlerNotWaiting")<{
  readonly message: string
}> {}

export interface HandlerWaitingOptions {
  /** How many sleeps besides the handler's timeout must wait on the TestClock (the handler's own `Effect.sleep`). Default 0. */
  readonly sleeps?: number
  /** How long to wait, in real time. Default 10 s. */
  readonly within?: Duration.DurationInput
}

/** The layer cannot be used as configured (a handler's job type is not registered, two handlers for one type). */
export class SkiplockTestSetupError extends Data.TaggedError("SkiplockTestSetupError")<{
  readonly message: string
}> {}

export interface SkiplockTestService {
  /** The handlers the kit runs (wrapped for `failNext`). */
  readonly handlers: ReadonlyArray<Handler>
  /**
   * Runs every runnable job that has a handler, one at a time, until none is due, jobs the handlers
   * enqueue included. When nothing is due it moves the TestClock to the next `run_at` (a retry's
   * or a scheduled job's) as long as that lies within `maxAdvance`. Returns what happened to each job.
   */
  readonly drain: (options?: DrainOptions) => Effect.Effect<DrainResult, DrainLimitExceeded | SqlError>
  /**
   * Enqueues one job for the handler with this payload and runs one attempt of it, through the real
   * path (claim, decode, transaction, `job_runs`, audit). A failed attempt's outcome carries the retry's `runAt`.
   */
  readonly runJob: <A, E, R>(
    handler: Handler<string, A, E, R>,
    payload: NoInfer<A>,
    options?: RunJobOptions
  ) => Effect.Effect<JobAttempt, JobQueue.EnqueueError | JobAlreadyEnqueued, Exclude<R, CurrentJob>>
  /**
   * Waits, in real time, until a job the kit runs (in a forked drain or runJob) is in its handler with the
   * handler's timeout set on the TestClock, and `sleeps` more sleeps wait on it: from then on
   * `TestClock.adjust` reaches them. Moving the clock before that is a race the clock may win: the
   * timeout (or the handler's sleep) is then set after the clock moved, and the test hangs.
   */
  readonly handlerWaiting: (options?: HandlerWaitingOptions) => Effect.Effect<void, HandlerNotWaiting>
  /** Runs the effect with a JobQueue in inline mode: each enqueue runs its handler at once. */
  readonly inline: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, Exclude<R, JobQueue.JobQueue>>
  /** The jobs in the queue (any status unless the filter says), oldest first. */
  readonly enqueued: <A = any>(filter?: JobFilter<A>) => Effect.Effect<ReadonlyArray<JobRecord>, SqlError>
  /** Fails, listing what was enqueued instead and how each job differs, unless a job (or `count` jobs) matches. Returns the matches. */
  readonly assertEnqueued: <A = any>(assertion: EnqueuedAssertion<A>) => Effect.Effect<ReadonlyArray<JobRecord>, EnqueuedAssertionError | SqlError>
  /** Fails, listing the matching jobs, if any job matches. */
  readonly assertNotEnqueued: <A = any>(filter: JobFilter<A>) => Effect.Effect<void, EnqueuedAssertionError | SqlError>
  /** The next `times` attempts of the job type fail with `error` (a typed failure) before the handler runs. */
  readonly failNext: (jobType: Faults.JobTypeRef, times: number, error: unknown) => Effect.Effect<void>
  /** Injected failures not used yet, for the job type. */
  readonly remainingFailures: (jobType: Faults.JobTypeRef) => Effect.Effect<number>
  /** Forgets every injected failure not used yet. */
  readonly clearFailures: Effect.Effect<void>
  /** The handler with `failNext` applied, for a Worker the test starts itself. */
  readonly withFailures: <H extends Handler>(handler: H) => H
  /** Every attempt the kit ran (drain, runJob, inline mode), in order. */
  readonly attempts: Effect.Effect<ReadonlyArray<JobAttempt>>
  /** Moves the TestClock forward to the wall-clock time (never back), e.g. after inserting rows by hand. */
  readonly syncClock: Effect.Effect<void>
  /**
   * For tests that share one layer (`it.layer`): empties job_queue and job_runs and forgets injected
   * failures and recorded attempts. audit_logs is append-only and keeps its rows; your own tables are yours.
   */
  readonly reset: Effect.Effect<void, SqlError>
  /** The JobQueue that leaves jobs for `drain`. */
  readonly queue: JobQueue.JobQueue["Type"]
  /** The JobQueue in inline mode. */
  readonly inlineQueue: JobQueue.JobQueue["Type"]
}

const isTestClock = (clock: Clock.Clock): boolean =>
  typeof (clock as unknown as TestClock.TestClock).adjust === "function" &&
  typeof (clock as unknown as TestClock.TestClock).setTime === "function"

const statusAfter = (job: JobQueue.EnqueuedJob, outcome: Outcome): JobQueue.EnqueuedJob => {
  switch (outcome._tag) {
    case "Completed":
    case "Skipped":
      return { ...job, status: "completed" }
    case "RetryScheduled":
      return { ...job, status: "pending", runAt: outcome.runAt }
    case "Failed":
      return { ...job, status: "failed" }
    case "Released":
      return { ...job, status: "pending", ...(outcome.lostConnection === undefined ? {} : { runAt: outcome.lostConnection.runAt }) }
    case "LeaseLost":
    case "Unrecorded":
      return job
  }
}

/** What can be checked before a database is created: the TestClock, one handler per job type, the retryBackoff. */
const checkOptions = <Hs extends ReadonlyArray<Handler>>(options: SkiplockTestOptions<Hs>) =>
  Effect.gen(function* () {
    if (!isTestClock(yield* Effect.clock)) {
      return yield* Effect.dieMessage(
        "SkiplockTest needs the TestClock: build its layer inside it.effect, it.scoped or it.layer from @effect/vitest (or provide TestContext)"
      )
    }
    const seen = new Set<string>()
    for (const handler of options.handlers) {
      const jobType = handler.definition.jobType
      if (seen.has(jobType)) return yield* new SkiplockTestSetupError({ message: `two handlers for job type "${jobType}"` })
      const problem = handlerTimeoutProblem(handler)
      if (problem !== undefined) return yield* new SkiplockTestSetupError({ message: problem })
      seen.add(jobType)
    }
    // The worker's rule: a backoff the worker refuses (a negative one, "30 days", Infinity) must not pass here.
    return yield* Either.mapLeft(checkDuration("retryBackoff", options.retryBackoff), (error) => new SkiplockTestSetupError({ message: error.reason }))
  })

/** The kit on top of a migrated database; see `layer`. */
export const make = <const Hs extends ReadonlyArray<Handler>>(options: SkiplockTestOptions<Hs>) =>
  Effect.gen(function* () {
    const retryBackoff = yield* checkOptions(options)
    yield* TestClock.setTime(options.startAt?.getTime() ?? Date.now())

    const sql = yield* SqlClient.SqlClient
    const store = yield* makeJobStore
    const records = yield* JobRecords.make
    const audit = yield* Audit.make
    const faults = Faults.make()
    const env = { workerId: TEST_WORKER_ID, store, retryBackoff }

    // Their requirements come from the layer's context (see `given`), so none are left.
    const handlers = new Map<string, Handler<string, any, any, never>>()
    for (const handler of options.handlers) {
      handlers.set(handler.definition.jobType, faults.wrap(handler) as Handler<string, any, any, never>)
    }
    const handledTypes = [...handlers.keys()]
    const missing = yield* records.unregisteredTypes(handledTypes)
    if (missing.length > 0 && options.registerJobTypes === true) yield* records.registerTypes(missing)
    if (missing.length > 0 && options.registerJobTypes !== true) {
      return yield* new SkiplockTestSetupError({
        message: `job type(s) ${missing.map((type) => `"${type}"`).join(", ")} have no row in job_types, so enqueueing them would fail: ` +
          "insert them in one of your migrations (and pass its folder as `migrations`), or pass `registerJobTypes: true`"
      })
    }

    // Insertion order of the jobs enqueued through the kit: under TestClock many share one created_at.
    const order = new Map<string, number>()
    const track = (jobs: ReadonlyArray<JobQueue.EnqueuedJob>) => {
      for (const job of jobs) if (!order.has(job.id)) order.set(job.id, order.size)
    }
    const sorted = (jobs: ReadonlyArray<JobRecord>) =>
      [...jobs].sort((a, b) =>
        a.createdAt.getTime() - b.createdAt.getTime() ||
        (order.get(a.id) ?? Number.MAX_SAFE_INTEGER) - (order.get(b.id) ?? Number.MAX_SAFE_INTEGER) ||
        (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
      )

    const base = yield* JobQueue.make(options.handlers.map((handler) => handler.definition))
    const queue = JobQueue.JobQueue.of({
      enqueue: (input) => Effect.tap(base.enqueue(input), (job) => Effect.sync(() => track([job]))),
      enqueueMany: (inputs) => Effect.tap(base.enqueueMany(inputs), (jobs) => Effect.sync(() => track(jobs)))
    })

    const history: Array<JobAttempt> = []

    // The jobs running now (a forked runJob or drain, or a test failing while one runs). Closing the layer
    // stops them as a worker's shutdown would, while the database is still there: left to the test fiber's
    // end, their release would find the pool ended and retry on a TestClock that nothing moves any more.
    interface Running {
      readonly control: JobControl
      fiber?: Fiber.RuntimeFiber<Outcome>
      // When its handler's timeout ends (on the Clock): the handler started at this minus the timeout.
      timeoutAt?: number
    }
    const running = new Set<Running>()
    let closing = false
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        closing = true
        const left = [...running]
        for (const { control } of left) control.stopReason ??= "shutdown"
        return TestServices.provideLive(waitAtMost(Fiber.interruptAll(left.flatMap(({ fiber }) => (fiber ? [fiber] : []))), STOP_TIMEOUT)).pipe(
          Effect.flatMap((stopped) =>
            stopped ? Effect.void : Effect.logWarning(`SkiplockTest: ${left.length} running job(s) not released within ${Duration.format(STOP_TIMEOUT)} of the layer closing`)
          )
        )
      })
    )

    // Holds the other due jobs of the type (as busy workers would), so that claim_next_job,
    // which skips locked rows, claims exactly the job the test asked for.
    const holdOtherJobs = (jobId: string, jobType: string) =>
      Effect.gen(function* () {
        const connection = yield* sql.reserve
        yield* Effect.acquireRelease(connection.executeRaw("BEGIN", []), () => Effect.ignore(connection.executeRaw("ROLLBACK", [])))
        yield* connection.executeRaw(
          "SELECT id FROM job_queue WHERE status = 'pending' AND job_type = $1 AND id <> $2 FOR UPDATE SKIP LOCKED",
          [jobType, jobId]
        )
      })

    /**
     * Claims this job through claim_next_job, on the Clock's time. Inside the enqueuer's transaction
     * the jobs it inserted are invisible to the holding connection, so one of `acceptable` (the rest
     * of an inline batch) may come first: it is claimed instead, to be run next.
     */
    const claimJob = (jobId: string, jobType: string, acceptable: ReadonlySet<string> = new Set([jobId])) =>
      Effect.gen(function* () {
        const now = new Date(yield* Clock.currentTimeMillis)
        const claim = store.claim(TEST_WORKER_ID, [jobType], 1, now, LEASE)
        const claimed = (yield* records.othersDue(jobId, jobType, now))
          ? yield* Effect.scoped(Effect.zipRight(holdOtherJobs(jobId, jobType), claim))
          : yield* claim
        const job = claimed[0]
        if (job === undefined || !acceptable.has(job.id)) {
          const [row] = (yield* records.all).filter((record) => record.id === jobId)
          return yield* Effect.dieMessage(
            `could not claim job ${jobId} (${jobType}): it is ${row === undefined ? "gone" : `${row.status}, run_at ${row.runAt.toISOString()}`}` +
              (job !== undefined ? `; claimed ${job.id} instead (a due job inserted in the same transaction?)` : "")
          )
        }
        return job
      })

    // What handlers run with: the layer's context (their dependencies, Audit, the layer's JobQueue) under
    // the caller's, so that what a test provides around drain or runJob wins. Set once the queues exist.
    let given: Context.Context<never> = Context.empty()

    const execute = <R>(handler: Handler<string, any, any, R>, job: ClaimedJob, mode: "queue" | "inline") =>
      Effect.gen(function* () {
        const clock = yield* Effect.clock
        const at = new Date(clock.unsafeCurrentTimeMillis())
        const current = yield* Effect.context<never>()
        const context = Context.merge(given, current)
        // Inline mode runs the jobs its handlers enqueue inline too.
        const provided = mode === "inline" ? Context.add(context, JobQueue.JobQueue, inlineQueue) : context
        // In a fiber of its own, as executeJob asks, awaited rather than joined (joining would copy the job's
        // annotations and span into this fiber): a job run inline inside another leaves the outer one's alone.
        // Interrupting the caller stops the job as a worker's shutdown would: released, the attempt not counted.
        // No job starts once the layer closes (a forked drain would go on claiming): the caller is interrupted.
        if (closing) return yield* Effect.interrupt
        const control: JobControl = { stopReason: undefined }
        const entry: Running = { control }
        // Inline in the enqueuer's transaction, a handler that is not transactional gets a savepoint of its own: a
        // worker runs it on a connection of its own after the commit, so a failed statement of the handler must not
        // abort the enqueuer's transaction (which would leave its outcome unrecorded and turn the COMMIT into a rollback).
        const savepoint = mode === "inline" && !handler.transactional && Option.isSome(yield* Effect.serviceOption(SqlClient.TransactionConnection))
        const watched: Handler<string, any, any, R> = {
          ...handler,
          run: (payload, context) => Effect.suspend(() => {
            entry.timeoutAt = clock.unsafeCurrentTimeMillis() + Duration.toMillis(handler.timeout)
            return savepoint ? sql.withTransaction(handler.run(payload, context)) : handler.run(payload, context)
          })
        }
        // The outcome as recorded: a job the layer's close stopped still has one, though its fiber ends interrupted.
        let recorded: Outcome | undefined
        const recording = { ...env, onOutcome: (_: ClaimedJob, outcome: Outcome) => void (recorded = outcome) }
        const outcome = yield* (executeJob(watched, job, recording, control).pipe(
          Effect.provide(provided),
          Effect.fork,
          Effect.flatMap((fiber) => {
            entry.fiber = fiber
            running.add(entry)
            return Fiber.await(fiber).pipe(
              Effect.onInterrupt(() => Effect.suspend(() => {
                control.stopReason = "shutdown"
                return Fiber.interrupt(fiber)
              })),
              Effect.ensuring(Effect.sync(() => running.delete(entry)))
            )
          }),
          Effect.flatMap((exit) => (recorded === undefined ? exit : Effect.succeed(recorded)))
        ) as Effect.Effect<Outcome, never, R>)
        const attempt: JobAttempt = { jobId: job.id, jobType: job.jobType, organizationId: job.organizationId, attempt: job.attempts, at, outcome }
        history.push(attempt)
        return attempt
      })

    const handlerWaiting = ({ sleeps = 0, within = STOP_TIMEOUT }: HandlerWaitingOptions = {}) =>
      Effect.gen(function* () {
        const giveUpAt = Date.now() + Duration.toMillis(Duration.decode(within))
        // Its timeout's sleep, and `sleeps` others. (The handler's timeout is a sleep in a fiber of its own,
        // which may start after the handler: the sleep is looked for, not assumed.)
        const waiting = (pending: ReadonlyArray<number>) =>
          pending.length - 1 >= sleeps && [...running].some(({ timeoutAt }) => timeoutAt !== undefined && pending.includes(timeoutAt))
        while (true) {
          const pending = Chunk.toReadonlyArray(yield* TestClock.sleeps())
          if (waiting(pending)) return
          if (Date.now() > giveUpAt) {
            const inHandler = [...running].filter((entry) => entry.timeoutAt !== undefined).length
            return yield* new HandlerNotWaiting({
              message: `handlerWaiting: after ${Duration.format(within)}, ${running.size} job(s) running, ${inHandler} in its handler, ` +
                `${pending.length} sleep(s) on the TestClock (wanted the handler's timeout and ${sleeps} more)`
            })
          }
          yield* TestServices.provideLive(Effect.sleep("5 millis"))
        }
      })

    const enqueueInline = (inputs: ReadonlyArray<JobQueue.EnqueueInput>) =>
      Effect.gen(function* () {
        const jobs = yield* queue.enqueueMany(inputs)
        const now = yield* Clock.currentTimeMillis
        // A job scheduled for later, a duplicate, or one without a handler stays in the queue for drain.
        const runnable = jobs.filter((job) => !job.existing && handlers.has(job.jobType) && job.runAt.getTime() <= now)
        const left = new Set(runnable.map((job) => job.id))
        const outcomes = new Map<string, Outcome>()
        while (left.size > 0) {
          const job = runnable.find((candidate) => left.has(candidate.id))!
          const claimed = yield* claimJob(job.id, job.jobType, left)
          left.delete(claimed.id)
          outcomes.set(claimed.id, (yield* execute(handlers.get(claimed.jobType)!, claimed, "inline")).outcome)
        }
        return yield* Effect.forEach(jobs, (job) => {
          const outcome = outcomes.get(job.id)
          // The job's row does not say what happened: a status returned anyway would be a guess.
          return outcome?._tag === "Unrecorded"
            ? Effect.dieMessage(`inline: the outcome of job ${job.id} (${job.jobType}) could not be recorded: ${outcome.error}`)
            : Effect.succeed(outcome === undefined ? job : statusAfter(job, outcome))
        })
      })

    const inlineQueue = JobQueue.JobQueue.of({
      enqueue: (input) => Effect.map(enqueueInline([input]), (jobs) => jobs[0]!),
      enqueueMany: enqueueInline
    })

    given = (yield* Effect.context<never>()).pipe(
      Context.add(Audit.Audit, audit),
      Context.add(JobQueue.JobQueue, options.inline === true ? inlineQueue : queue)
    )

    const drain = (drainOptions: DrainOptions = {}) =>
      Effect.gen(function* () {
        const maxRuns = drainOptions.maxRuns ?? 1000
        const startedAt = yield* Clock.currentTimeMillis
        // An unbounded maxAdvance (Duration.infinity) stops at the latest time a Date holds, which PostgreSQL stores too.
        const limit = Math.min(startedAt + Duration.toMillis(Duration.decode(drainOptions.maxAdvance ?? 0)), LATEST_DATE_MILLIS)
        const attempts: Array<JobAttempt> = []
        const byJob = new Map<string, Array<JobAttempt>>()
        while (handledTypes.length > 0) {
          const now = yield* Clock.currentTimeMillis
          if (attempts.length >= maxRuns) {
            if (yield* records.anyDueBy(handledTypes, new Date(limit))) return yield* new DrainLimitExceeded({ maxRuns, attempts })
            break
          }
          const [job] = yield* store.claim(TEST_WORKER_ID, handledTypes, 1, new Date(now), LEASE)
          if (job !== undefined) {
            const attempt = yield* execute(handlers.get(job.jobType)!, job, "queue")
            attempts.push(attempt)
            byJob.set(job.id, [...(byJob.get(job.id) ?? []), attempt])
            continue
          }
          const next = yield* records.nextRunAt(handledTypes, new Date(now))
          if (next === undefined || next.getTime() > limit) break
          yield* TestClock.adjust(Duration.millis(next.getTime() - now))
        }
        const now = yield* Clock.currentTimeMillis
        const rows = yield* records.ranOrUnfinished([...byJob.keys()])
        const context = { handledTypes: new Set(handledTypes), startedAt, now, limit, wallClock: Date.now() }
        const rowsById = new Map(rows.map((row) => [row.id, row]))
        const ran = [...byJob].flatMap(([id, list]) => {
          const row = rowsById.get(id)
          return row === undefined ? [] : [drainedJob(row, list, context)]
        })
        const untouched = rows.filter((row) => !byJob.has(row.id)).map((row) => drainedJob(row, [], context))
        return makeResult([...ran, ...untouched], attempts, context)
      }).pipe(Effect.withSpan("SkiplockTest.drain"))

    const runJob = <A, E, R>(handler: Handler<string, A, E, R>, payload: A, runOptions: RunJobOptions = {}) =>
      Effect.gen(function* () {
        const jobType = handler.definition.jobType
        const encoded = yield* Schema.encode(handler.definition.payload)(payload).pipe(
          Effect.mapError((error) => new InvalidPayload({ jobType, reason: JobQueue.formatParseError(error) }))
        )
        const job = yield* queue.enqueue({ ...runOptions, organizationId: runOptions.organizationId ?? TEST_ORGANIZATION_ID, jobType, payload: encoded })
        if (job.existing) return yield* new JobAlreadyEnqueued({ jobId: job.id, idempotencyKey: job.idempotencyKey ?? "", status: job.status })
        return yield* execute(faults.wrap(handler), yield* claimJob(job.id, jobType), "queue")
        // (Not requiring CurrentJob: executeJob gives the job its CurrentJob, as the worker does.)
      }).pipe(Effect.withSpan("SkiplockTest.runJob")) as Effect.Effect<JobAttempt, JobQueue.EnqueueError | JobAlreadyEnqueued, Exclude<R, CurrentJob>>

    const enqueued = <A = any>(filter: JobFilter<A> = {}) =>
      Effect.map(records.all, (jobs) => sorted(jobs).filter((job) => matches(filter, job)))

    const assertEnqueued = <A = any>({ count, ...filter }: EnqueuedAssertion<A>) =>
      Effect.gen(function* () {
        const jobs = sorted(yield* records.all)
        const matching = jobs.filter((job) => matches(filter, job))
        if (count === undefined ? matching.length === 0 : matching.length !== count) {
          return yield* new EnqueuedAssertionError({ message: notEnqueuedMessage(filter, jobs, count), jobs })
        }
        return matching
      })

    const assertNotEnqueued = <A = any>(filter: JobFilter<A>) =>
      Effect.gen(function* () {
        const jobs = sorted(yield* records.all)
        const matching = jobs.filter((job) => matches(filter, job))
        if (matching.length > 0) return yield* new EnqueuedAssertionError({ message: enqueuedMessage(filter, matching), jobs })
      })

    const syncClock = Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      const wall = Date.now()
      if (wall > now) yield* TestClock.adjust(Duration.millis(wall - now))
    })

    const service: SkiplockTestService = {
      handlers: [...handlers.values()],
      drain,
      runJob,
      handlerWaiting,
      inline: (effect) => Effect.provideService(effect, JobQueue.JobQueue, inlineQueue),
      enqueued,
      assertEnqueued,
      assertNotEnqueued,
      failNext: faults.failNext,
      remainingFailures: faults.remaining,
      clearFailures: faults.clear,
      withFailures: faults.wrap,
      attempts: Effect.sync(() => [...history]),
      syncClock,
      reset: Effect.zipRight(records.clear, Effect.zipRight(faults.clear, Effect.sync(() => {
        history.length = 0
        order.clear()
      }))),
      queue,
      inlineQueue
    }
    // With what the layer was given (its handlers' requirements), which the test then has too: the same
    // instances the jobs run with, and runJob's type does not ask for them again. Not the layer's own Scope,
    // which would stand in for the test's.
    return Context.add(Context.omit(Scope.Scope)(given), SkiplockTest, service)
  })

/** What the handlers need; `Requirements` of an empty list would be `unknown`. */
export type HandlerRequirements<Hs extends ReadonlyArray<Handler>> = [Hs[number]] extends [never] ? never : Requirements<Hs>

/** What the kit's layer provides. */
export type Provided = SkiplockTest | JobQueue.JobQueue | Audit.Audit | TestDatabase | PgClient.PgClient | SqlClient.SqlClient

export type LayerError = SkiplockTestSetupError | TestDatabaseError | NoPostgresServer | MigrationError | SqlError

const migrationFolders = (folders: ReadonlyArray<string> = []) => [
  coreMigrations,
  ...folders.filter((folder) => resolve(folder) !== resolve(coreMigrations))
]

/**
 * A fresh database with skiplock's core migrations and yours, the kit, a JobQueue (inline when
 * `inline` is set) and Audit. Its requirements are what the handlers need beyond those; it provides
 * them to the test as well (so `runJob` of those handlers needs nothing more). The database
 * is created on the live clock (its retries must not wait for the TestClock) and dropped when the
 * layer's scope closes: after the test for `Effect.provide`, after the block for `it.layer`.
 */
export const layer = <const Hs extends ReadonlyArray<Handler>>(
  options: SkiplockTestOptions<Hs>
): Layer.Layer<Provided | HandlerRequirements<Hs>, LayerError, Exclude<HandlerRequirements<Hs>, Provided>> => {
  const database = Layer.scopedContext(
    TestServices.provideLive(Layer.build(TestDatabase.layer({ ...options.database, migrations: migrationFolders(options.migrations) })))
  )
  const kit = Layer.provideMerge(Layer.scopedContext(make(options)), database)
  return Layer.unwrapEffect(Effect.as(checkOptions(options), kit)) as Layer.Layer<
    Provided | HandlerRequirements<Hs>,
    LayerError,
    Exclude<HandlerRequirements<Hs>, Provided>
  >
}

/**
 * The kit's service. Use `SkiplockTest.layer(...)` to get it, and its static helpers
 * (`SkiplockTest.drain()`, `SkiplockTest.assertEnqueued(...)`, …) in tests.
 */
export class SkiplockTest extends Context.Tag("skiplock/testing/SkiplockTest")<SkiplockTest, SkiplockTestService>() {
  static readonly layer = layer

  static drain(options?: DrainOptions) {
    return Effect.flatMap(SkiplockTest, (kit) => kit.drain(options))
  }

  static runJob<A, E, R>(handler: Handler<string, A, E, R>, payload: NoInfer<A>, options?: RunJobOptions) {
    return Effect.flatMap(SkiplockTest, (kit) => kit.runJob(handler, payload, options))
  }

  static handlerWaiting(options?: HandlerWaitingOptions) {
    return Effect.flatMap(SkiplockTest, (kit) => kit.handlerWaiting(options))
  }

  static inline<A, E, R>(effect: Effect.Effect<A, E, R>) {
    return Effect.flatMap(SkiplockTest, (kit) => kit.inline(effect))
  }

  static enqueued<A = any>(filter?: JobFilter<A>) {
    return Effect.flatMap(SkiplockTest, (kit) => kit.enqueued(filter))
  }

  static assertEnqueued<A = any>(assertion: EnqueuedAssertion<A>) {
    return Effect.flatMap(SkiplockTest, (kit) => kit.assertEnqueued(assertion))
  }

  static assertNotEnqueued<A = any>(filter: JobFilter<A>) {
    return Effect.flatMap(SkiplockTest, (kit) => kit.assertNotEnqueued(filter))
  }

  static failNext(jobType: Faults.JobTypeRef, times: number, error: unknown) {
    return Effect.flatMap(SkiplockTest, (kit) => kit.failNext(jobType, times, error))
  }

  static remainingFailures(jobType: Faults.JobTypeRef) {
    return Effect.flatMap(SkiplockTest, (kit) => kit.remainingFailures(jobType))
  }

  static readonly clearFailures: Effect.Effect<void, never, SkiplockTest> = Effect.flatMap(SkiplockTest, (kit) => kit.clearFailures)

  static readonly attempts: Effect.Effect<ReadonlyArray<JobAttempt>, never, SkiplockTest> = Effect.flatMap(SkiplockTest, (kit) => kit.attempts)

  static readonly syncClock: Effect.Effect<void, never, SkiplockTest> = Effect.flatMap(SkiplockTest, (kit) => kit.syncClock)

  static readonly reset: Effect.Effect<void, SqlError, SkiplockTest> = Effect.flatMap(SkiplockTest, (kit) => kit.reset)
}
