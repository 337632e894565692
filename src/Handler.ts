/**
 * A handler is a job definition plus the Effect that runs it. Its error type
 * says how it can fail and its requirements (R) are provided as layers when
 * the worker is built, so the types show what is still missing.
 */
import { Duration, Effect } from "effect"
import type { CurrentJob, JobContext } from "./JobContext.js"
import type { JobDefinition } from "./JobDefinition.js"

export interface Handler<Type extends string = string, A = any, E = any, R = any> {
  readonly definition: JobDefinition<Type, A, any>
  readonly run: (payload: A, job: JobContext) => Effect.Effect<unknown, E, R>
  /**
   * Run inside one database transaction that also records the run as committed
   * (`job_runs.idempotency_status`): its SQL effects happen exactly once. The
   * job's row is completed after the commit, as any job's.
   */
  readonly transactional: boolean
  /**
   * Errors for which retrying cannot help: the job fails at once. Called only with the handler's own
   * errors, E; a transactional handler's failed BEGIN or COMMIT is retried without asking it.
   */
  readonly isPermanent: (error: unknown) => boolean
  /** After this long the attempt is interrupted and counts as a retryable failure. */
  readonly timeout: Duration.Duration
}

export interface HandlerOptions<A, E, R> {
  readonly run: (payload: A, job: JobContext) => Effect.Effect<unknown, E, R>
  readonly transactional?: boolean
  /**
   * Errors for which retrying cannot help. Write it after `run`: TypeScript infers E from the
   * options in order, and before `run` it would fix E as `never` (and then reject `run`).
   */
  readonly permanent?: (error: E) => boolean
  readonly timeout?: Duration.DurationInput
}

export const DEFAULT_TIMEOUT = Duration.minutes(30)

/** Pairs a job definition with the Effect that runs it. */
export const make = <Type extends string, A, I, E = never, R = never>(
  definition: JobDefinition<Type, A, I>,
  options: HandlerOptions<A, E, R>
): Handler<Type, A, E, R> => ({
  definition,
  run: options.run,
  transactional: options.transactional ?? false,
  isPermanent: (options.permanent as ((error: unknown) => boolean) | undefined) ?? (() => false),
  timeout: Duration.decode(options.timeout ?? DEFAULT_TIMEOUT)
})

/**
 * The requirements of a list of handlers, as one union: what the worker's layer still needs.
 * CurrentJob is not among them: the worker gives it to every job.
 */
export type Requirements<Hs extends ReadonlyArray<Handler>> = Exclude<Hs[number] extends Handler<any, any, any, infer R> ? R : never, CurrentJob>
