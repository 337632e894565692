/** A command that could not do its work (exit code 1); the message is printed as is. */
import { Data } from "effect"

export class CliFailure extends Data.TaggedError("CliFailure")<{
  readonly message: string
  readonly cause?: unknown
}> {}

/** A failure that was reported already (the service logs why it could not start): exit code 1, nothing printed again. */
export class AlreadyReported extends Data.TaggedError("AlreadyReported")<{
  readonly cause: unknown
}> {}
