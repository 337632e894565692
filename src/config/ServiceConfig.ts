/**
 * The service's configuration, read from the environment with Effect `Config`.
 * Every setting has a default (README lists them); an empty variable counts as
 * unset. A bad value fails with a ConfigError whose message names the variable,
 * the value and what it accepts; `describeConfigError` turns it into lines.
 */
import { Config, ConfigError, Duration, Either, LogLevel, Option, Redacted } from "effect"
import { isAbsolute, resolve } from "node:path"
import { redactUrl } from "../internal/describe.js"
import { ANSWER_TIMEOUT_RANGE, DEFAULT_ANSWER_TIMEOUT } from "../internal/preparedStatements.js"
import { durationRange, LIMITS, MAX_WORKER_ID_LENGTH, type Range } from "../internal/workerOptions.js"

// Every variable a setting reads, and the test kit's own, to tell a misspelled one (see unknownVariables).
const KNOWN = new Set(["SKIPLOCK_TEST_ADMIN_URL"])
const OURS = /^(WORKER|SKIPLOCK|DATABASE|LOG)_/

/**
 * The variables of the environment that look like skiplock's and are none of them: a misspelled one
 * (WORKER_CONCURENCY) would otherwise be ignored without a word, its setting left at the default.
 */
export const unknownVariables = (env: Readonly<Record<string, string | undefined>>): ReadonlyArray<string> =>
  Object.keys(env).filter((name) => OURS.test(name) && !KNOWN.has(name)).sort()

/**
 * One variable: its default and a parser that returns the value or what the variable accepts. The error
 * quotes the value as `shown` gives it (a URL without its password: the message goes to logs).
 */
const setting = <A>(
  name: string,
  fallback: A,
  parse: (raw: string) => Either.Either<A, string>,
  shown: (raw: string) => string = (raw) => raw
): Config.Config<A> => {
  KNOWN.add(name)
  return Config.option(Config.string(name)).pipe(
    Config.mapOrFail((raw) => {
      const value = Option.getOrUndefined(raw)?.trim()
      if (value === undefined || value === "") return Either.right(fallback)
      return Either.mapLeft(parse(value), (accepts) =>
        ConfigError.InvalidData([name], `${name}=${JSON.stringify(shown(value))} is not valid: expected ${accepts}`)
      )
    })
  )
}

const integer = ({ min, max }: Range<number>) => (raw: string) => {
  const accepts = `a whole number from ${min} to ${max}`
  if (!/^-?\d+$/.test(raw)) return Either.left(accepts)
  const value = Number(raw)
  return value >= min && value <= max ? Either.right(value) : Either.left(accepts)
}

const UNITS: Record<string, number> = {
  ms: 1, millis: 1, millisecond: 1, milliseconds: 1,
  s: 1000, sec: 1000, second: 1000, seconds: 1000,
  m: 60_000, min: 60_000, minute: 60_000, minutes: 60_000,
  h: 3_600_000, hour: 3_600_000, hours: 3_600_000,
  d: 86_400_000, day: 86_400_000, days: 86_400_000,
  w: 604_800_000, week: 604_800_000, weeks: 604_800_000
}

/** Parses `500ms`, `5s`, `2m`, `1h`, `7d`, `2w` or Effect's long form `5 seconds`. A bare number is refused: its unit would be a guess. */
export const parseDuration = (raw: string): Duration.Duration | undefined => {
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]+)$/i.exec(raw.trim())
  const factor = match ? UNITS[match[2]!.toLowerCase()] : undefined
  return match && factor !== undefined ? Duration.millis(Math.round(Number(match[1]) * factor)) : undefined
}

// The bounds are the worker's own (Worker.make checks its options with the same rule).
const duration = (range: Range<Duration.Duration>) => (raw: string) => {
  // Examples the setting takes: short ones for intervals, long ones for a retention.
  const examples = Duration.greaterThanOrEqualTo(range.min, Duration.hours(1)) ? `12h, 7d, 2w or "7 days"` : `500ms, 5s, 2m or "5 seconds"`
  const accepts = `a duration ${durationRange(range)} with a unit, such as ${examples}`
  const value = parseDuration(raw)
  return value !== undefined && Duration.between(value, { minimum: range.min, maximum: range.max }) ? Either.right(value) : Either.left(accepts)
}

const oneOf = <const L extends ReadonlyArray<string>>(...literals: L) => (raw: string) =>
  (literals as ReadonlyArray<string>).includes(raw.toLowerCase())
    ? Either.right(raw.toLowerCase() as L[number])
    : Either.left(`one of ${literals.join(", ")}`)

// Each word with its value, in the order the error message lists them.
const SWITCHES = new Map([["true", true], ["false", false], ["yes", true], ["no", false], ["on", true], ["off", false], ["1", true], ["0", false]])
const onOff = (raw: string) => Either.map(oneOf(...SWITCHES.keys())(raw), (word) => SWITCHES.get(word)!)

const postgresUrl = (raw: string) => {
  const accepts = "a postgres:// or postgresql:// connection URL, e.g. postgres://user:password@host:5432/database"
  // A scheme is case-insensitive (POSTGRES:// is postgres://), as `pg` reads it.
  if (!/^postgres(ql)?:\/\//i.test(raw)) return Either.left(accepts)
  try {
    // A user on a local socket names no host (postgresql://user@/db?host=/var/run/postgresql), which `pg`
    // takes and WHATWG URLs refuse: checked as if the host were there.
    new URL(raw.replace(/^(postgres(?:ql)?:\/\/[^/]*@)\//i, "$1localhost/"))
    return Either.right(Option.some(Redacted.make(raw)))
  } catch {
    return Either.left(accepts)
  }
}

const LOG_LEVELS = {
  all: LogLevel.All, trace: LogLevel.Trace, debug: LogLevel.Debug, info: LogLevel.Info,
  warning: LogLevel.Warning, warn: LogLevel.Warning, error: LogLevel.Error, fatal: LogLevel.Fatal, none: LogLevel.None
} as const

const text = (raw: string) => Either.right(raw)
// The worker's own bound (Worker.make checks its workerId with the same one).
const workerId = (raw: string) =>
  raw.length <= MAX_WORKER_ID_LENGTH ? Either.right(Option.some(raw)) : Either.left(`text of at most ${MAX_WORKER_ID_LENGTH} characters`)
const list = (raw: string) => Either.right(raw.split(",").map((item) => item.trim()).filter((item) => item !== ""))

/** The embedded server's fixed, local-only credentials: it listens on 127.0.0.1 only. */
export const EMBEDDED_USER = "postgres"
export const EMBEDDED_PASSWORD = "postgres"
export const EMBEDDED_DATABASE = "skiplock"

export interface DatabaseConfig {
  /** `DATABASE_URL`; none means: the embedded server. */
  readonly url: Option.Option<Redacted.Redacted<string>>
  /** Where the embedded server keeps its data (`SKIPLOCK_DATA_DIR`, default `.data` in the working directory). */
  readonly dataDir: string
  /** The embedded server's port (`SKIPLOCK_EMBEDDED_PORT`, default 54329). */
  readonly embeddedPort: number
  /** Whether skiplock's job-path statements are named prepared statements (`DATABASE_PREPARED_STATEMENTS`, default true). */
  readonly preparedStatements: boolean
  /** How long the worker's bookkeeping statements may go unanswered before they are given up (`DATABASE_ANSWER_TIMEOUT`, default 30 s). */
  readonly answerTimeout: Duration.Duration
}

export const databaseConfig: Config.Config<DatabaseConfig> = Config.all({
  url: setting("DATABASE_URL", Option.none<Redacted.Redacted<string>>(), postgresUrl, redactUrl),
  dataDir: setting("SKIPLOCK_DATA_DIR", ".data", text).pipe(Config.map((dir) => (isAbsolute(dir) ? dir : resolve(process.cwd(), dir)))),
  embeddedPort: setting("SKIPLOCK_EMBEDDED_PORT", 54329, integer({ min: 1, max: 65535 })),
  preparedStatements: setting("DATABASE_PREPARED_STATEMENTS", true, onOff),
  answerTimeout: setting("DATABASE_ANSWER_TIMEOUT", DEFAULT_ANSWER_TIMEOUT, duration(ANSWER_TIMEOUT_RANGE))
})

/** The URL of the embedded server's database (what `npm start` prints, and what the CLI uses without DATABASE_URL). */
export const embeddedUrl = (port: number) =>
  `postgres://${EMBEDDED_USER}:${EMBEDDED_PASSWORD}@127.0.0.1:${port}/${EMBEDDED_DATABASE}`

/** DATABASE_URL, or the embedded server's URL when it is not set. */
export const effectiveDatabaseUrl = (config: DatabaseConfig): Redacted.Redacted<string> =>
  Option.getOrElse(config.url, () => Redacted.make(embeddedUrl(config.embeddedPort)))

export interface HttpConfig {
  readonly host: string
  readonly port: number
}

export const httpConfig: Config.Config<HttpConfig> = Config.all({
  host: setting("HOST", "0.0.0.0", text),
  port: setting("PORT", 8080, integer({ min: 0, max: 65535 }))
})

export interface WorkerConfig {
  readonly workerId: Option.Option<string>
  readonly pollInterval: Duration.Duration
  readonly batchSize: number
  readonly concurrency: number
  /** Jobs claimed ahead of free slots (Worker's `prefetch`); 0: none. */
  readonly prefetch: number
  /** Attempts for jobs enqueued through skiplock (CLI, Promise facade) without their own; SQL inserts use the column default 3. */
  readonly maxAttempts: number
  readonly shutdownTimeout: Duration.Duration
  /** How long finished (completed or failed) jobs stay in job_queue; job_runs and audit_logs keep them for good. */
  readonly retention: Duration.Duration | "forever"
  /** Whether enqueues of this process hand jobs to its worker's free slots (LocalWorkers). */
  readonly handOff: boolean
}

export const workerConfig: Config.Config<WorkerConfig> = Config.all({
  workerId: setting("WORKER_ID", Option.none<string>(), workerId),
  pollInterval: setting("WORKER_POLL_INTERVAL", Duration.seconds(5), duration(LIMITS.pollInterval)),
  batchSize: setting("WORKER_BATCH_SIZE", 5, integer(LIMITS.batchSize)),
  concurrency: setting("WORKER_CONCURRENCY", 5, integer(LIMITS.concurrency)),
  prefetch: setting("WORKER_PREFETCH", 0, integer(LIMITS.prefetch)),
  maxAttempts: setting("WORKER_MAX_ATTEMPTS", 3, integer({ min: 1, max: 100 })),
  shutdownTimeout: setting("WORKER_SHUTDOWN_TIMEOUT", Duration.seconds(30), duration(LIMITS.shutdownTimeout)),
  retention: setting("WORKER_JOB_RETENTION", Duration.days(7) as Duration.Duration | "forever", (raw) =>
    raw.toLowerCase() === "forever"
      ? Either.right("forever" as const)
      : Either.mapLeft(duration(LIMITS.retention)(raw), (accepts) => `${accepts}, or "forever"`)
  ),
  handOff: setting("WORKER_HAND_OFF", true, onOff)
})

export type LogFormat = "auto" | "json" | "pretty" | "logfmt"

export interface LogConfig {
  readonly level: LogLevel.LogLevel
  /** `auto`: pretty in a terminal, JSON otherwise. */
  readonly format: LogFormat
}

export const logConfig: Config.Config<LogConfig> = Config.all({
  level: setting("LOG_LEVEL", LogLevel.Info as LogLevel.LogLevel, (raw) =>
    Either.map(oneOf("trace", "debug", "info", "warning", "warn", "error", "fatal", "none", "all")(raw), (name) => LOG_LEVELS[name])
  ),
  format: setting("LOG_FORMAT", "auto" as LogFormat, oneOf("auto", "json", "pretty", "logfmt"))
})

/**
 * `SKIPLOCK_HANDLER_MODULES`: extra modules (comma-separated paths or package
 * names) whose exported `handlers` the worker runs beside the application's.
 */
export const handlerModulesConfig: Config.Config<ReadonlyArray<string>> = setting("SKIPLOCK_HANDLER_MODULES", [] as ReadonlyArray<string>, list)

export interface ServiceConfig {
  readonly database: DatabaseConfig
  readonly http: HttpConfig
  readonly worker: WorkerConfig
  readonly log: LogConfig
  readonly handlerModules: ReadonlyArray<string>
}

export const serviceConfig: Config.Config<ServiceConfig> = Config.all({
  database: databaseConfig,
  http: httpConfig,
  worker: workerConfig,
  log: logConfig,
  handlerModules: handlerModulesConfig
})

/** One line per bad variable, e.g. `PORT="abc" is not valid: expected a whole number from 0 to 65535`. */
export const describeConfigError = (error: ConfigError.ConfigError): ReadonlyArray<string> => {
  switch (error._op) {
    case "And":
    case "Or":
      return [...describeConfigError(error.left), ...describeConfigError(error.right)]
    case "InvalidData":
    case "MissingData":
    case "Unsupported":
      return [error.message.includes(error.path.join("_")) ? error.message : `${error.path.join("_")}: ${error.message}`]
    case "SourceUnavailable":
      return [`cannot read the configuration: ${error.message}`]
  }
}
