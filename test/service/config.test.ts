// The service's configuration: the defaults README lists, the accepted forms,
// and a message for each bad value that names the variable and what it accepts.
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Duration, Effect, Either, LogLevel, Option, Redacted } from "effect"
import { join } from "node:path"
import { describeConfigError, effectiveDatabaseUrl, serviceConfig, unknownVariables } from "../../src/config/ServiceConfig.js"

const load = (env: Record<string, string>) =>
  serviceConfig.pipe(Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)))), Effect.either)

const errors = (env: Record<string, string>) =>
  Effect.map(load(env), (result) => (Either.isLeft(result) ? describeConfigError(result.left) : []))

describe("service configuration", () => {
  it.effect("defaults: embedded database under .data, port 8080, the runbook's 5 s / 5 jobs, 5 at once, 3 attempts, 30 s to drain", () =>
    Effect.gen(function* () {
      const config = Either.getOrThrow(yield* load({}))
      expect(Option.isNone(config.database.url)).toBe(true)
      expect(config.database.dataDir).toBe(join(process.cwd(), ".data"))
      expect(config.database.embeddedPort).toBe(54329)
      expect(config.database.preparedStatements).toBe(true)
      expect(Duration.toMillis(config.database.answerTimeout)).toBe(30_000)
      expect(Redacted.value(effectiveDatabaseUrl(config.database))).toBe("postgres://postgres:postgres@127.0.0.1:54329/skiplock")
      expect(config.http).toEqual({ host: "0.0.0.0", port: 8080 })
      expect(Duration.toMillis(config.worker.pollInterval)).toBe(5000)
      expect(config.worker.batchSize).toBe(5)
      expect(config.worker.concurrency).toBe(5)
      expect(config.worker.prefetch).toBe(0)
      expect(config.worker.maxAttempts).toBe(3)
      expect(Duration.toMillis(config.worker.shutdownTimeout)).toBe(30_000)
      expect(Option.isNone(config.worker.workerId)).toBe(true)
      expect(config.worker.retention).toEqual(Duration.days(7))
      expect(config.worker.handOff).toBe(true)
      expect(config.log).toEqual({ level: LogLevel.Info, format: "auto" })
      expect(config.handlerModules).toEqual([])
    }))

  it.effect("accepts durations with units, log levels by name, and treats an empty variable as unset", () =>
    Effect.gen(function* () {
      const config = Either.getOrThrow(
        yield* load({
          DATABASE_URL: "postgresql://app:secret@db.internal:5432/billing",
          DATABASE_PREPARED_STATEMENTS: "no",
          DATABASE_ANSWER_TIMEOUT: "10s",
          PORT: "",
          WORKER_POLL_INTERVAL: "500ms",
          WORKER_SHUTDOWN_TIMEOUT: "2 minutes",
          WORKER_BATCH_SIZE: "10",
          WORKER_PREFETCH: "5",
          WORKER_JOB_RETENTION: "Forever",
          WORKER_HAND_OFF: "Off",
          LOG_LEVEL: "WARN",
          LOG_FORMAT: "json",
          SKIPLOCK_HANDLER_MODULES: "./a.ts, ./b.ts"
        })
      )
      expect(Redacted.value(Option.getOrThrow(config.database.url))).toBe("postgresql://app:secret@db.internal:5432/billing")
      expect(config.database.preparedStatements).toBe(false)
      expect(Duration.toMillis(config.database.answerTimeout)).toBe(10_000)
      expect(config.http.port).toBe(8080)
      expect(Duration.toMillis(config.worker.pollInterval)).toBe(500)
      expect(Duration.toMillis(config.worker.shutdownTimeout)).toBe(120_000)
      expect(config.worker.batchSize).toBe(10)
      // Weeks, short and long, for a retention.
      for (const [raw, days] of [["2w", 14], ["1 week", 7], ["3 weeks", 21]] as const) {
        const retention = Either.getOrThrow(yield* load({ WORKER_JOB_RETENTION: raw })).worker.retention
        expect(retention).toEqual(Duration.days(days))
      }
      expect(config.worker.prefetch).toBe(5)
      expect(config.worker.retention).toBe("forever")
      expect(config.worker.handOff).toBe(false)
      expect(config.log).toEqual({ level: LogLevel.Warning, format: "json" })
      expect(config.handlerModules).toEqual(["./a.ts", "./b.ts"])
    }))

  it.effect("names every bad variable, its value and what it accepts", () =>
    Effect.gen(function* () {
      expect(
        yield* errors({
          DATABASE_URL: "mysql://localhost/x",
          DATABASE_PREPARED_STATEMENTS: "maybe",
          DATABASE_ANSWER_TIMEOUT: "0s",
          PORT: "70000",
          WORKER_POLL_INTERVAL: "5",
          WORKER_BATCH_SIZE: "five",
          WORKER_PREFETCH: "-1",
          WORKER_MAX_ATTEMPTS: "101",
          WORKER_SHUTDOWN_TIMEOUT: "soon",
          WORKER_JOB_RETENTION: "30m",
          WORKER_HAND_OFF: "sometimes",
          LOG_LEVEL: "loud",
          LOG_FORMAT: "xml"
        })
      ).toEqual([
        'DATABASE_URL="mysql://localhost/x" is not valid: expected a postgres:// or postgresql:// connection URL, e.g. postgres://user:password@host:5432/database',
        'DATABASE_PREPARED_STATEMENTS="maybe" is not valid: expected one of true, false, yes, no, on, off, 1, 0',
        'DATABASE_ANSWER_TIMEOUT="0s" is not valid: expected a duration from 100ms to 1h with a unit, such as 500ms, 5s, 2m or "5 seconds"',
        'PORT="70000" is not valid: expected a whole number from 0 to 65535',
        'WORKER_POLL_INTERVAL="5" is not valid: expected a duration from 10ms to 24d with a unit, such as 500ms, 5s, 2m or "5 seconds"',
        'WORKER_BATCH_SIZE="five" is not valid: expected a whole number from 1 to 1000',
        'WORKER_PREFETCH="-1" is not valid: expected a whole number from 0 to 1000',
        'WORKER_MAX_ATTEMPTS="101" is not valid: expected a whole number from 1 to 100',
        'WORKER_SHUTDOWN_TIMEOUT="soon" is not valid: expected a duration of at most 24d with a unit, such as 500ms, 5s, 2m or "5 seconds"',
        'WORKER_JOB_RETENTION="30m" is not valid: expected a duration from 1h to 36500d with a unit, such as 12h, 7d, 2w or "7 days", or "forever"',
        'WORKER_HAND_OFF="sometimes" is not valid: expected one of true, false, yes, no, on, off, 1, 0',
        'LOG_LEVEL="loud" is not valid: expected one of trace, debug, info, warning, warn, error, fatal, none, all',
        'LOG_FORMAT="xml" is not valid: expected one of auto, json, pretty, logfmt'
      ])
    }))

  it.effect("refuses durations longer than a timer can wait or a date can be counted back by, which would silently mean never", () =>
    Effect.gen(function* () {
      expect(yield* errors({ WORKER_POLL_INTERVAL: "30d", WORKER_SHUTDOWN_TIMEOUT: "1".repeat(300) + "s", WORKER_JOB_RETENTION: "999999999w" })).toEqual([
        'WORKER_POLL_INTERVAL="30d" is not valid: expected a duration from 10ms to 24d with a unit, such as 500ms, 5s, 2m or "5 seconds"',
        `WORKER_SHUTDOWN_TIMEOUT="${"1".repeat(300)}s" is not valid: expected a duration of at most 24d with a unit, such as 500ms, 5s, 2m or "5 seconds"`,
        'WORKER_JOB_RETENTION="999999999w" is not valid: expected a duration from 1h to 36500d with a unit, such as 12h, 7d, 2w or "7 days", or "forever"'
      ])
    }))

  it.effect("a WORKER_ID is at most 500 characters, as Worker.make's workerId (the key of the worker's row in job_workers)", () =>
    Effect.gen(function* () {
      expect(yield* errors({ WORKER_ID: "w".repeat(501) })).toEqual([`WORKER_ID="${"w".repeat(501)}" is not valid: expected text of at most 500 characters`])
      const config = Either.getOrThrow(yield* load({ WORKER_ID: "w".repeat(500) }))
      expect(config.worker.workerId).toEqual(Option.some("w".repeat(500)))
    }))

  it.effect("accepts a DATABASE_URL for a user on a local socket, which names no host, and a scheme in capitals", () =>
    Effect.gen(function* () {
      for (const url of [
        "postgresql://app@/billing?host=/var/run/postgresql",
        "postgres:///billing?host=/var/run/postgresql&user=app",
        // A URL's scheme is case-insensitive, as `pg` reads it.
        "POSTGRES://app@db.internal:5432/billing",
        "PostgreSQL://app@/billing?host=/var/run/postgresql"
      ]) {
        const config = Either.getOrThrow(yield* load({ DATABASE_URL: url }))
        expect(Redacted.value(Option.getOrThrow(config.database.url))).toBe(url)
      }
    }))

  it.effect("a DATABASE_URL that is not a URL after all is quoted without its password", () =>
    Effect.gen(function* () {
      const [message] = yield* errors({ DATABASE_URL: "postgres://app:TopSecret99@db.internal:notaport/billing?sslpassword=Other1" })
      expect(message).toBe(
        'DATABASE_URL="postgres://app:***@db.internal:notaport/billing?sslpassword=***" is not valid: expected a postgres:// or postgresql:// connection URL, e.g. postgres://user:password@host:5432/database'
      )
      // A generated password with / (and @) in it, not percent-encoded: what most often makes the URL unparsable.
      const [generated] = yield* errors({ DATABASE_URL: "postgres://app:Zk3/9x@Q+w==@db.internal:5432/app" })
      expect(generated).toBe(
        'DATABASE_URL="postgres://app:***@db.internal:5432/app" is not valid: expected a postgres:// or postgresql:// connection URL, e.g. postgres://user:password@host:5432/database'
      )
      // Text that parses as a URL of another kind, with the password in its path (it was quoted whole; a review found it).
      for (const [url, quoted] of [
        ["app:TopSecret99@db.internal:5432/billing", "app:***@db.internal:5432/billing"], // the scheme forgotten
        ["jdbc:postgresql://app:TopSecret99@db.internal:5432/billing", "jdbc:postgresql://app:***@db.internal:5432/billing"], // a Java service's
        ["postgres:/app:TopSecret99@db.internal:5432/billing", "postgres:/app:***@db.internal:5432/billing"] // one slash missing
      ]) {
        const [refused] = yield* errors({ DATABASE_URL: url! })
        expect(refused).toBe(
          `DATABASE_URL="${quoted}" is not valid: expected a postgres:// or postgresql:// connection URL, e.g. postgres://user:password@host:5432/database`
        )
      }
    }))

  it("names the variables that look like skiplock's and are none of its settings (misspelled ones)", () => {
    expect(unknownVariables({ WORKER_CONCURENCY: "50", WORKER_CONCURRENCY: "5", SKIPLOCK_HANDLER_MODULE: "./x.ts", LOG_LEVEL: "info", PATH: "/bin", PGHOST: "db" }))
      .toEqual(["SKIPLOCK_HANDLER_MODULE", "WORKER_CONCURENCY"])
  })
})
