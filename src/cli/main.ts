/**
 * The CLI's entry point (`npx skiplock …` through bin/skiplock.js, `npm run cli -- …`):
 * exit code 0 done, 1 the command failed, 2 usage (see run.ts), 130 interrupted
 * (Ctrl-C, SIGTERM) before the command finished; `skiplock start` stopped by a
 * signal has stopped as it should, and exits 0.
 */
import { NodeRuntime } from "@effect/platform-node"
import { defaultTeardown } from "@effect/platform/Runtime"
import { Cause, Effect, Exit } from "effect"
import { serviceStarted } from "./commands.js"
import { runCli } from "./run.js"

const INTERRUPTED = 130

// `skiplock jobs list | head`: once the reader has gone, the rest of the output has nowhere to go.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(process.exitCode ?? 0)
  throw error
})

NodeRuntime.runMain(
  Effect.flatMap(runCli(process.argv), (code) => Effect.sync(() => void (process.exitCode = code))),
  {
    // The service (`skiplock start`) configures its own logger.
    disableErrorReporting: true,
    disablePrettyLogger: true,
    // A script must not take a command it interrupted for one that was done.
    teardown: (exit, onExit) => {
      if (Exit.isFailure(exit) && Cause.isInterruptedOnly(exit.cause) && !serviceStarted.value) {
        process.stderr.write("skiplock: interrupted before the command finished\n")
        return onExit(INTERRUPTED)
      }
      defaultTeardown(exit, onExit)
    }
  }
)
