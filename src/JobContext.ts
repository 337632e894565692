/** What a handler knows about the job it runs, beside its payload. */
import { Context } from "effect"

export interface JobContext {
  readonly jobId: string
  readonly jobType: string
  readonly organizationId: string
  /** 1 for the first attempt. */
  readonly attempt: number
  readonly maxAttempts: number
  /** W3C trace id (32 lowercase hex) of the job's span, also stored in `job_runs.trace_id`. */
  readonly traceId: string
  /** The key under which the job's effects must happen at most once; the job id when none was given. */
  readonly idempotencyKey: string
  readonly createdBy: string | null
  readonly workerId: string
}

/** The running job, for code deep inside a handler that needs it without threading it through. */
export class CurrentJob extends Context.Tag("skiplock/CurrentJob")<CurrentJob, JobContext>() {}
