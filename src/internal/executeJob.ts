/**
 * Runs one claimed job through its handler and records the outcome:
 * success -> completed; a retryable failure, defect or timeout -> retry with
 * backoff (or failed when no attempts are left); a permanent failure or a
 * payload that does not decode -> failed at once; stopped by the worker ->
 * released (shutdown), retried (timeout) or left alone (the lease was lost and
 * another worker owns it); a handler that interrupts itself -> retry.
 */
import { SqlClient } from "@effect/sql"
import { SqlError } from "@effect/sql/SqlError"
import { Cause, Clock, Context, Data, Duration, Effect, Either, Exit, FiberRef, HashMap, Metric, Option, ParseResult, Schedule, Schema, Tracer } from "effect"
import { HandlerTimeout } from "../Errors.js"
import type { Handler } from "../Handler.js"
import { CurrentJob, type JobContext } from "../JobContext.js"
import { formatParseError } from "../JobQueue.js"
import * as Metrics from "../Metrics.js"
import { type ClaimedJob, type JobStore, LOST_CONNECTION_REASON } from "./JobStore.js"
import { sqlErrorText } from "./sqlErrorText.js"
import { isTransient, lostConnection } from "./connectionLoss.js"
import { jobParentSpan } from "./tracing.js"
import { jsonProblem } from "./validate.js"

/** What happened to one attempt of a job. */
export type Outcome = Data.TaggedEnum<{
  Completed: {}
  /** An earlier attempt had already committed; the handler did not run again. */
  Skipped: {}
  RetryScheduled: { readonly error: string; readonly runAt: Date }
  Failed: { readonly error: string }
  /**
   * Back to pending without counting the attempt: on the worker's stop, or (with the error and the time
   * it runs again) after the database connection was lost.
   */
  Released: { readonly lostConnection?: { readonly error: string; readonly runAt: Date } }
  /** The worker lost the job (rescued elsewhere); nothing was recorded. */
  LeaseLost: {}
  /** The outcome could not be written (the database stayed unreachable): the lease runs out and the job is rescued. */
  Unrecorded: { readonly error: string }
}>
export const Outcome = Data.taggedEnum<Outcome>()

/** Why a running job is being stopped from outside. */
export interface JobControl {
  stopReason: "shutdown" | "lease_lost" | "timeout" | undefined
}

export interface ExecuteEnv {
  readonly workerId: string
  readonly store: JobStore
  readonly retryBackoff: Duration.Duration
  /**
   * Whether the worker still holds the job: recording its outcome is tried again while it does
   * (default: five tries, about 3 s).
   */
  readonly holds?: ((job: ClaimedJob) => boolean) | undefined
  /** Completes a job whose handler succeeded (the worker: with its next claim); default: one complete_job call. */
  readonly complete?: ((jobId: string, attempt: number, job: ClaimedJob) => Effect.Effect<boolean, SqlError>) | undefined
  /**
   * The caller stops the job at its handler's timeout (stop reason "timeout"), as the worker's
   * deadline watcher does; otherwise the handler is raced against its timeout here.
   */
  readonly watchesTimeouts?: boolean | undefined
  /**
   * Called once the handler has returned, before its outcome is recorded (not when it never ran); `slotFree`
   * when it succeeded: its completion then rides the loop's next statement. Any other outcome is written on a
   * connection of its own, which counts as the slot's until it is written.
   */
  readonly handlerDone?: ((job: ClaimedJob, slotFree: boolean) => void) | undefined
  /** Called once the outcome is recorded, even when the job was interrupted. */
  readonly onOutcome?: ((job: ClaimedJob, outcome: Outcome) => void) | undefined
}

class LeaseLost extends Data.TaggedError("LeaseLost")<{}> {}

// A transactional handler's own failure, told apart from the failures of its transaction (BEGIN, COMMIT,
// recording the run): those are not the handler's errors, E, and its `permanent` predicate never sees them.
class HandlerFailed extends Data.TaggedError("HandlerFailed")<{ readonly error: unknown }> {}
const transactionFailures = new WeakSet<object>()
const ownFailure = (error: unknown) => {
  if (error instanceof HandlerFailed) return Effect.fail(error.error)
  if (typeof error === "object" && error !== null && !(error instanceof LeaseLost)) transactionFailures.add(error)
  return Effect.fail(error)
}

/**
 * A lost database connection counts as a failed attempt once the job was released for one this many
 * times, and the first of those releases is at least UNCOUNTED_RELEASE_SPAN old. With the default 30 s
 * backoff ten releases take about that long anyway; the span keeps a short backoff from spending ten
 * releases in a few seconds of dropped connections, one outage. Past UNCOUNTED_RELEASES_AT_MOST it
 * counts whatever the time: with no backoff at all, five minutes of releases would be thousands.
 * The releases' times are the releasing workers' clocks: one far behind or ahead of this worker's
 * makes the span look longer or shorter, and the two counts still bound the releases.
 */
export const MAX_UNCOUNTED_RELEASES = 10
export const UNCOUNTED_RELEASE_SPAN = Duration.minutes(5)
export const UNCOUNTED_RELEASES_AT_MOST = 100

// Recording an outcome survives database outages for as long as the worker holds the job (its lease,
// as the worker knows it, has not run out, and it is not stopping): the heartbeat renews the lease once
// the database is back, and the outcome lands then. Past that, the job may be another attempt's (rescued,
// or failed and retried by an operator, perhaps claimed by this very worker with the same attempt
// number): nothing more is sent, and the rescuer takes over. Tried every 2 s at most, and only for
// errors that may pass (a refused value fails the same way every time). Without a worker (the testing
// kit's runJob) five tries, about 3 s.
const RECORD_SCHEDULE = Schedule.union(Schedule.exponential("100 millis", 2), Schedule.spaced("2 seconds"))
const RECORD_TRIES = Schedule.intersect(Schedule.exponential("100 millis", 2), Schedule.recurs(5))
const makePersistently = (holds: (() => boolean) | undefined) => {
  const schedule = holds === undefined ? RECORD_TRIES : RECORD_SCHEDULE
  const held = holds ?? (() => true)
  const again = (error: SqlError) => isTransient(error) && held()
  return <A>(effect: Effect.Effect<A, SqlError>) => {
    // Checked again before each try: a try after the lease ran out could write this attempt's outcome
    // onto the job's next run.
    const whileHeld = Effect.suspend(() => (held() ? effect : Effect.fail(leaseRanOut())))
    return Effect.catchAll(effect, (error) => (again(error) ? Effect.retry(whileHeld, { schedule, while: again }) : Effect.fail(error)))
  }
}

/** The worker's lease of a job ran out before the job's outcome could be written. */
export const leaseRanOut = () =>
  new SqlError({ cause: new Error("the worker's lease of the job ran out before its outcome could be written"), message: "lease ran out" })

// An error text is stored in job_queue, job_runs and the audit entry, and logged: a huge value quoted in it
// (a 10 MB payload field) must not be copied four times.
const MAX_ERROR_LENGTH = 1_000
// PostgreSQL's text cannot hold NUL: an error text with one could never be written.
const bounded = (raw: string) => {
  const text = raw.includes("\u0000") ? raw.replaceAll("\u0000", "\\u0000") : raw
  return text.length <= MAX_ERROR_LENGTH ? text : `${text.slice(0, MAX_ERROR_LENGTH)}… (${text.length - MAX_ERROR_LENGTH} more characters)`
}

/**
 * The payload decoded with the job type's Schema, or why it cannot be. Synchronously when the Schema
 * allows (no Effect steps); a Schema that decodes asynchronously (JobQueue accepts those) fails that
 * way, and is decoded as an Effect. A payload inserted by SQL can be nested deeper than the call stack
 * goes (decoding or describing it throws): that is the payload's fault too, not a bug to retry; a
 * Schema that throws on a payload of ordinary depth is a bug, and fails as a defect (retried).
 * (An Either when known at once: no Effect step on the common path.)
 */
type Decoded = Either.Either<unknown, string>
const decodePayload = (handler: Handler<string, any, any, any>, payload: unknown): Decoded | Effect.Effect<Decoded> => {
  const described = (error: ParseResult.ParseError): string => {
    try {
      return formatParseError(error)
    } catch (thrown) {
      return jsonProblem(payload) ?? `it does not match the job type's Schema (the reason could not be described: ${describeError(thrown)})`
    }
  }
  // Decoding threw: the payload's fault when it nests too deep, otherwise a bug (in the Schema), retried as one.
  const thrownWhileDecoding = (thrown: unknown): Decoded => {
    const problem = jsonProblem(payload)
    if (problem === undefined) throw thrown
    return Either.left(problem)
  }
  try {
    const syncDecoded = Schema.decodeUnknownEither(handler.definition.payload)(payload)
    if (syncDecoded._tag === "Right") return Either.right(syncDecoded.right)
  } catch (thrown) {
    return thrownWhileDecoding(thrown)
  }
  return Schema.decodeUnknown(handler.definition.payload)(payload).pipe(
    Effect.either,
    Effect.map(Either.mapLeft(described)),
    Effect.catchAllDefect((thrown) => Effect.sync(() => thrownWhileDecoding(thrown)))
  )
}

/** A readable one-line text of any failure, for job_queue.error and logs. */
export const describeCause = (cause: Cause.Cause<unknown>): string => {
  const failure = Cause.failureOption(cause)
  if (Option.isSome(failure)) return describeError(failure.value)
  const defect = Cause.dieOption(cause)
  if (Option.isSome(defect)) return `defect: ${describeError(defect.value)}`
  return Cause.pretty(cause).split("\n")[0] ?? "unknown failure"
}

// Reading an error can run user code (a `message` getter, a toJSON): if that throws, the outcome must
// still be recorded, so the text falls back to what can be read without it.
const describeError = (error: unknown): string => {
  try {
    return readError(error)
  } catch (unreadable) {
    let tag: unknown
    try {
      tag = (error as { _tag?: unknown } | null)?._tag
    } catch {}
    const what = typeof tag === "string" ? tag : Object.prototype.toString.call(error)
    return `${what} (its message could not be read: ${unreadable instanceof Error ? unreadable.message : typeof unreadable})`
  }
}

// " {"ledgerId":"L-1"}", or nothing when there are no fields or they cannot be written as JSON.
const fieldsText = (error: object): string => {
  const fields = Object.entries(error).filter(([key]) => key !== "_tag")
  if (fields.length === 0) return ""
  try {
    return ` ${JSON.stringify(Object.fromEntries(fields))}`
  } catch {
    return ` (fields ${fields.map(([key]) => key).join(", ")})`
  }
}

const readError = (error: unknown): string => {
  if (error instanceof Error || (typeof error === "object" && error !== null && "message" in error)) {
    const tag = (error as { _tag?: unknown })._tag
    const message = String((error as { message: unknown }).message)
    // A tagged error without a message (Data.TaggedError("LedgerLocked")<{ ledgerId }>) is its tag and its fields.
    if (message === "") return typeof tag === "string" ? `${tag}${fieldsText(error)}` : String(error)
    // A SqlError's own message is generic ("Failed to execute statement"); the database's reason is in its cause.
    if (tag === "SqlError" && (error as { cause?: unknown }).cause !== undefined) return `SqlError: ${message}: ${sqlErrorText(error)}`
    // Not doubled when the message already starts with it ("Bank: …"), but "Bankruptcy …" still gets it.
    return typeof tag === "string" && message !== tag && !message.startsWith(`${tag}:`) ? `${tag}: ${message}` : message
  }
  if (typeof error === "object" && error !== null) {
    try {
      return JSON.stringify(error)
    } catch {
      return String(error)
    }
  }
  return String(error)
}

/** Whether the failure is permanent, and why the handler's `permanent` predicate could not say (it threw). */
const permanence = (handler: Handler, cause: Cause.Cause<unknown>): { readonly permanent: boolean; readonly predicateFailed?: string } => {
  const failure = Cause.failureOption(cause)
  if (Option.isNone(failure)) return { permanent: false }
  const error = failure.value
  // By tag, not class: a handler module that loaded its own copy of skiplock (CommonJS beside ESM, two
  // installed versions) fails with its copy's PermanentError, which must still fail the job at once.
  const tag = typeof error === "object" && error !== null ? (error as { _tag?: unknown })._tag : undefined
  if (tag === "HandlerTimeout") return { permanent: false }
  if (tag === "PermanentError") return { permanent: true }
  if (typeof error === "object" && error !== null && transactionFailures.has(error)) return { permanent: false }
  try {
    return { permanent: handler.isPermanent(error) === true }
  } catch (thrown) {
    // Retried: a broken predicate must not turn every failure into a permanent one.
    return { permanent: false, predicateFailed: describeError(thrown) }
  }
}

export const jobContext = (job: ClaimedJob, workerId: string): JobContext => ({
  jobId: job.id,
  jobType: job.jobType,
  organizationId: job.organizationId,
  attempt: job.attempts,
  maxAttempts: job.maxAttempts,
  traceId: job.traceId,
  idempotencyKey: job.idempotencyKey ?? job.id,
  createdBy: job.createdBy,
  workerId
})

/**
 * Runs the job and records its outcome. Never fails: every failure becomes an outcome.
 * Run it in a fiber of its own that ends with it (it sets the job's log annotations, span and
 * CurrentJob on the fiber it runs in).
 */
export const executeJob = <R>(
  handler: Handler<string, any, any, R>,
  job: ClaimedJob,
  env: ExecuteEnv,
  control: JobControl = { stopReason: undefined }
): Effect.Effect<Outcome, never, R | SqlClient.SqlClient> => {
  const { store, workerId, holds } = env
  const persistently = makePersistently(holds === undefined ? undefined : () => holds(job))
  const context = jobContext(job, workerId)
  // Times and metrics are read and written directly: this runs once per job, and each Clock or
  // Metric Effect costs a few Effect steps. (Metric labels set on the fiber are not applied here.)
  const attemptAndRecord = (clock: Clock.Clock) => {
    const now = Effect.sync(() => new Date(clock.unsafeCurrentTimeMillis()))
    const fail = (reason: string, retryable: boolean, error = bounded(reason)) =>
      Effect.flatMap(now, (at) => persistently(store.failAttempt(job.id, workerId, job.attempts, error, retryable, at, env.retryBackoff))).pipe(
        Effect.map((result): Outcome => {
          if (result === undefined) return Outcome.LeaseLost()
          switch (result.status) {
            case "pending":
              return Outcome.RetryScheduled({ error, runAt: result.runAt })
            // The handler's transaction had committed before the failure (a timeout during its COMMIT).
            case "completed":
              return Outcome.Completed()
            case "failed":
              return Outcome.Failed({ error })
          }
        })
      )
    // Only the handler is interruptible: an outcome, once reached, is always recorded.
    return Effect.uninterruptibleMask((restore) => Effect.gen(function* () {
      const attempt = job.attempts

      const complete = (details?: Record<string, unknown>) =>
        Effect.flatMap(now, (at) => store.complete(job.id, workerId, attempt, at, details))

      if (job.runIdempotencyStatus === "completed") {
        const ok = yield* persistently(complete({ skipped: "an earlier attempt already completed this job" }))
        return ok ? Outcome.Skipped() : Outcome.LeaseLost()
      }

      const decoding = decodePayload(handler, job.payload)
      const decoded = Either.isEither(decoding) ? decoding : yield* decoding
      if (decoded._tag === "Left") return yield* fail(`invalid payload: ${decoded.left}`, false)

      const timedOut = () => new HandlerTimeout({ jobType: job.jobType, timeoutMillis: Duration.toMillis(handler.timeout) })
      const run = Effect.suspend(() => handler.run(decoded.right, context))
      const timed = env.watchesTimeouts === true ? run : Effect.timeoutFail(run, { duration: handler.timeout, onTimeout: timedOut })
      // A transactional handler's SQL commits together with its run's record, or not at all; the job's
      // row is completed afterwards, like any other job's (its transaction never waits for that row).
      const attemptEffect = handler.transactional
        ? Effect.flatMap(SqlClient.SqlClient, (sql) =>
            sql.withTransaction(
              Effect.zipRight(
                Effect.mapError(timed, (error) => new HandlerFailed({ error })),
                Effect.flatMap(
                  Effect.flatMap(now, (at) => store.commitRun(job.id, workerId, attempt, at)),
                  (ok) => (ok ? Effect.void : Effect.fail(new LeaseLost()))
                )
              )
            ).pipe(Effect.catchAll(ownFailure)))
        : timed

      const started = clock.unsafeCurrentTimeMillis()
      const exit = yield* Effect.exit(restore(attemptEffect))
      // A failure's outcome may wait on a row locked elsewhere: its connection stays the slot's meanwhile.
      env.handlerDone?.(job, Exit.isSuccess(exit))
      Metrics.forJobType(Metrics.handlerDuration, job.jobType).unsafeUpdate((clock.unsafeCurrentTimeMillis() - started) / 1000, [])

      if (Exit.isSuccess(exit)) {
        const completed = env.complete !== undefined ? env.complete(job.id, attempt, job) : complete()
        // A committed run is done even if its row was taken meanwhile: only the rescuer can take it, and it completes it.
        return (yield* persistently(completed)) || handler.transactional ? Outcome.Completed() : Outcome.LeaseLost()
      }
      const cause = exit.cause
      // The worker stopped the job: that decides the outcome, whatever the handler's finalizers added
      // to the cause on the way out (their failure is reported alongside, not instead).
      if (control.stopReason !== undefined && Cause.isInterrupted(cause)) {
        const alsoFailed = Cause.isInterruptedOnly(cause) ? undefined : describeCause(cause)
        switch (control.stopReason) {
          case "lease_lost":
            return Outcome.LeaseLost()
          case "timeout": {
            const reason = describeError(timedOut())
            return yield* fail(alsoFailed === undefined ? reason : `${reason}; then, while stopping: ${alsoFailed}`, true)
          }
          case "shutdown": {
            if (alsoFailed !== undefined) yield* Effect.logWarning(`the job's handler failed while the worker stopped it: ${bounded(alsoFailed)}`)
            const released = yield* persistently(store.release(job.id, workerId, attempt, yield* now, "worker shutdown"))
            return released ? Outcome.Released({}) : Outcome.LeaseLost()
          }
        }
      }
      // Nobody outside stopped it: the handler interrupted itself (Effect.interrupt, or a joined fiber
      // that was interrupted). Releasing would put it back uncounted, to do the same again forever.
      if (Cause.isInterruptedOnly(cause)) {
        return yield* fail("the handler was interrupted, not by the worker (Effect.interrupt, or a fiber it joined was interrupted)", true)
      }
      if (Option.getOrUndefined(Cause.failureOption(cause)) instanceof LeaseLost) return Outcome.LeaseLost()
      const { permanent, predicateFailed } = permanence(handler, cause)
      let reason = describeCause(cause)
      if (!permanent && lostConnection(cause)) {
        // An outage is not the job's failure: back to pending without counting the attempt, after the backoff.
        // Unless it keeps happening to this job: then the lost connection is more likely the handler's own
        // (another database it talks to), and the attempts must run out as for any failure.
        const earlier = yield* persistently(store.releasesForLostConnection(job.id))
        const at = yield* now
        const since = earlier.firstAt === undefined ? 0 : at.getTime() - earlier.firstAt.getTime()
        const stillUncounted = earlier.count < MAX_UNCOUNTED_RELEASES ||
          (since < Duration.toMillis(UNCOUNTED_RELEASE_SPAN) && earlier.count < UNCOUNTED_RELEASES_AT_MOST)
        if (stillUncounted) {
          const error = bounded(`${LOST_CONNECTION_REASON}: ${reason}`)
          const runAt = new Date(at.getTime() + Duration.toMillis(env.retryBackoff))
          const released = yield* persistently(store.release(job.id, workerId, attempt, at, LOST_CONNECTION_REASON, { runAt, error }))
          return released ? Outcome.Released({ lostConnection: { error, runAt } }) : Outcome.LeaseLost()
        }
        reason = `${reason} (counted as an attempt: the job was released ${earlier.count} times for a lost database connection already, the first ${Math.round(since / 1000)} s ago)`
      }
      return yield* fail(predicateFailed === undefined ? reason : `${reason} (the handler's permanent predicate threw: ${predicateFailed})`, !permanent)
    }).pipe(
      // A bug on the way to the outcome must not leave the job processing until its lease expires:
      // the attempt is recorded as failed (retryable), saying so; the SQL guards make a repeat harmless.
      Effect.catchAllDefect((defect) =>
        Effect.zipRight(
          Effect.logError("recording a job's outcome failed unexpectedly; the attempt is recorded as failed", Cause.die(defect)),
          fail(`skiplock could not record this attempt's outcome: ${describeError(defect)}`, true)
        )
      ),
      Effect.catchAll((error) =>
        // The database stayed unreachable while recording: the lease will expire and the job be rescued.
        Effect.succeed(Outcome.Unrecorded({ error: bounded(sqlErrorText(error)) }))
      ),
      Effect.tap((outcome) => {
        // Counted before anyone is told, so that whoever is told sees it counted.
        const toLog = countOutcome(job.jobType, outcome)
        env.onOutcome?.(job, outcome)
        return toLog
      })
    ))
  }

  const annotations = { jobId: job.id, jobType: job.jobType, organizationId: job.organizationId, traceId: job.traceId }
  const spanName = `skiplock.job ${job.jobType}`
  const spanOptions = {
    parent: jobParentSpan(job.traceId, job.parentSpanId),
    kind: "consumer",
    captureStackTrace: false,
    attributes: { "job.id": job.id, "job.type": job.jobType, "job.attempt": job.attempts, "organization.id": job.organizationId }
  } as const
  // The job's log annotations, span and CurrentJob are set on its fiber, which ends with the job:
  // scoping each of them around the job (and restoring it after) cost ~20 Effect steps a job.
  return Effect.gen(function* () {
    const clock = yield* Effect.clock
    // (HashMap.mutate and one Context.merge: one copy of each per job, not one per entry.)
    yield* FiberRef.update(FiberRef.currentLogAnnotations, (current) =>
      HashMap.mutate(current, (all) => {
        for (const [key, value] of Object.entries(annotations)) HashMap.set(all, key, value as unknown)
      })
    )
    const span = yield* Effect.makeSpan(spanName, spanOptions)
    yield* FiberRef.update(FiberRef.currentContext, (services) =>
      Context.merge(services, Context.add(Context.make(Tracer.ParentSpan, span), CurrentJob, context))
    )
    const outcome = yield* attemptAndRecord(clock)
    span.end(clock.unsafeCurrentTimeNanos(), Exit.succeed(outcome))
    return outcome
  })
}

// Counts the outcome (directly, see attemptAndRecord) and returns what there is to log about it.
const countOutcome = (jobType: string, outcome: Outcome): Effect.Effect<void> => {
  const count = (metric: Metric.Metric.Counter<number>) => Metrics.forJobType(metric, jobType).unsafeUpdate(1, [])
  switch (outcome._tag) {
    case "Completed":
    case "Skipped":
      count(Metrics.jobsCompleted)
      return Effect.void
    case "RetryScheduled":
      count(Metrics.jobsRetried)
      return Effect.logWarning(`attempt failed, retry at ${outcome.runAt.toISOString()}: ${outcome.error}`)
    case "Failed":
      count(Metrics.jobsFailed)
      return Effect.logError(`job failed: ${outcome.error}`)
    case "Released":
      count(Metrics.jobsReleased)
      return outcome.lostConnection === undefined
        ? Effect.void
        : Effect.logWarning(`released after a lost database connection, the attempt not counted; runs again at ${outcome.lostConnection.runAt.toISOString()}: ${outcome.lostConnection.error}`)
    case "LeaseLost":
      count(Metrics.leasesLost)
      return Effect.logWarning("lost the job: it is no longer this worker's (failed or cancelled by an operator, or rescued by another worker after its lease ran out); nothing recorded")
    case "Unrecorded":
      count(Metrics.outcomesUnrecorded)
      return Effect.logError(`could not record the job's outcome (the database stayed unreachable); its lease runs out and it is rescued: ${outcome.error}`)
  }
}
