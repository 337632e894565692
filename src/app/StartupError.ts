/** Why the service (or a CLI command) cannot start: one message for a person, no stack trace. */
import { Data } from "effect"

export class StartupError extends Data.TaggedError("StartupError")<{
  readonly message: string
  readonly cause?: unknown
}> {}
