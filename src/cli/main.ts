/**
 * The CLI's entry point (`npx skiplock …` through bin/skiplock.js, `npm run cli -- …`):
 * exit code 0 done, 1 the command failed, 2 usage (see run.ts).
 */
import { NodeRuntime } from "@effect/platform-node"
import { Effect } from "effect"
import { runCli } from "./run.js"

NodeRuntime.runMain(
  Effect.flatMap(runCli(process.argv), (code) => Effect.sync(() => void (process.exitCode = code))),
  // The service (`skiplock start`) configures its own logger.
  { disableErrorReporting: true, disablePrettyLogger: true }
)
