/**
 * Injected failures: the next N attempts of a job type fail with a chosen
 * error before the handler's own code runs, as if a dependency it calls
 * failed. The error is a typed failure, so the handler's `permanent` rule and
 * `PermanentError` decide between retry and failure exactly as in production.
 */
import { Effect } from "effect"
import type { Handler } from "../Handler.js"
import type { JobDefinition } from "../JobDefinition.js"

/** A job type, by name, definition or handler. */
export type JobTypeRef = string | JobDefinition | Handler

export const jobTypeOf = (ref: JobTypeRef): string =>
  typeof ref === "string" ? ref : "definition" in ref ? ref.definition.jobType : ref.jobType

export const make = () => {
  const pending = new Map<string, Array<unknown>>()

  const take = (jobType: string): { readonly error: unknown } | undefined => {
    const queue = pending.get(jobType)
    if (queue === undefined || queue.length === 0) return undefined
    return { error: queue.shift() }
  }

  return {
    /** Queues `times` failures with `error` for the job type, after any already queued. */
    failNext: (ref: JobTypeRef, times: number, error: unknown) =>
      Effect.sync(() => {
        if (!Number.isInteger(times) || times < 1) throw new Error(`failNext: times must be a whole number of at least 1, got ${times}`)
        const jobType = jobTypeOf(ref)
        const queue = pending.get(jobType) ?? []
        for (let i = 0; i < times; i++) queue.push(error)
        pending.set(jobType, queue)
      }),

    /** How many injected failures are still waiting for the job type. */
    remaining: (ref: JobTypeRef) => Effect.sync(() => pending.get(jobTypeOf(ref))?.length ?? 0),

    clear: Effect.sync(() => pending.clear()),

    /** The handler, failing its next attempts while failures are queued for its job type. */
    wrap: <H extends Handler>(handler: H): H => ({
      ...handler,
      run: (payload: unknown, job: Parameters<H["run"]>[1]) =>
        Effect.suspend(() => {
          const fault = take(handler.definition.jobType)
          return fault === undefined ? handler.run(payload, job) : Effect.fail(fault.error)
        })
    })
  }
}

export type Faults = ReturnType<typeof make>
