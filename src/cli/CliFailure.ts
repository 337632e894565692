/** A command that could not do its work (exit code 1); the message is printed as is. */
import { Data } from "effect"

export class CliFailure extends Data.TaggedError("CliFailure")<{
  readonly message: string
  readonly cause?: unknown
}> {}
