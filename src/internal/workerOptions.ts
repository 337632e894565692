/**
 * The worker's options: their defaults, their bounds and their check. The bounds are one rule for both
 * ways in, `Worker.make`'s options and the service's WORKER_* variables (src/config/ServiceConfig.ts),
 * so that neither accepts what the other refuses. A bad option fails with InvalidWorkerOptions, naming
 * the option and the value, before the worker starts anything.
 */
import { Duration, Either, Option } from "effect"
import { InvalidWorkerOptions } from "../Errors.js"
import type { Handler } from "../Handler.js"
import type { WorkerOptions } from "../Worker.js"
import { textProblem } from "./validate.js"

export interface Range<A> {
  readonly min: A
  readonly max: A
}

// The longest wait a timer can hold: Node's and Effect's timers take at most 2^31 - 1 ms (~24.8 days) and
// treat anything longer as never (a poll interval of 30 days meant no poll).
const MAX_WAIT = Duration.days(24)
// How often a background task runs: within a timer's reach, and not so often that it hammers the database
// (at 0 it would run without pause).
const INTERVAL: Range<Duration.Duration> = { min: Duration.millis(10), max: MAX_WAIT }

export const LIMITS = {
  batchSize: { min: 1, max: 1000 },
  concurrency: { min: 1, max: 1000 },
  prefetch: { min: 0, max: 1000 },
  pollInterval: INTERVAL,
  // And longer than heartbeatInterval, or leases run out between heartbeats (see check).
  leaseDuration: INTERVAL,
  heartbeatInterval: INTERVAL,
  rescueInterval: INTERVAL,
  pruneInterval: INTERVAL,
  // 0: retry at once. Finite (PostgreSQL reads no infinite interval: every failed attempt's record would fail),
  // and at most 24 days as the waits, which keeps the 100th attempt's wait (× 99², ~640 years) a date.
  retryBackoff: { min: Duration.zero, max: MAX_WAIT },
  // 0: interrupt running jobs at once.
  shutdownTimeout: { min: Duration.zero, max: MAX_WAIT },
  // At least an hour, so that an operator can still see and retry a failed job; at most what a date can
  // be counted back by (999999999 weeks made every prune fail on an invalid date).
  retention: { min: Duration.hours(1), max: Duration.days(36_500) }
} as const

type CountOption = "batchSize" | "concurrency" | "prefetch"
type DurationOption = Exclude<keyof typeof LIMITS, CountOption>

/** "from 10ms to 24d", or "of at most 24d" when it may be zero. */
export const durationRange = ({ min, max }: Range<Duration.Duration>) =>
  Duration.greaterThan(min, Duration.zero) ? `from ${Duration.format(min)} to ${Duration.format(max)}` : `of at most ${Duration.format(max)}`

/** What the worker runs with: every option checked, its default filled in. */
export interface WorkerSettings {
  readonly workerId: string
  readonly handlers: ReadonlyMap<string, Handler>
  readonly batchSize: number
  readonly concurrency: number
  readonly prefetch: number
  readonly pollInterval: Duration.Duration
  readonly leaseDuration: Duration.Duration
  readonly heartbeatInterval: Duration.Duration
  readonly rescueInterval: Duration.Duration
  readonly pruneInterval: Duration.Duration
  readonly retryBackoff: Duration.Duration
  readonly shutdownTimeout: Duration.Duration
  /** Undefined: finished jobs are kept for good. */
  readonly retention: Duration.Duration | undefined
}

const DEFAULTS = {
  batchSize: 5,
  concurrency: 5,
  prefetch: 0,
  pollInterval: "5 seconds",
  leaseDuration: "30 seconds",
  heartbeatInterval: "10 seconds",
  rescueInterval: "5 seconds",
  pruneInterval: "1 minute",
  retryBackoff: "30 seconds",
  shutdownTimeout: "30 seconds",
  retention: "7 days"
} as const

const invalid = (option: string, reason: string) => Either.left(new InvalidWorkerOptions({ option, reason }))

/** A value as given where a number or text was expected: text quoted (concurrency "10" is no 10), a bigint as one. */
const given = (value: unknown): string =>
  typeof value === "string" ? JSON.stringify(value) : typeof value === "bigint" ? `${value}n` : String(value)

const count = (option: CountOption, input: number | undefined) => {
  const { min, max } = LIMITS[option]
  const value = input ?? DEFAULTS[option]
  return Number.isInteger(value) && value >= min && value <= max
    ? Either.right(value)
    : invalid(option, `${option} must be a whole number from ${min} to ${max}, got ${given(value)}`)
}

// Duration.decode takes a negative or NaN amount ("-5 seconds", -1, NaN, [-1, 0]) for zero, without a word.
const negativeOrNaN = (input: unknown): boolean =>
  typeof input === "string"
    ? input.trim().startsWith("-")
    : typeof input === "number"
    ? Number.isNaN(input) || input < 0
    : typeof input === "bigint"
    ? input < 0n
    : Array.isArray(input) && input.some(negativeOrNaN)

/** A duration as it was given: text quoted, a number as the milliseconds it means. */
const shown = (input: unknown): string =>
  typeof input === "string"
    ? JSON.stringify(input)
    : typeof input === "number"
    ? Number.isFinite(input) ? `${input}ms` : String(input)
    : typeof input === "bigint"
    ? `${input}ns`
    : Duration.isDuration(input)
    ? Duration.format(input)
    : Array.isArray(input)
    ? `[${input.join(", ")}]`
    : String(input)

/** One duration option checked, its default filled in (the test kit's retryBackoff takes the worker's rule too). */
export const duration = (option: DurationOption, value: Duration.DurationInput | undefined, what = "a duration") => {
  const input = value ?? DEFAULTS[option]
  const range = LIMITS[option]
  const must = `${option} must be ${what} ${durationRange(range)}`
  if (negativeOrNaN(input)) return invalid(option, `${must}, got ${shown(input)}`)
  const decoded = Duration.decodeUnknown(input)
  if (Option.isNone(decoded)) {
    return invalid(option, `${must}, got ${shown(input)}, which is not one (write "5 seconds", 5000 for milliseconds, or Duration.seconds(5))`)
  }
  return Duration.between(decoded.value, { minimum: range.min, maximum: range.max }) ? Either.right(decoded.value) : invalid(option, `${must}, got ${shown(input)}`)
}

// job_workers' key: its index takes no entry over 2704 bytes, so a worker with a longer id could never register
// (and would run unregistered, warning at every heartbeat). 500 characters are at most 1500 bytes in UTF-8.
export const MAX_WORKER_ID_LENGTH = 500

const checkWorkerId = (workerId: unknown) => {
  if (typeof workerId !== "string") return invalid("workerId", `workerId must be text, got ${given(workerId)}`)
  if (workerId.trim() === "") {
    return invalid("workerId", `workerId must not be blank: it names the worker in every audit entry, which must name who acted; got ${JSON.stringify(workerId)}`)
  }
  if (workerId.length > MAX_WORKER_ID_LENGTH) {
    return invalid(
      "workerId",
      `workerId must be at most ${MAX_WORKER_ID_LENGTH} characters: it is the key of the worker's row in job_workers, whose index takes no longer one; got ${workerId.length}`
    )
  }
  const problem = textProblem(workerId)
  return problem === undefined ? Either.right(workerId) : invalid("workerId", `workerId ${problem}`)
}

// A handler's timeout is a timer too: one longer than a timer holds would never fire (and under the TestClock it
// would, so a test would pass that production fails); at 0 every attempt would time out at once.
const HANDLER_TIMEOUT: Range<Duration.Duration> = { min: Duration.millis(1), max: MAX_WAIT }

/** Why a handler's timeout cannot be used, or undefined (the worker and the test kit check it alike). */
export const handlerTimeoutProblem = (handler: Handler): string | undefined =>
  Duration.between(handler.timeout, { minimum: HANDLER_TIMEOUT.min, maximum: HANDLER_TIMEOUT.max })
    ? undefined
    : `the handler for "${handler.definition.jobType}" has a timeout of ${Duration.format(handler.timeout)}; ` +
      `a handler's timeout must be ${durationRange(HANDLER_TIMEOUT)} (a timer holds no longer)`

const checkHandlers = (handlers: ReadonlyArray<Handler>) => {
  const byType = new Map<string, Handler>()
  for (const handler of handlers) {
    const jobType = handler.definition.jobType
    if (byType.has(jobType)) return invalid("handlers", `handlers must have one handler per job type, got two for "${jobType}"`)
    const problem = handlerTimeoutProblem(handler)
    if (problem !== undefined) return invalid("handlers", problem)
    byType.set(jobType, handler)
  }
  return Either.right(byType)
}

/** The options checked in the order WorkerOptions lists them, the first bad one named; defaults filled in. */
export const check = (
  options: WorkerOptions<ReadonlyArray<Handler>>,
  defaultWorkerId: () => string
): Either.Either<WorkerSettings, InvalidWorkerOptions> =>
  Either.gen(function* () {
    const handlers = yield* checkHandlers(options.handlers)
    const workerId = yield* checkWorkerId(options.workerId ?? defaultWorkerId())
    const pollInterval = yield* duration("pollInterval", options.pollInterval)
    const batchSize = yield* count("batchSize", options.batchSize)
    const concurrency = yield* count("concurrency", options.concurrency)
    const prefetch = yield* count("prefetch", options.prefetch)
    const retryBackoff = yield* duration("retryBackoff", options.retryBackoff)
    const leaseDuration = yield* duration("leaseDuration", options.leaseDuration)
    const heartbeatInterval = yield* duration("heartbeatInterval", options.heartbeatInterval)
    if (!Duration.lessThan(heartbeatInterval, leaseDuration)) {
      const which = (option: "heartbeatInterval" | "leaseDuration", value: Duration.Duration) =>
        `${Duration.format(value)}${options[option] === undefined ? " (the default)" : ""}`
      return yield* invalid(
        "heartbeatInterval",
        `heartbeatInterval must be shorter than leaseDuration, got ${which("heartbeatInterval", heartbeatInterval)} for a lease of ` +
          `${which("leaseDuration", leaseDuration)}: leases would run out between heartbeats, and a job running longer than its lease be rescued while its handler still runs, and run a second time`
      )
    }
    const rescueInterval = yield* duration("rescueInterval", options.rescueInterval)
    const retention = options.retention === "forever" ? undefined : yield* duration("retention", options.retention, `"forever" or a duration`)
    const pruneInterval = yield* duration("pruneInterval", options.pruneInterval)
    const shutdownTimeout = yield* duration("shutdownTimeout", options.shutdownTimeout)
    return {
      workerId, handlers, batchSize, concurrency, prefetch, pollInterval, leaseDuration, heartbeatInterval,
      rescueInterval, pruneInterval, retryBackoff, shutdownTimeout, retention
    }
  })
