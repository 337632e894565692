/**
 * The operator CLI's commands (`npx skiplock <command>`, `npm run cli -- <command>`).
 * Each command is a thin shell over an Effect from src/app or the core: it
 * parses and validates its input (bad input is a usage error, exit 2), runs
 * against the database, and prints text or, with --json, JSON.
 */
import { Args, Command, HelpDoc, Options, ValidationError } from "@effect/cli"
import { Cause, Console, Effect, Either, Layer, Option, Redacted, Schema } from "effect"
import { userInfo } from "node:os"
import * as AppJobs from "../app/jobs.js"
import { billingCommand, demoCommand } from "../billing/index.js"
import * as QueueStats from "../app/QueueStats.js"
import { databaseConfig, effectiveDatabaseUrl, handlerModulesConfig, workerConfig } from "../config/ServiceConfig.js"
import * as Db from "../Db.js"
import * as JobQueue from "../JobQueue.js"
import * as Jobs from "../Jobs.js"
import * as Migrator from "../Migrator.js"
import { sqlErrorText } from "../internal/sqlErrorText.js"
import { runService } from "../main.js"
import { redactUrl } from "../internal/describe.js"
import { AlreadyReported, CliFailure } from "./CliFailure.js"
import * as Format from "./format.js"

// ─── Input validation: a value that cannot be what the option needs is a usage error ───

const invalid = (message: string) => ValidationError.invalidValue(HelpDoc.p(message))

const isUuid = Schema.is(Schema.UUID)

const notUuid = (what: string, value: string) =>
  `${what} must be a UUID like 3f2c1e4a-9b7d-4c2e-8f1a-0d6b5e4c3a21, got ${JSON.stringify(value)}`

const uuid = (what: string) => (value: string) =>
  isUuid(value) ? Effect.succeed(value) : Effect.fail(invalid(notUuid(what, value)))

// JSON's numbers outside strings (a string's digits are its own): JSON.parse reads each as a double.
const JSON_TOKENS = /"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g

/** A decimal's value as sign, significant digits and power of ten ("-12.50e3" and "-12500" → "-125e2"; zero → "0"). */
const decimalValue = (text: string): string => {
  const [, sign = "", whole = "", fraction = "", exponent = "0"] = /^(-?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/.exec(text) ?? []
  const digits = (whole + fraction).replace(/^0+/, "")
  const significant = digits.replace(/0+$/, "")
  if (significant === "") return "0"
  return `${sign}${significant}e${Number(exponent) - fraction.length + digits.length - significant.length}`
}

/**
 * The first number of the JSON text that JSON.parse would change, or that a handler could not count on:
 * one whose double, written back as JavaScript writes it (what the job stores), has another value than
 * the text (an integer past 2^53 however it is written, more digits than a double holds, beyond its
 * range), and any integer written as digits alone past 2^53.
 */
const numberChangedByParse = (text: string): string | undefined => {
  for (const [token] of text.matchAll(JSON_TOKENS)) {
    if (token.startsWith('"')) continue
    const value = Number(token)
    if (!Number.isFinite(value) || decimalValue(token) !== decimalValue(String(value))) return token
    if (/^-?\d+$/.test(token) && !Number.isSafeInteger(value)) return token
  }
  return undefined
}

const jsonObject = (value: string) => {
  const parsed = Either.try(() => JSON.parse(value) as unknown)
  if (Either.isLeft(parsed)) {
    return Effect.fail(invalid(`--payload is not valid JSON: ${(parsed.left as Error).message}`))
  }
  // Stored as read, such a number would silently be another (12345678901234567890 became 12345678901234567000).
  const changed = numberChangedByParse(value)
  if (changed !== undefined) {
    return Effect.fail(invalid(
      `--payload has the number ${changed.length > 40 ? `${changed.slice(0, 40)}…` : changed}, which a JSON number (a double) cannot carry exactly: ` +
        "integers up to 9007199254740991 can; send larger ones, or amounts that must stay exact, as strings"
    ))
  }
  return Effect.succeed(parsed.right)
}

// A time without its zone would be read in the zone of the machine the CLI runs on (a date alone, in UTC):
// an operator's 06:00 could become 05:00, 06:00 or 07:00. The zone is asked for instead.
const ZONED_TIME = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})$/
// Date rolls 2030-02-30 over to March 2nd: a time exists when its fields come back as written.
const fieldsExist = ([year, month, day, hour, minute, second]: ReadonlyArray<number>): boolean => {
  // setUTCFullYear, not Date.UTC, which reads the years 0 to 99 as 1900 to 1999 (0000-02-29 exists: a leap year).
  const written = new Date(0)
  written.setUTCFullYear(year!, month! - 1, day!)
  written.setUTCHours(hour!, minute!, second!)
  return [written.getUTCMonth() + 1, written.getUTCDate(), written.getUTCHours(), written.getUTCMinutes(), written.getUTCSeconds()]
    .every((field, i) => field === [month, day, hour, minute, second][i])
}
const zonedTime = (value: string) => {
  const fields = ZONED_TIME.exec(value)?.slice(1, 7).map((field) => Number(field ?? 0))
  const date = new Date(value)
  return fields !== undefined && fieldsExist(fields) && !Number.isNaN(date.getTime())
    ? Effect.succeed(date)
    : Effect.fail(invalid(`--run-at must be a time with its zone, like 2025-04-01T06:00:00Z or 2025-04-01T08:00:00+02:00, got "${value}"`))
}

const jobIdArg = Args.text({ name: "job-id" }).pipe(Args.withDescription("The job's id (a UUID)"), Args.mapEffect((value) => (isUuid(value) ? Effect.succeed(value) : Effect.fail(HelpDoc.p(notUuid("the job id", value))))))
const actorOption = Options.text("actor").pipe(
  Options.withDescription("Who does this, as a user UUID, for the audit log (default: cli:<your OS user>)"),
  Options.mapEffect(uuid("--actor")),
  Options.optional
)
const jsonOption = Options.boolean("json").pipe(Options.withDescription("Print JSON instead of text"))

const defaultActor = () => {
  try {
    return `cli:${userInfo().username}`
  } catch {
    return "cli"
  }
}
const actorOf = (actor: Option.Option<string>) => Option.getOrElse(actor, defaultActor)

const printJson = (value: unknown) => Console.log(JSON.stringify(value, null, 2))

// ─── The database of a command: DATABASE_URL, or the embedded server `npm start` runs ───

/** A PgClient for DATABASE_URL (or the embedded default), failing with a message that says where it looked. */
export const CliDatabase = Layer.unwrapEffect(
  Effect.map(databaseConfig, (config) => {
    const url = effectiveDatabaseUrl(config)
    const display = redactUrl(Redacted.value(url))
    const hint = Option.isNone(config.url)
      ? ` (DATABASE_URL is not set, so skiplock uses the embedded PostgreSQL that \`npm start\` runs on 127.0.0.1:${config.embeddedPort}: start it, or set DATABASE_URL)`
      : ""
    return Db.layer({ url, maxConnections: 3, preparedStatements: config.preparedStatements }).pipe(
      Layer.mapError((error) => new CliFailure({ message: `cannot reach the database ${display}: ${sqlErrorText(error)}${hint}`, cause: error }))
    )
  })
)

const withDatabase = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.provide(effect, CliDatabase)

// ─── Commands ───

const migrate = Command.make("migrate", {}, () =>
  withDatabase(
    Effect.gen(function* () {
      const applied = yield* Migrator.migrate(AppJobs.migrationSets)
      yield* Console.log(applied.length === 0 ? "migrations are up to date" : `applied ${applied.length} migration(s):\n${applied.map((name) => `  ${name}`).join("\n")}`)
      for (const finding of yield* AppJobs.checkData) yield* Console.error(`warning: ${finding}`)
    })
  )
).pipe(Command.withDescription("Apply the database migrations (all sets, in order); safe to run again"))

/**
 * Set once `skiplock start` runs the service, whatever options came before the command: a stop by a signal
 * is then the end the service should have, not a command cut short (main.ts exits 0 for it, not 130).
 */
export const serviceStarted = { value: false }

const start = Command.make("start", {}, () =>
  Effect.suspend(() => {
    serviceStarted.value = true
    // runService has logged why it could not start (or printed the bad configuration).
    return runService.pipe(Effect.catchAllCause((cause) => (Cause.isInterruptedOnly(cause) ? Effect.interrupt : Effect.fail(new AlreadyReported({ cause })))))
  })
).pipe(
  Command.withDescription("Run the service: HTTP server and worker (the same as `npm start`)")
)

const enqueue = Command.make(
  "enqueue",
  {
    org: Options.text("org").pipe(Options.withDescription("Organization UUID"), Options.mapEffect(uuid("--org"))),
    type: Options.text("type").pipe(Options.withDescription("Job type, e.g. sepa_export")),
    payload: Options.text("payload").pipe(Options.withDescription("Payload as a JSON object"), Options.mapEffect(jsonObject)),
    runAt: Options.text("run-at").pipe(
      Options.withDescription("Not before this time, ISO 8601 with its zone (2025-04-01T06:00:00Z or …+02:00); default now"),
      Options.mapEffect(zonedTime),
      Options.optional
    ),
    maxAttempts: Options.integer("max-attempts").pipe(
      Options.withDescription("Attempts before the job fails for good (1-100; default WORKER_MAX_ATTEMPTS, 3)"),
      Options.mapEffect((attempts) =>
        attempts >= 1 && attempts <= 100 ? Effect.succeed(attempts) : Effect.fail(invalid(`--max-attempts must be from 1 to 100, got ${attempts}`))
      ),
      Options.optional
    ),
    createdBy: Options.text("created-by").pipe(Options.withDescription("The user UUID who asked for the job"), Options.mapEffect(uuid("--created-by")), Options.optional),
    idempotencyKey: Options.text("idempotency-key").pipe(
      Options.withDescription("A second enqueue with the same key (per organization) returns the first job"),
      Options.optional
    ),
    json: jsonOption
  },
  (input) =>
    withDatabase(
      Effect.gen(function* () {
        const { maxAttempts } = yield* workerConfig
        const jobs = yield* AppJobs.load(yield* handlerModulesConfig)
        const queue = yield* JobQueue.make(jobs.definitions)
        const job = yield* queue.enqueue({
          organizationId: input.org,
          jobType: input.type,
          payload: input.payload,
          maxAttempts: Option.getOrElse(input.maxAttempts, () => maxAttempts),
          ...Option.match(input.runAt, { onNone: () => ({}), onSome: (runAt) => ({ runAt }) }),
          ...Option.match(input.createdBy, { onNone: () => ({}), onSome: (createdBy) => ({ createdBy }) }),
          ...Option.match(input.idempotencyKey, { onNone: () => ({}), onSome: (idempotencyKey) => ({ idempotencyKey }) })
        })
        if (input.json) return yield* printJson(job)
        yield* Console.log(
          job.existing
            ? `job ${job.id} already exists with idempotency key ${job.idempotencyKey} (${job.jobType}, ${job.status}); nothing enqueued`
            : `enqueued job ${job.id} (${job.jobType}, ${job.status}, runs at ${Format.iso(job.runAt)}, trace ${job.traceId})`
        )
      })
    )
).pipe(Command.withDescription("Enqueue a job; the payload is checked against the job type's schema when the application has one"))

const list = Command.make(
  "list",
  {
    status: Options.choice("status", Jobs.JOB_STATUSES).pipe(Options.withDescription("Only jobs in this status"), Options.optional),
    type: Options.text("type").pipe(Options.withDescription("Only jobs of this type"), Options.optional),
    org: Options.text("org").pipe(Options.withDescription("Only jobs of this organization (UUID)"), Options.mapEffect(uuid("--org")), Options.optional),
    limit: Options.integer("limit").pipe(
      Options.withDescription("At most this many, newest first (1-1000)"),
      Options.withDefault(20),
      Options.mapEffect((limit) => (limit >= 1 && limit <= 1000 ? Effect.succeed(limit) : Effect.fail(invalid(`--limit must be from 1 to 1000, got ${limit}`))))
    ),
    json: jsonOption
  },
  (input) =>
    withDatabase(
      Effect.gen(function* () {
        const jobs = yield* Jobs.list({
          status: Option.getOrUndefined(input.status),
          jobType: Option.getOrUndefined(input.type),
          organizationId: Option.getOrUndefined(input.org),
          limit: input.limit
        })
        yield* input.json ? printJson(jobs) : Console.log(Format.jobsTable(jobs))
      })
    )
).pipe(Command.withDescription("List jobs, newest first"))

const show = Command.make("show", { id: jobIdArg, json: jsonOption }, ({ id, json }) =>
  withDatabase(
    Effect.gen(function* () {
      const details = yield* Jobs.get(id)
      yield* json ? printJson(details) : Console.log(Format.jobDetails(details))
    })
  )
).pipe(Command.withDescription("Show a job, its job_runs row and its audit trail in order"))

const printChange = (change: Jobs.StateChange, event: string) =>
  Console.log(`job ${change.id}: ${change.previousStatus} -> ${change.status} (audit: ${event})`)

// A reason is for the audit log, which cannot be edited afterwards: an empty one says nothing.
const reasonText = (reason: string) => (reason.trim() === "" ? Effect.fail(invalid("--reason must not be empty")) : Effect.succeed(reason.trim()))
const optionalReason = Options.text("reason").pipe(Options.withDescription("Why, for the audit log"), Options.mapEffect(reasonText), Options.optional)

const fail = Command.make(
  "fail",
  {
    id: jobIdArg,
    reason: Options.text("reason").pipe(Options.withDescription("Why, for the audit log (required)"), Options.mapEffect(reasonText)),
    actor: actorOption
  },
  ({ actor, id, reason }) =>
    withDatabase(Effect.flatMap(Jobs.fail(id, { actor: actorOf(actor), reason }), (change) => printChange(change, "job_failed_manually")))
).pipe(Command.withDescription("Set a pending or processing job to failed and record the reason in the audit log, in one transaction"))

const retry = Command.make(
  "retry",
  { id: jobIdArg, reason: optionalReason, actor: actorOption },
  ({ actor, id, reason }) =>
    withDatabase(
      Effect.flatMap(Jobs.retry(id, { actor: actorOf(actor), reason: Option.getOrUndefined(reason) }), (change) => printChange(change, "job_requeued"))
    )
).pipe(Command.withDescription("Put a failed job back to pending with fresh attempts"))

const cancel = Command.make(
  "cancel",
  { id: jobIdArg, reason: optionalReason, actor: actorOption },
  ({ actor, id, reason }) =>
    withDatabase(
      Effect.flatMap(Jobs.cancel(id, { actor: actorOf(actor), reason: Option.getOrUndefined(reason) }), (change) => printChange(change, "job_cancelled"))
    )
).pipe(Command.withDescription("Cancel a pending job: it becomes failed with the error \"cancelled by …\" and can be retried later"))

/** A command group run without one of its commands: a usage error (exit 2), as `skiplock` alone is. */
const missingCommand = (group: string) =>
  Effect.zipRight(
    Console.error(`skiplock: missing command; \`skiplock ${group} --help\` lists them`),
    Effect.fail(ValidationError.missingSubcommand(HelpDoc.p("missing command")))
  )

const jobs = Command.make("jobs", {}, () => missingCommand("jobs")).pipe(
  Command.withDescription("Look at and steer single jobs"),
  Command.withSubcommands([list, show, fail, retry, cancel])
)

const stats = Command.make("stats", { json: jsonOption }, ({ json }) =>
  withDatabase(
    Effect.gen(function* () {
      // "Handled": this application has a handler for the type, or a live registered worker handles it (job_workers).
      const app = yield* AppJobs.load(yield* handlerModulesConfig)
      const result = yield* QueueStats.collect(app.handlers.map((handler) => handler.definition.jobType))
      yield* json ? printJson(result) : Console.log(Format.statsReport(result))
    })
  )
).pipe(Command.withDescription("Jobs by type and status, the oldest runnable job, and job types with waiting jobs but no handler"))

// ─── Feature commands plug in here, with the CLI's database ───
const featureCommands = [
  Command.provide(billingCommand, CliDatabase), // skiplock billing rollback <runId> --reason …
  Command.provide(demoCommand, CliDatabase) // skiplock demo seed
] as const

export const skiplock = Command.make("skiplock", {}, () =>
  Effect.zipRight(
    Console.error("skiplock: missing command; `skiplock --help` lists them"),
    Effect.fail(ValidationError.missingSubcommand(HelpDoc.p("missing command")))
  )
).pipe(
  Command.withDescription("skiplock: operate the PostgreSQL job queue"),
  Command.withSubcommands([migrate, start, enqueue, jobs, stats, ...featureCommands])
)
