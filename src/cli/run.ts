/**
 * Runs the CLI on an argv and returns its exit code, without exiting: the
 * entry point (main.ts) sets the process's code, tests call it in-process.
 * Exit codes:
 * 0 done, 1 the command failed (no such job, unknown job type, wrong state,
 * database unreachable …), 2 usage (unknown command or option, a value that
 * cannot be parsed: not a UUID, not JSON, not a number).
 */
import { Command, ValidationError } from "@effect/cli"
import { NodeContext } from "@effect/platform-node"
import { Cause, ConfigError, Console, Effect, Option } from "effect"
import { readFileSync } from "node:fs"
import { StartupError } from "../app/StartupError.js"
import { describeConfigError } from "../config/ServiceConfig.js"
import { sqlErrorCode, sqlErrorText } from "../internal/sqlErrorText.js"
import { AlreadyReported, CliFailure } from "./CliFailure.js"
import { skiplock } from "./commands.js"

const version = (() => {
  try {
    return (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }).version
  } catch {
    return "0.0.0"
  }
})()

// A missing table or function means the database was never migrated.
const MISSING_SCHEMA = new Set(["42P01", "42883"])

/** The one line a failed command prints. */
export const describeFailure = (error: unknown): string => {
  if (ConfigError.isConfigError(error)) return `invalid configuration: ${describeConfigError(error).join("; ")}`
  if (error instanceof CliFailure || error instanceof StartupError) return error.message
  if (typeof error === "object" && error !== null && (error as { _tag?: unknown })._tag === "SqlError") {
    const hint = MISSING_SCHEMA.has(sqlErrorCode(error) ?? "") ? " (is the database migrated? run `npm run migrate`)" : ""
    return `database error: ${sqlErrorText(error)}${hint}`
  }
  if (error instanceof Error) return error.message
  return String(error)
}

const cli = Command.run(skiplock, { name: "skiplock", version })

/** Runs the CLI with these arguments (as process.argv) and returns the exit code. */
export const runCli = (argv: ReadonlyArray<string>) =>
  cli(argv).pipe(
    Effect.as(0),
    Effect.catchAllCause((cause) => {
      if (Cause.isInterruptedOnly(cause)) return Effect.succeed(0)
      const failure = Cause.failureOption(cause)
      // @effect/cli has already printed what is wrong with the command line.
      if (Option.isSome(failure) && ValidationError.isValidationError(failure.value)) return Effect.succeed(2)
      if (Option.isSome(failure) && failure.value instanceof AlreadyReported) return Effect.succeed(1)
      const message = Option.isSome(failure) ? describeFailure(failure.value) : `unexpected error: ${Cause.pretty(cause)}`
      return Effect.as(Console.error(`skiplock: ${message}`), 1)
    }),
    Effect.provide(NodeContext.layer)
  )

