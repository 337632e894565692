/**
 * The errors of skiplock's public API, as tagged types. Database failures stay
 * `SqlError` from @effect/sql; these name problems with the caller's input or
 * a job's state, and each message says what is wrong.
 */
import { Data } from "effect"
import { oneLine } from "./internal/describe.js"

// Which input of an enqueueMany an error is about, when it names one.
const inputAt = (index: number | undefined) => (index === undefined ? "" : `inputs[${index}]: `)

/** The job type is not registered in `job_types`. */
export class UnknownJobType extends Data.TaggedError("UnknownJobType")<{
  readonly jobType: string
  readonly registered: ReadonlyArray<string>
  /** In an enqueueMany of several jobs: which input, from 0. */
  readonly index?: number | undefined
}> {
  override get message() {
    return `${inputAt(this.index)}unknown job type "${oneLine(this.jobType)}" (registered: ${this.registered.join(", ") || "none"})`
  }
}

/** A payload does not match its job type's Schema. */
export class InvalidPayload extends Data.TaggedError("InvalidPayload")<{
  readonly jobType: string
  readonly reason: string
  /** In an enqueueMany of several jobs: which input, from 0. */
  readonly index?: number | undefined
}> {
  override get message() {
    return `${inputAt(this.index)}invalid payload for job type "${this.jobType}": ${this.reason}`
  }
}

/** An option is outside what the queue accepts: an enqueue's (not a UUID, max attempts out of range, …), or a change by hand's (a blank actor or reason, a bad filter). */
export class InvalidJobOptions extends Data.TaggedError("InvalidJobOptions")<{
  readonly reason: string
  /** In an enqueueMany of several jobs: which input, from 0. */
  readonly index?: number | undefined
}> {
  override get message() {
    return `${inputAt(this.index)}invalid job options: ${this.reason}`
  }
}

/** A worker option is outside what the worker accepts (`Worker.make`, `Worker.layer`): nothing was started. */
export class InvalidWorkerOptions extends Data.TaggedError("InvalidWorkerOptions")<{
  /** The option's name, e.g. `heartbeatInterval`. */
  readonly option: string
  readonly reason: string
}> {
  override get message() {
    return `invalid worker options: ${this.reason}`
  }
}

/** No job has this id. */
export class JobNotFound extends Data.TaggedError("JobNotFound")<{
  readonly jobId: string
  /** The job existed (its audit trail remains) and its row was deleted: by retention, or by hand. */
  readonly pruned?: boolean | undefined
}> {
  override get message() {
    return this.pruned === true
      ? `no job with id ${this.jobId} any more: its row was deleted (as retention deletes finished jobs, WORKER_JOB_RETENTION); ` +
          `its audit trail remains (skiplock jobs show ${this.jobId})`
      : `no job with id ${this.jobId}`
  }
}

/** Another session's open transaction held the job's row for longer than an operator's command waits. */
export class JobRowLocked extends Data.TaggedError("JobRowLocked")<{
  readonly jobId: string
  readonly operation: string
  readonly waitedMillis: number
}> {
  override get message() {
    return `cannot ${this.operation} job ${this.jobId}: another session's open transaction held its row for ${this.waitedMillis / 1000} s; ` +
      "end that transaction (COMMIT or ROLLBACK there; the runbook's error handling, step 5, shows how to find it) and run the command again"
  }
}

/** The job is not in a state that allows the operation. */
export class InvalidJobState extends Data.TaggedError("InvalidJobState")<{
  readonly jobId: string
  readonly status: string
  readonly operation: string
  readonly allowed: ReadonlyArray<string>
  /** Why, when the status alone does not say (it is one of the allowed). */
  readonly because?: string
}> {
  override get message() {
    return this.because !== undefined
      ? `cannot ${this.operation} job ${this.jobId}: it is ${this.status}, but ${this.because}`
      : `cannot ${this.operation} job ${this.jobId}: it is ${this.status} (allowed: ${this.allowed.join(", ")})`
  }
}

/**
 * A handler fails with this (or with an error its `permanent` predicate
 * accepts) when retrying cannot help: the job goes to `failed` at once.
 */
export class PermanentError extends Data.TaggedError("PermanentError")<{
  readonly message: string
  readonly cause?: unknown
}> {}

/** A handler ran longer than its timeout; counted as a retryable failure. */
export class HandlerTimeout extends Data.TaggedError("HandlerTimeout")<{
  readonly jobType: string
  readonly timeoutMillis: number
}> {
  override get message() {
    return `handler for "${this.jobType}" timed out after ${this.timeoutMillis} ms`
  }
}
