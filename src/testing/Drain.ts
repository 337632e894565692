/**
 * What `drain` returns: every job it ran and every job still waiting, with
 * each attempt's outcome and, for a waiting job, why it waits.
 */
import { Data, Duration } from "effect"
import type { Outcome } from "../internal/executeJob.js"
import type { JobRecord } from "./JobRecords.js"
import { show } from "./JobMatch.js"

/** One attempt the kit ran (drain, runJob or inline mode), through the runtime's own path. */
export interface JobAttempt {
  readonly jobId: string
  readonly jobType: string
  readonly organizationId: string
  /** 1 for the first attempt. */
  readonly attempt: number
  /** The Clock's time when the attempt was claimed. */
  readonly at: Date
  /** Completed, Skipped, RetryScheduled (with the retry's runAt), Failed, … */
  readonly outcome: Outcome
}

/** Why a job is still waiting after a drain. */
export type WaitReason = Data.TaggedEnum<{
  /** An attempt failed; the retry lies beyond the drain's limit. */
  RetryScheduled: { readonly runAt: Date; readonly lastError: string | null }
  /** The job is scheduled beyond the drain's limit. */
  Scheduled: { readonly runAt: Date }
  /** The kit has no handler for the job's type. */
  NoHandler: {}
  /** Another worker holds the job (a worker the test started, or one that died). */
  Processing: { readonly lockedBy: string | null }
  /** Due, but its row is locked by another transaction. */
  Locked: {}
}>
export const WaitReason = Data.taggedEnum<WaitReason>()

export interface DrainedJob {
  /** Where the job ended up: completed, failed for good, or still waiting. */
  readonly status: "completed" | "failed" | "waiting"
  /** Its row after the drain. */
  readonly job: JobRecord
  /** The attempts this drain ran, in order (empty for a job it could not run). */
  readonly attempts: ReadonlyArray<JobAttempt>
  /** The job's last error (why it failed, or why its last attempt did), if any. */
  readonly error: string | null
  /** Why it still waits (only for `waiting`). */
  readonly waiting: WaitReason | undefined
  /** One line: what happened to the job. */
  readonly description: string
}

export interface DrainResult {
  /** The jobs the drain ran, in the order it first ran them, then every job still waiting. */
  readonly jobs: ReadonlyArray<DrainedJob>
  readonly completed: ReadonlyArray<DrainedJob>
  readonly failed: ReadonlyArray<DrainedJob>
  readonly waiting: ReadonlyArray<DrainedJob>
  /** Every attempt the drain ran, in order. */
  readonly attempts: ReadonlyArray<JobAttempt>
  /** How far the drain moved the TestClock. */
  readonly advanced: Duration.Duration
  /** The Clock's time when the drain started and ended. */
  readonly startedAt: Date
  readonly endedAt: Date
  /** One line per job, for messages and debugging. */
  readonly summary: string
}

export interface ReportContext {
  readonly handledTypes: ReadonlySet<string>
  readonly startedAt: number
  readonly now: number
  /** The latest time the drain was allowed to reach. */
  readonly limit: number
  /** Real (wall-clock) time now: rows stamped with the database's now() lie near it. */
  readonly wallClock: number
}

const iso = (ms: number | Date) => new Date(ms).toISOString()

const describeLimit = (context: ReportContext) =>
  context.limit === context.startedAt
    ? "the drain ran only jobs due at its start (set maxAdvance to move the TestClock)"
    : `the drain could move the TestClock up to ${iso(context.limit)} (maxAdvance ${Duration.format(Duration.millis(context.limit - context.startedAt))})`

/** A row stamped by the database's now() lies ahead of the TestClock, which does not follow real time. */
const wallClockHint = (runAt: Date, context: ReportContext) =>
  runAt.getTime() > context.now && runAt.getTime() <= context.wallClock + 1_000
    ? "; its run_at is near the real time, as for a row inserted with the database's now(): call SkiplockTest.syncClock first, or give the row a run_at"
    : ""

export const waitReason = (job: JobRecord, context: ReportContext): WaitReason => {
  if (job.status === "processing") return WaitReason.Processing({ lockedBy: job.lockedBy })
  if (!context.handledTypes.has(job.jobType)) return WaitReason.NoHandler()
  if (job.runAt.getTime() > context.now) {
    return job.attempts > 0
      ? WaitReason.RetryScheduled({ runAt: job.runAt, lastError: job.error })
      : WaitReason.Scheduled({ runAt: job.runAt })
  }
  return WaitReason.Locked()
}

export const describeWait = (job: JobRecord, reason: WaitReason, context: ReportContext): string => {
  switch (reason._tag) {
    case "RetryScheduled":
      return `waiting: attempt ${job.attempts} of ${job.maxAttempts} failed (${reason.lastError ?? "no error recorded"}); the retry at ${iso(reason.runAt)} lies beyond the limit: ${describeLimit(context)}`
    case "Scheduled":
      return `waiting: scheduled for ${iso(reason.runAt)}, beyond the limit: ${describeLimit(context)}${wallClockHint(reason.runAt, context)}`
    case "NoHandler":
      return `waiting: the kit has no handler for job type "${job.jobType}" (handlers: ${[...context.handledTypes].join(", ") || "none"})`
    case "Processing":
      return `waiting: processing, held by worker ${reason.lockedBy ?? "?"} (drain runs only pending jobs and does not rescue)`
    case "Locked":
      return "waiting: due, but its row is locked by another transaction"
  }
}

const describeFinished = (job: JobRecord, attempts: ReadonlyArray<JobAttempt>) => {
  const tries = `${job.attempts} attempt${job.attempts === 1 ? "" : "s"}`
  if (job.status === "completed") return `completed after ${tries}`
  return `failed after ${tries}: ${job.error ?? "no error recorded"}${attempts.length === 0 ? " (before this drain)" : ""}`
}

export const drainedJob = (job: JobRecord, attempts: ReadonlyArray<JobAttempt>, context: ReportContext): DrainedJob => {
  if (job.status === "completed" || job.status === "failed") {
    return { status: job.status, job, attempts, error: job.error, waiting: undefined, description: describeFinished(job, attempts) }
  }
  const waiting = waitReason(job, context)
  return { status: "waiting", job, attempts, error: job.error, waiting, description: describeWait(job, waiting, context) }
}

export const makeResult = (jobs: ReadonlyArray<DrainedJob>, attempts: ReadonlyArray<JobAttempt>, context: ReportContext): DrainResult => ({
  jobs,
  completed: jobs.filter((job) => job.status === "completed"),
  failed: jobs.filter((job) => job.status === "failed"),
  waiting: jobs.filter((job) => job.status === "waiting"),
  attempts,
  advanced: Duration.millis(context.now - context.startedAt),
  startedAt: new Date(context.startedAt),
  endedAt: new Date(context.now),
  summary: jobs.length === 0
    ? "no jobs"
    : jobs.map(({ job, description }) => `${job.jobType} ${job.id} (organization ${job.organizationId}, payload ${show(job.payload, 80)}): ${description}`).join("\n")
})

/** The drain ran more attempts than its `maxRuns` allowed: a handler probably keeps enqueueing work. */
export class DrainLimitExceeded extends Data.TaggedError("DrainLimitExceeded")<{
  readonly maxRuns: number
  readonly attempts: ReadonlyArray<JobAttempt>
}> {
  override get message() {
    const byType = new Map<string, number>()
    for (const attempt of this.attempts) byType.set(attempt.jobType, (byType.get(attempt.jobType) ?? 0) + 1)
    const counts = [...byType].map(([type, n]) => `${type} ×${n}`).join(", ")
    return `drain stopped after ${this.maxRuns} attempts with work still due (${counts}): does a handler keep enqueueing jobs? Raise maxRuns if this much work is expected.`
  }
}
