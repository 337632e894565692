// Running the CLI in-process on an argv, against a given database, with its
// output captured; and as a real process through bin/skiplock.js for exit codes.
import { Console, ConfigProvider, Effect } from "effect"
import { runCli } from "../../src/cli/run.js"

export interface CliResult {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

const text = (args: ReadonlyArray<unknown>) => args.map((arg) => (typeof arg === "string" ? arg : String(arg))).join(" ")
// @effect/cli prints its help and usage errors with ANSI styles.
const plain = (value: string) => value.replace(/\x1b\[[0-9;]*m/g, "")

/** `skiplock <args>` with DATABASE_URL (and any other variables) set only for this run. */
export const cli = (env: Record<string, string>, ...args: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const out: Array<string> = []
    const err: Array<string> = []
    const base = yield* Effect.console
    const capture: Console.Console = {
      ...base,
      log: (...parts) => Effect.sync(() => void out.push(text(parts))),
      error: (...parts) => Effect.sync(() => void err.push(text(parts))),
      unsafe: { ...base.unsafe, log: (...parts) => void out.push(text(parts)), error: (...parts) => void err.push(text(parts)) }
    }
    const code = yield* runCli(["node", "skiplock", ...args]).pipe(
      Effect.withConsole(capture),
      Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))
    )
    return { code, stdout: plain(out.join("\n")), stderr: plain(err.join("\n")) } satisfies CliResult
  })
